"""Ends every process of a multi-process job fast when one dies, hangs or fails, naming it.

Without this, a dead peer (SIGKILL, OOM-kill, a preempted VM) leaves the others in their next
collective until JAX's coordination service aborts them (SIGABRT, a C++ stack, no name), a
stopped one (SIGSTOP, stuck I/O) the same, and a peer that raises leaves them waiting forever.
`distributed.initialize` starts one `Watchdog` per process of a multi-process run: a daemon
thread that, every `beat_s` seconds, through the coordination service's key-value store
(`albert_jax.coordination`):

  - publishes this process's heartbeat (a counter and the last step it completed);
  - reads every process's heartbeat and notes;
  - ends this process, with one line `job failed: ...` on stderr that names the process at
    fault and the last step all processes completed, when
      * another process wrote a failure note (it raised; its own error line came first):
        exit EXIT_PEER_FAILED;
      * another process's heartbeat has not changed for `peer_timeout_s` (killed, out of
        memory, stopped, its host gone), or the coordination service (process 0) stopped
        answering for as long: every thread's Python stack is dumped, exit EXIT_PEER_FAILED;
      * this process completed no training step for `step_timeout` seconds (a hang in a
        collective, in I/O, anywhere): every thread's Python stack is dumped, exit EXIT_HUNG;
      * another process's watchdog ended it for one of these reasons (its note says which):
        stacks dumped, exit EXIT_PEER_FAILED.

The train loop reports each completed step (`progress`) and pauses the step timeout around
evaluation and the final export (`paused`). `step_timeout` 0 means max(60 s, 10x the median
step time), armed once three steps are timed; a set value is armed after the first step (the
first includes compilation). A process that raises calls `fail` (via `albert_jax.cli`, or the
excepthook `distributed` installs): the note goes to the store, the peers read it, and it
exits without JAX's shutdown barrier, which would wait for peers that are gone.

Process 0 hosts the coordination service, and JAX aborts every other process (SIGABRT) the
moment it is gone; so process 0 exits last: it waits (at most EXIT_WAIT_S) until the others
that still beat have marked themselves gone, and a failing process waits until process 0 has
read its note. Everything ends with `os._exit`: no atexit handler runs and no Orbax save in
flight completes, so the last complete checkpoint is the one a rerun resumes from.
"""

from __future__ import annotations

import collections
import contextlib
import faulthandler
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from albert_jax.errors import EXIT_HUNG, EXIT_PEER_FAILED

PREFIX = "albert_jax/watchdog"
BEAT_S = 1.0  # how often a process publishes its heartbeat and reads the others'
PEER_TIMEOUT_S = 30.0  # a heartbeat unchanged this long: the process is dead or stopped
MIN_STEP_TIMEOUT_S = 60.0  # the automatic step timeout: at least this ...
STEP_TIMEOUT_FACTOR = 10  # ... and this many median steps
TIMED_STEPS = 3  # steps timed before the automatic step timeout is armed
EXIT_WAIT_S = 10.0  # process 0 waits at most this for the others to exit before it does
FAILED = "job failed"  # how every line of this module starts (the launcher reads it)


class Watchdog:
  """One process's watchdog; `start()` runs it in a daemon thread (see the module doc)."""

  def __init__(
    self,
    client: Any,
    process: int,
    count: int,
    *,
    beat_s: float = BEAT_S,
    peer_timeout_s: float = PEER_TIMEOUT_S,
    clock: Callable[[], float] = time.monotonic,
    exit: Callable[[int], Any] = os._exit,
  ):
    self._client, self.process, self.count = client, process, count
    self.beat_s, self.peer_timeout_s = beat_s, peer_timeout_s
    self._clock, self._exit = clock, exit
    self.step_timeout = 0.0  # seconds; 0: automatic (see the module doc)
    self.exit_wait_s = EXIT_WAIT_S
    self._step: int | None = None  # the last step this process completed
    self._last_progress: float | None = None  # when (clock), None before the first step
    self._durations: collections.deque[float] = collections.deque(maxlen=100)
    self._paused = 0
    self._beats = 0
    self._heard: dict[int, tuple[str, float]] = {}  # process -> (its heartbeat, when seen)
    self._steps: dict[int, int | None] = {}  # process -> its last completed step
    self._unreachable_since: float | None = None
    self._started = clock()
    self._stop = threading.Event()
    self._ending = threading.Lock()  # held by the one path (fail or _end) that exits
    self._thread = threading.Thread(target=self._run, name="albert_jax-watchdog", daemon=True)

  # ---- the train loop's side ----------------------------------------------------------------

  def resumed(self, step: int) -> None:
    """Training starts (or resumes) after `step`; the step timeout is not armed yet."""
    self._step = step

  def progress(self, step: int) -> None:
    """This process completed `step` (all its collectives done)."""
    now = self._clock()
    if self._last_progress is not None and not self._paused:
      self._durations.append(now - self._last_progress)
    self._step, self._last_progress = step, now

  @contextlib.contextmanager
  def paused(self) -> Iterator[None]:
    """No step timeout inside (evaluation, the final export); heartbeats go on."""
    self._paused += 1
    try:
      yield
    finally:
      self._paused -= 1
      if self._last_progress is not None:
        self._last_progress = self._clock()

  def done(self) -> None:
    """Training is over: no step timeout from now on (heartbeats go on until the exit)."""
    self._last_progress = None
    self._durations.clear()

  def timeout(self) -> float | None:
    """The step timeout in force now, in seconds; None while not armed."""
    if self.step_timeout > 0:
      return self.step_timeout if self._last_progress is not None else None
    if len(self._durations) < TIMED_STEPS:
      return None
    return max(MIN_STEP_TIMEOUT_S, STEP_TIMEOUT_FACTOR * statistics.median(self._durations))

  # ---- a process that raises ----------------------------------------------------------------

  def fail(self, line: str, code: int) -> None:
    """This process failed with `line` (already printed): tells the others and exits with
    `code` once they have read it (at most `peer_timeout_s` later)."""
    if not self._ending.acquire(blocking=False):
      threading.Event().wait()  # forever: the watchdog thread is ending the process
    sys.stdout.flush()
    sys.stderr.flush()
    line = (line.splitlines() or [""])[0]
    with contextlib.suppress(Exception):  # an error: the service is gone, nobody to tell
      self._set("failed", f"{self._step}\t{line}")
      self._wait_for_the_others(self.peer_timeout_s)
    self._gone(code)

  def _set(self, kind: str, value: str) -> None:
    self._client.key_value_set(f"{PREFIX}/{kind}/{self.process}", value, allow_overwrite=True)

  def _wait_for_the_others(self, seconds: float, skip: tuple[int, ...] = ()) -> None:
    """Waits until the others are gone (process 0, which hosts the coordination service: its
    exit would abort them before they print why) or, elsewhere, until process 0 has read this
    process's note (then every process will); at most `seconds`, skipping `skip`."""
    wanted = {f"{PREFIX}/gone/{p}" for p in self._peers() if p not in skip}
    if self.process:
      wanted = {f"{PREFIX}/ended/0", f"{PREFIX}/gone/0"}
    for _ in range(max(1, int(seconds / 0.25))):
      seen = {k for k, _ in self._client.key_value_dir_get(f"{PREFIX}/")}
      if (wanted <= seen) if not self.process else (wanted & seen):
        return
      time.sleep(0.25)

  def _gone(self, code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(Exception):
      self._set("gone", "")
    try:
      self._exit(code)
    finally:  # (only a test's `exit` returns)
      self._ending.release()

  # ---- the thread ---------------------------------------------------------------------------

  def start(self) -> Watchdog:
    self._thread.start()
    return self

  def stop(self) -> None:
    self._stop.set()

  def _run(self) -> None:
    while not self._stop.wait(self.beat_s):
      self.check()

  def _peers(self) -> list[int]:
    return [p for p in range(self.count) if p != self.process]

  def check(self) -> None:
    """One round: publish, read, and end the process if a peer or this one is at fault."""
    now = self._clock()
    try:
      self._beats += 1
      self._client.key_value_set(
        f"{PREFIX}/beat/{self.process}", f"{self._beats} {self._step}", allow_overwrite=True
      )
      entries = dict(self._client.key_value_dir_get(f"{PREFIX}/"))
      self._unreachable_since = None
    except Exception as e:  # noqa: BLE001  (any RPC error: the service is unreachable)
      self._unreachable_since = self._unreachable_since or now
      if now - self._unreachable_since >= self.peer_timeout_s:
        self._end(
          EXIT_PEER_FAILED,
          f"process 0 (the coordination service) stopped answering for "
          f"{now - self._unreachable_since:.0f} s ({type(e).__name__}: {str(e)[:200]})",
          stacks=True,
        )
      return
    for p in self._peers():
      beat = entries.get(f"{PREFIX}/beat/{p}")
      if beat is not None and beat != self._heard.get(p, ("",))[0]:
        self._heard[p] = (beat, now)
        step = beat.split()[1]
        self._steps[p] = None if step == "None" else int(step)
    for kind in ("failed", "ended"):  # another process raised, or its watchdog ended it
      for p in self._peers():
        note = entries.get(f"{PREFIX}/{kind}/{p}")
        if note is not None:
          step, _, what = note.partition("\t")
          self._steps[p] = None if step == "None" else int(step)
          if kind == "failed":
            self._end(EXIT_PEER_FAILED, f"process {p} failed: {what}", stacks=False)
          else:
            self._end(EXIT_PEER_FAILED, f"{what} (seen by process {p})", stacks=True)
          return
    for p in self._peers():
      silent = now - self._heard.get(p, ("", self._started))[1]
      if silent >= self.peer_timeout_s:
        self._end(
          EXIT_PEER_FAILED,
          f"process {p} stopped responding: no heartbeat for {silent:.0f} s (killed, out of "
          f"memory, stopped, or its host is gone)",
          stacks=True,
        )
        return
    timeout = self.timeout()
    if timeout is not None and not self._paused and now - self._last_progress >= timeout:
      waiting = "; ".join(self._whereabouts(now)) or "every process is alive at this step"
      self._end(
        EXIT_HUNG,
        f"process {self.process} completed no step for {now - self._last_progress:.0f} s "
        f"(step_timeout {timeout:.0f} s) after step {self._step}; {waiting}",
        stacks=True,
      )

  def _whereabouts(self, now: float) -> list[str]:
    """What the others are doing, for a hang: those silent for 3 beats, those at other steps."""
    said = []
    for p in self._peers():
      silent = now - self._heard.get(p, ("", self._started))[1]
      if silent > 3 * self.beat_s:
        said.append(
          f"process {p} sent no heartbeat for {silent:.0f} s (at step {self._steps.get(p)})"
        )
      elif self._steps.get(p) != self._step:
        said.append(f"process {p} is at step {self._steps.get(p)}")
    return said

  def last_common_step(self) -> int | None:
    """The last step every process completed (None: some process completed none)."""
    steps = [self._step, *(self._steps.get(p) for p in self._peers())]
    return None if None in steps else min(steps)

  def _end(self, code: int, what: str, stacks: bool) -> None:
    """Tells the others why (they end too), prints it, and exits with `code`."""
    if not self._ending.acquire(blocking=False):
      return  # the main thread is failing (`fail`): it exits
    with contextlib.suppress(Exception):
      self._set("ended", f"{self._step}\t{what}")
    step = self.last_common_step()
    line = f"{FAILED}: {what}; " + (
      "training had not started."
      if step is None
      else f"the last step all processes completed is {step}."
    )
    print(file=sys.stderr)  # a progress bar may hold the line
    if stacks:
      print(f"Process {self.process}'s Python stacks:", file=sys.stderr, flush=True)
      faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    print(line, file=sys.stderr, flush=True)
    if self.process == 0:  # the others first (see _wait_for_the_others); not the silent ones
      now = self._clock()
      heard = {p: self._heard.get(p, ("", self._started))[1] for p in self._peers()}
      silent = tuple(p for p in self._peers() if now - heard[p] > self.peer_timeout_s / 3)
      with contextlib.suppress(Exception):
        self._wait_for_the_others(self.exit_wait_s, skip=silent)
    self._gone(code)


_running: list[Watchdog] = []  # the process's watchdog, once `start` ran


def start(client: Any, process: int, count: int, **kwargs: Any) -> Watchdog:
  """Starts this process's watchdog (once; `distributed.initialize` calls it)."""
  if not _running:
    _running.append(Watchdog(client, process, count, **kwargs).start())
  return _running[0]


def running() -> Watchdog | None:
  """This process's watchdog; None in a single-process run."""
  return _running[0] if _running else None


def paused() -> contextlib.AbstractContextManager:
  """`Watchdog.paused` of the running watchdog, else nothing."""
  dog = running()
  return dog.paused() if dog is not None else contextlib.nullcontext()


def fail(line: str, code: int) -> None:
  """A failing process's last word (see `Watchdog.fail`); returns at once without a watchdog."""
  dog = running()
  if dog is not None:
    dog.fail(line, code)
