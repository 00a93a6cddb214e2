"""Stop a training run cleanly on SIGTERM (preemption) or Ctrl-C: finish the step, save, exit.

A TPU VM or a batch scheduler preempts a job with SIGTERM; a user stops one with Ctrl-C. Both
should cost no work: the run finishes the step in flight, writes a checkpoint at that step and
exits with `EXIT_PREEMPTED` (75, EX_TEMPFAIL: "try again"), so a scheduler that sees it knows
the rerun of the same command resumes. A second Ctrl-C quits at once (KeyboardInterrupt).

    with preemption.StopRequests() as stop:
      while step < total:
        ... one step ...
        if stop.agreed():          # every process answers the same, at the same step
          save(step); raise preemption.Preempted(step)

Multi-process runs: the signal may reach one process only (or all at different moments), but
all must save at the same step. `agreed()` gathers every process's flag so that all see the
same answer at the same step; one process is enough to stop all. The flags go through the
coordination service's key-value store, not an XLA collective: Orbax's background saves run
collectives of their own, and collectives issued by two threads in different orders on
different processes deadlock. A peer that dies while the others wait here is caught by
`albert_jax.watchdog` (the wait itself is long: a slow step is not a failure).
"""

from __future__ import annotations

import itertools
import signal
import threading
from types import FrameType

import numpy as np

from albert_jax import coordination
from albert_jax.errors import EXIT_PREEMPTED

_KEY = "albert_jax/stop_requested"
_TIMEOUT_MS = 30 * 60 * 1000  # how long a process waits for the others to reach the same step
_calls = itertools.count()  # agreed() calls in this process; every process counts alike


class Preempted(Exception):
  """Raised after the checkpoint at `step` is written; the CLI exits with EXIT_PREEMPTED."""

  exit_code = EXIT_PREEMPTED

  def __init__(self, step: int, signal_name: str):
    super().__init__(
      f"Stopped by {signal_name} after step {step}; a checkpoint at step {step} was written. "
      "Rerun the same command to resume from it."
    )
    self.step = step
    self.signal_name = signal_name


class StopRequests:
  """Catches SIGTERM and SIGINT while active (main thread only; elsewhere it is inert)."""

  def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)):
    self._signals = signals
    self._previous: dict[int, object] = {}
    self.received: str | None = None  # the name of the first signal received

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    del frame
    if self.received is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # the second Ctrl-C: quit now
    self.received = self.received or signal.Signals(signum).name

  def __enter__(self) -> StopRequests:
    if threading.current_thread() is threading.main_thread():
      for s in self._signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous.clear()

  def requested(self) -> bool:
    """This process received a stop signal."""
    return self.received is not None

  def agreed(self) -> bool:
    """True on every process iff any process received a stop signal; call it at the same
    steps on every process (it all-gathers one flag when there are several processes)."""
    import jax  # noqa: PLC0415

    if jax.process_count() == 1:
      return self.requested()
    flags = _all_flags(int(self.requested()), next(_calls))
    if np.any(flags) and self.received is None:
      self.received = "a stop signal on another process"
    return bool(np.any(flags))


def _all_flags(flag: int, call: int) -> list[int]:
  """Every process's `flag` at its `call`-th agreement, through the key-value store."""
  import jax  # noqa: PLC0415

  client, me = coordination.client(), jax.process_index()
  client.key_value_set(f"{_KEY}/{call}/{me}", str(flag))
  flags = [
    int(client.blocking_key_value_get(f"{_KEY}/{call}/{p}", _TIMEOUT_MS))
    for p in range(jax.process_count())
  ]
  if call >= 2:  # every process has read call-2's flags once all have written call-1's
    client.key_value_delete(f"{_KEY}/{call - 2}/{me}")
  return flags
