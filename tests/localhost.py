"""Commands a test starts on localhost: as subprocesses of this checkout, and as the processes
of one multi-process JAX system (the ALBERT_JAX_* variables `albert_jax.distributed` reads)."""

import os
import random
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"


def free_port() -> int:
  """A TCP port free on 127.0.0.1 now, below the kernel's ephemeral range where possible.

  `bind(("127.0.0.1", 0))` hands out a port from the ephemeral range, the range every outgoing
  connection takes its own port from; in the seconds between this call and the coordinator's
  bind, any connection (a peer retrying to reach the coordinator, gloo, a download) may take
  it, and then the coordinator cannot start and its peers wait out JAX's 300 s initialization
  timeout. No connection takes a port below that range unless asked to.
  """
  try:
    with open(EPHEMERAL_RANGE) as f:
      low = int(f.read().split()[0])
  except (OSError, ValueError, IndexError):
    low = 32768  # Linux's default
  rng = random.Random()
  for _ in range(100):
    port = rng.randrange(20000, low) if low > 21000 else 0
    with socket.socket() as s:
      try:
        s.bind(("127.0.0.1", port))
      except OSError:
        continue
      return s.getsockname()[1]
  raise RuntimeError("no free TCP port on 127.0.0.1 after 100 tries")


def environment(extra: dict | None = None) -> dict:
  """This process's environment for a subprocess that imports this checkout, `extra` on top.
  (It also passes on conftest.py's XLA cache.)"""
  path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
  # PYTHONFAULTHANDLER: a process stopped with SIGABRT prints every thread's Python stack
  return {**os.environ, "PYTHONPATH": path, "PYTHONFAULTHANDLER": "1", **(extra or {})}


def start_processes(
  command: list[str], n: int = 2, extra: dict | None = None, cwd: str | None = None
) -> list:
  """`command` as the `n` processes of one JAX system on localhost, 4 CPU devices each, with
  `extra` in their environment, in directory `cwd` (default: the checkout's root); "{process}"
  in `cwd` or a value of `extra` stands for the process's index."""
  port, procs = free_port(), []
  for i in range(n):
    env = environment(
      {
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "ALBERT_JAX_COORDINATOR": f"127.0.0.1:{port}",
        "ALBERT_JAX_NUM_PROCESSES": str(n),
        "ALBERT_JAX_PROCESS_ID": str(i),
        **{k: v.replace("{process}", str(i)) for k, v in (extra or {}).items()},
      }
    )
    procs.append(
      subprocess.Popen(
        command,
        cwd=cwd.replace("{process}", str(i)) if cwd else ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
    )
  return procs


def finish(procs, timeout: float = 300) -> list[tuple[int, str, str]]:
  """Each process's (exit code, stdout, stderr). A process still running after `timeout`
  seconds fails the test with every process's Python stacks (faulthandler, on SIGABRT) and
  the end of its stderr."""
  deadline, results = time.monotonic() + timeout, []
  try:
    for p in procs:
      out, err = p.communicate(timeout=max(deadline - time.monotonic(), 1))
      results.append((p.returncode, out, err))
    return results
  except subprocess.TimeoutExpired:
    for p in procs:
      if p.poll() is None:
        p.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: dump every thread's stack
    ends = [(r, e) for r, _, e in results]
    for p in procs[len(results) :]:
      err = p.communicate(timeout=60)[1]
      ends.append((p.returncode, err))
    pytest.fail(
      f"still running after {timeout} s:\n"
      + "\n".join(f"--- process {i}, exit {r}:\n{e[-6000:]}" for i, (r, e) in enumerate(ends))
    )
  finally:
    for p in procs:  # a process left waiting for a dead peer
      if p.poll() is None:
        p.kill()


def finish_timed(procs, timeout: float = 300) -> list[tuple[int, str, str, float]]:
  """Each process's (exit code, stdout, stderr, time.monotonic() when it ended), reading their
  pipes as they go; a process still running after `timeout` fails the test as in `finish`."""
  done: dict[int, tuple[int, str, str, float]] = {}

  def wait(i: int, p) -> None:
    out, err = p.communicate()
    done[i] = (p.returncode, out, err, time.monotonic())

  threads = [threading.Thread(target=wait, args=(i, p), daemon=True) for i, p in enumerate(procs)]
  deadline = time.monotonic() + timeout
  for t in threads:
    t.start()
  for t in threads:
    t.join(max(deadline - time.monotonic(), 0))
  if len(done) < len(procs):
    for p in procs:
      if p.poll() is None:
        p.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: dump every thread's stack
    for t in threads:
      t.join(60)
    for p in procs:
      if p.poll() is None:
        p.kill()
    pytest.fail(
      f"still running after {timeout} s:\n"
      + "\n".join(f"--- process {i}, exit {r[0]}:\n{r[2][-6000:]}" for i, r in sorted(done.items()))
    )
  return [done[i] for i in range(len(procs))]


def succeed(procs, timeout: float = 300) -> list[str]:
  """`finish`, where every process must exit 0; their stdouts."""
  results = finish(procs, timeout)
  for i, (code, _, err) in enumerate(results):
    assert code == 0, f"process {i}, exit {code}:\n{err[-4000:]}"
  return [out for _, out, _ in results]
