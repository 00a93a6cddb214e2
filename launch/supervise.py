"""Runs a training command until it succeeds, restarting it from its last checkpoint.

    python launch/supervise.py [--processes P] [--restarts N] [--grace S] -- COMMAND [ARGS...]

Each attempt runs COMMAND once, or, with --processes P, as the P processes of one JAX system
on this machine (ALBERT_JAX_COORDINATOR=127.0.0.1:<free port>, ALBERT_JAX_NUM_PROCESSES,
ALBERT_JAX_PROCESS_ID; one process per GPU of a node, or the tests' CPU processes). The
launchers in launch/ wrap their multi-host command (srun, gcloud ... ssh --worker=all) in it.

When a process exits non-zero, the others end by themselves within a minute
(`albert_jax.watchdog`); any still running after --grace seconds are killed. Then the attempt
is over and, unless it was stopped by a signal sent to this supervisor, the command starts
again: the trainers resume from the last complete checkpoint. The step a failure happened at
is read from the `job failed: ... the last step all processes completed is N.` line the
processes print; after N+1 consecutive failures at the same step (N = --restarts: the
restarts allowed from one step), the supervisor stops with a line saying so, exit code the
last failure's. A job that keeps progressing is restarted as often as it fails.
SIGTERM is passed on to the processes (they save and exit 75) and Ctrl-C reaches them from the
terminal; either way the supervisor does not restart them. Output passes through unchanged
(stdout stays the results); each decision is one line on stderr starting with "supervise:".
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

# what `albert_jax.watchdog` prints when it ends a process
STEP_LINE = re.compile(
  r"job failed: .*; (?:the last step all processes completed is (\d+)|training had not started)\."
)


def say(line: str) -> None:
  print(f"supervise: {line}", file=sys.stderr, flush=True)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Attempt:
  """One run of the command: its processes, their output passed through and scanned."""

  def __init__(self, command: list[str], processes: int | None):
    self.steps: list[str] = []  # the last common steps the failure lines named
    self.procs: list[subprocess.Popen] = []
    self._pumps: list[threading.Thread] = []
    port = free_port()
    for i in range(processes or 1):
      env = dict(os.environ)
      if processes:
        env.update(
          ALBERT_JAX_COORDINATOR=f"127.0.0.1:{port}",
          ALBERT_JAX_NUM_PROCESSES=str(processes),
          ALBERT_JAX_PROCESS_ID=str(i),
        )
      p = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
      self.procs.append(p)
      for src, dst in ((p.stdout, sys.stdout), (p.stderr, sys.stderr)):
        pump = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
        pump.start()
        self._pumps.append(pump)

  def _pump(self, src, dst) -> None:
    for raw in iter(src.readline, b""):
      line = raw.decode(errors="replace")
      dst.write(line)
      dst.flush()
      found = STEP_LINE.search(line)
      if found:
        self.steps.append(found[1] or "")

  def wait(self, grace: float) -> int:
    """Waits for the end of every process (killing those left `grace` s after a failure);
    the attempt's exit code: 0, or the first non-zero one."""
    first_failure: float | None = None
    while any(p.poll() is None for p in self.procs):
      failed = [p for p in self.procs if p.returncode not in (None, 0)]
      if failed and first_failure is None:
        first_failure = time.monotonic()
      if first_failure is not None and time.monotonic() - first_failure > grace:
        for i, p in enumerate(self.procs):
          if p.poll() is None:
            say(f"process {i} still running {grace:.0f} s after a failure: killing it")
            p.kill()
      time.sleep(0.2)
    for pump in self._pumps:
      pump.join(timeout=10)
    codes = [p.returncode for p in self.procs]
    if len(codes) > 1:
      say("exit codes " + ", ".join(f"process {i}: {c}" for i, c in enumerate(codes)))
    return next((c for c in codes if c != 0), 0)

  def signal(self, signum: int) -> None:
    for p in self.procs:
      if p.poll() is None:
        p.send_signal(signum)

  def step(self) -> str:
    """The last step all processes completed, as the failure lines say ("unknown" if none
    said it, e.g. all were killed at once)."""
    numbers = [int(s) for s in self.steps if s]
    if numbers:
      return f"step {max(numbers)}"
    return "the start of training" if self.steps else "an unknown step"


def supervise(command: list[str], processes: int | None, restarts: int, grace: float) -> int:
  stopped: list[int] = []  # a signal sent to the supervisor: the job ends, no restart
  current: list[Attempt] = []

  def forward(signum, frame):
    del frame
    stopped.append(signum)
    if signum == signal.SIGTERM:  # (Ctrl-C reaches the processes from the terminal; a
      for attempt in current:  # second SIGINT would make them quit without saving)
        attempt.signal(signum)

  for s in (signal.SIGTERM, signal.SIGINT):
    signal.signal(s, forward)
  last_step, streak, number = None, 0, 0
  while True:
    number += 1
    attempt = Attempt(command, processes)
    current[:] = [attempt]
    code = attempt.wait(grace)
    if code == 0:
      if number > 1:
        say(f"attempt {number} succeeded")
      return 0
    if stopped:
      say(f"stopped by {signal.Signals(stopped[0]).name}; exit {code}, not restarting")
      return code
    step = attempt.step()
    streak = streak + 1 if step == last_step else 1
    last_step = step
    if streak > restarts:
      say(
        f"{streak} consecutive failures at {step} (--restarts {restarts}); not "
        f"restarting. Fix the cause the errors above name, then rerun to resume."
      )
      return code
    say(
      f"attempt {number} failed (exit {code}) at {step}; restarting ({streak} of "
      f"{restarts} restarts from this step)"
    )


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(
    prog="python launch/supervise.py", description=__doc__.split("\n\n")[0]
  )
  parser.add_argument(
    "--processes", type=int, default=None, help="local processes (default: run COMMAND once)"
  )
  parser.add_argument(
    "--restarts", type=int, default=0, help="restarts allowed from one step (default 0)"
  )
  parser.add_argument(
    "--grace", type=float, default=90.0, help="seconds before killing the rest after a failure"
  )
  parser.add_argument("command", nargs=argparse.REMAINDER)
  args = parser.parse_args(argv)
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command or args.restarts < 0 or (args.processes is not None and args.processes < 1):
    parser.error("needs a COMMAND after --, --restarts >= 0 and --processes >= 1")
  return supervise(command, args.processes, args.restarts, args.grace)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
