"""A process of a multi-process job that dies, hangs or raises ends the whole job fast, naming it.

The watchdog's decisions on a fake key-value store and clock (no JAX, no waiting), where the
coordination service's client is read, and real two-process fine-tuning runs on localhost:
one process stopped with SIGSTOP (the other dumps its stacks and exits 79 within step_timeout;
SIGCONT afterwards changes nothing), one raising on a malformed record only it reads (both end
within a minute, the error line names the file and line), and the supervised launcher stopping
after repeated failures at one step. SIGKILL of one process, its rerun, and the launcher's
restart are in test_multihost.py, next to the uninterrupted run they are compared with.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from albert_jax import coordination, watchdog
from albert_jax.errors import EXIT_HUNG, EXIT_PEER_FAILED, EXIT_USER_ERROR
from tests.localhost import ROOT, environment, finish, start_processes
from tests.runs import SST2_SAMPLE, TINY_FLAGS, finetune_command

# ---- the watchdog's decisions, on a fake store and a fake clock -------------------------------


class Store:
  """The coordination service's key-value calls the watchdog makes, in a dict."""

  def __init__(self):
    self.kv: dict[str, str] = {}
    self.down = False

  def key_value_set(self, key: str, value: str, allow_overwrite: bool = False) -> None:
    if self.down:
      raise RuntimeError("UNAVAILABLE: failed to connect")
    assert allow_overwrite or key not in self.kv, key
    self.kv[key] = value

  def key_value_dir_get(self, prefix: str) -> list[tuple[str, str]]:
    if self.down:
      raise RuntimeError("UNAVAILABLE: failed to connect")
    return [(k, v) for k, v in self.kv.items() if k.startswith(prefix)]


class Ended(Exception):
  pass


class Clock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self) -> float:
    return self.now


def _dogs(n: int = 2, **kwargs) -> tuple[list[watchdog.Watchdog], Store, Clock]:
  store, clock = Store(), Clock()

  def exit(code: int):
    raise Ended(code)

  dogs = [watchdog.Watchdog(store, p, n, clock=clock, exit=exit, **kwargs) for p in range(n)]
  return dogs, store, clock


def _check(dog: watchdog.Watchdog) -> tuple[int | None, str]:
  """One round of `dog`: (exit code or None, what it printed on stderr)."""
  with tempfile.TemporaryFile("w+") as err, contextlib.redirect_stderr(err):  # a real file:
    code = None  # faulthandler writes to its descriptor
    try:
      dog.check()
    except Ended as e:
      code = e.args[0]
    err.seek(0)
    return code, err.read()


def _beat_all(dogs, clock, seconds: float, skip=()) -> None:
  """Every watchdog but `skip` beats once a second for `seconds`; none may end."""
  for _ in range(int(seconds)):
    clock.now += 1
    for d in dogs:
      if d.process not in skip:
        assert _check(d) == (None, "")


def test_a_peer_that_raised_ends_the_others_naming_it_and_its_error():
  dogs, store, clock = _dogs(3)
  for d in dogs:
    d.progress(4)
  _beat_all(dogs, clock, 2)
  dogs[2].progress(5)
  dogs[2]._exit = lambda code: None  # the failing process's own exit
  dogs[2].peer_timeout_s = 0  # no waiting for the others to read its note
  dogs[2].fail("error: data/train.tsv line 5: 3 fields, but the header has 2\nUsage: ...", 2)
  code, err = _check(dogs[0])
  assert code == EXIT_PEER_FAILED
  assert err == (
    "job failed: process 2 failed: error: data/train.tsv line 5: 3 fields, but the header has 2;"
    " the last step all processes completed is 4.\n"
  )  # no stacks: the failed process said what happened
  assert store.kv[f"{watchdog.PREFIX}/read/0"] == "1"  # it tells the failed one it read it


def test_a_silent_peer_ends_the_others_after_peer_timeout_with_stacks():
  dogs, _, clock = _dogs(2, peer_timeout_s=30)
  for d in dogs:
    d.progress(3)
  _beat_all(dogs, clock, 5)
  dogs[0].progress(4)
  _beat_all(dogs, clock, 30, skip=[1])  # process 1 is gone (its last beat is read at +1 s)
  clock.now += 1
  code, err = _check(dogs[0])
  assert code == EXIT_PEER_FAILED
  assert "Process 0's Python stacks:" in err and "most recent call first" in err
  assert err.endswith(
    "job failed: process 1 stopped responding: no heartbeat for 30 s (killed, out of memory, "
    "stopped, or its host is gone); the last step all processes completed is 3.\n"
  )


def test_a_peer_that_never_beat_counts_from_the_start():
  dogs, _, clock = _dogs(2, peer_timeout_s=30)
  clock.now += 29
  assert _check(dogs[0]) == (None, "")
  clock.now += 1
  code, err = _check(dogs[0])
  assert code == EXIT_PEER_FAILED and err.endswith("completed is none yet.\n")


def test_no_step_within_step_timeout_dumps_stacks_and_exits_79_naming_the_laggard():
  dogs, _, clock = _dogs(2)
  dogs[0].step_timeout = 10  # (process 1's automatic timeout is not armed in this test)
  assert dogs[0].timeout() is None  # not armed before the first step (compilation)
  for d in dogs:
    d.progress(1)
  _beat_all(dogs, clock, 3)
  dogs[0].progress(2)  # process 1 is slow, but beats
  _beat_all(dogs, clock, 6)
  with dogs[0].paused():  # evaluation: no step timeout, however long
    _beat_all(dogs, clock, 30)
  _beat_all(dogs, clock, 9)
  clock.now += 1
  code, err = _check(dogs[0])
  assert code == EXIT_HUNG
  assert "Process 0's Python stacks:" in err
  assert err.endswith(
    "job failed: process 0 completed no step for 10 s (step_timeout 10 s) after step 2; "
    "processes [1] last reported steps 1; the last step all processes completed is 1.\n"
  )
  dogs[1].done()  # training over: no step timeout
  clock.now += 100
  dogs[1].peer_timeout_s = 1e9
  assert _check(dogs[1]) == (None, "")


def test_the_automatic_step_timeout_is_10_median_steps_and_at_least_60_s():
  dog = _dogs(1)[0][0]
  clock = dog._clock

  def step(seconds: float) -> None:
    clock.now += seconds
    dog.progress(0)

  step(300.0)  # the first step compiles: never timed
  step(9.0)
  step(7.0)
  assert dog.timeout() is None  # two steps timed: not armed yet
  step(12.0)
  assert dog.timeout() == 90.0  # 10 x the median of 9, 7, 12
  step(500.0)
  assert dog.timeout() == 105.0  # the median of 9, 7, 12, 500: one slow step barely counts
  for _ in range(5):
    step(0.5)
  assert dog.timeout() == watchdog.MIN_STEP_TIMEOUT_S  # never below 60 s


def test_losing_the_coordination_service_ends_the_process_after_peer_timeout():
  dogs, store, clock = _dogs(2, peer_timeout_s=30)
  _beat_all(dogs, clock, 2)
  store.down = True  # process 0, which hosts it, is gone
  for _ in range(30):
    clock.now += 1
    assert _check(dogs[1]) == (None, "")
  clock.now += 1
  code, err = _check(dogs[1])
  assert code == EXIT_PEER_FAILED
  assert "job failed: process 0 (the coordination service) stopped answering for 30 s" in err


def test_the_coordination_client_is_where_we_read_it():
  """`coordination.client` reads a private JAX attribute (no public accessor exists in JAX
  0.10): this fails first when a JAX release moves it."""
  from jax.experimental import multihost_utils  # noqa: PLC0415

  state = multihost_utils.distributed.global_state
  assert hasattr(state, "client") and state.client is None  # this test process: one process
  assert coordination.client() is None
  for path in pathlib.Path(coordination.__file__).parent.rglob("*.py"):  # no import of it
    assert "from jax._src" not in path.read_text() and "import jax._src" not in path.read_text()
