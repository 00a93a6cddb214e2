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
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from albert_jax import coordination, watchdog
from albert_jax.data import tasks
from albert_jax.errors import EXIT_HUNG, EXIT_PEER_FAILED, EXIT_USER_ERROR
from tests.localhost import ROOT, environment, finish, finish_timed, start_processes
from tests.runs import TINY_FLAGS, finetune_command

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
  for d in dogs:
    d.exit_wait_s = 0.25  # the real clock: how long process 0 waits for the others to exit
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
  dogs[2].peer_timeout_s = 0.25  # (real seconds) the wait for process 0 to read its note
  with pytest.raises(Ended, match=str(EXIT_USER_ERROR)):
    dogs[2].fail("error: data/train.tsv line 5: 3 fields, but the header has 2\nUsage: ...", 2)
  assert f"{watchdog.PREFIX}/gone/2" in store.kv
  for d in dogs[:2]:
    code, err = _check(d)
    assert code == EXIT_PEER_FAILED
    assert err == (
      "\njob failed: process 2 failed: error: data/train.tsv line 5: 3 fields, but the header has"
      " 2; the last step all processes completed is 4.\n"
    )  # no stacks: the failed process said what happened


def test_process_0_exits_after_the_others_and_they_after_it_read_their_note():
  """Process 0 hosts the coordination service: when it exits, JAX aborts the others (SIGABRT,
  no line of theirs). So it waits for the others' exit, and a failing process waits until
  process 0 has read its note."""
  dogs, store, clock = _dogs(2)
  _beat_all(dogs, clock, 2)
  store.kv[f"{watchdog.PREFIX}/failed/1"] = "None\terror: bad"
  started = time.monotonic()
  assert _check(dogs[0])[0] == EXIT_PEER_FAILED
  assert time.monotonic() - started >= dogs[0].exit_wait_s  # process 1 is alive: waited
  assert f"{watchdog.PREFIX}/ended/0" in store.kv
  started = time.monotonic()
  store.kv[f"{watchdog.PREFIX}/gone/1"] = ""
  assert _check(dogs[0])[0] == EXIT_PEER_FAILED
  assert time.monotonic() - started < dogs[0].exit_wait_s  # process 1 is gone: no wait
  dogs[1].peer_timeout_s = 60.0
  started = time.monotonic()
  with pytest.raises(Ended):
    dogs[1].fail("error: bad", 2)  # process 0 read it (ended/0 is there): no wait
  assert time.monotonic() - started < 1


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
  assert code == EXIT_PEER_FAILED and err.endswith("; training had not started.\n")


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
    "process 1 is at step 1; the last step all processes completed is 1.\n"
  )
  code, err = _check(dogs[1])  # the others end too, with process 0's reason and their stacks
  assert code == EXIT_PEER_FAILED and "Process 1's Python stacks:" in err
  assert "(step_timeout 10 s) after step 2; process 1 is at step 1 (seen by process 0)" in err


def test_no_step_timeout_once_training_is_done():
  dogs, _, clock = _dogs(1)
  dogs[0].step_timeout = 10
  dogs[0].progress(1)
  clock.now += 10
  dogs[0].done()
  assert dogs[0].timeout() is None and _check(dogs[0]) == (None, "")


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


# ---- two real processes on localhost --------------------------------------------------------

# The tiny model on the bundled SST-2 sample, one batch shape (no recompilation mid-run), a
# checkpoint every 2 steps, and more steps than a test waits for.
OVERRIDES = {
  "mesh.shape.data": 1,
  "mesh.shape.fsdp": -1,
  **TINY_FLAGS,
  "max_seq_length": 32,
  "batch_size": 8,
  "num_train_steps": 400,
  "warmup_steps": 1,
  "max_train_examples": 32,
  "max_eval_examples": 8,
  "eval_every_steps": 0,
  "checkpoint_every_steps": 2,
  "batching": "max_length",
}
STEP_TIMEOUT = 20  # s; a step of this run takes well under a second on an idle machine
EXIT_S = 5  # from the watchdog's decision (once a second) to the process's end
DETECTION_S = 60  # the peers of a process that raised end within this


def _saved(workdir: pathlib.Path) -> dict[str, str]:
  """The complete checkpoints of a run: step -> its checksums.json."""
  return {
    p.parent.name: p.read_text() for p in sorted((workdir / "checkpoints").glob("*/checksums.json"))
  }


def test_a_stopped_process_ends_the_job_within_step_timeout_and_sigcont_changes_nothing(
  tmp_path,
):
  run = tmp_path / "run"
  overrides = {**OVERRIDES, "step_timeout": STEP_TIMEOUT}
  procs = start_processes(finetune_command(run, overrides), 2)
  try:
    deadline = time.monotonic() + 300
    while "2" not in _saved(run):  # the first checkpoint is complete
      if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
        finish(procs, timeout=1)
        pytest.fail("a process ended, or no checkpoint in 300 s")
      time.sleep(0.2)
    os.kill(procs[1].pid, signal.SIGSTOP)
    stopped = time.monotonic()
    ((code, _, err, ended),) = finish_timed(procs[:1], timeout=STEP_TIMEOUT + 60)
  finally:
    os.kill(procs[1].pid, signal.SIGCONT)
  took = ended - stopped
  print(f"process 0 ended {took:.1f} s after process 1's SIGSTOP, exit {code}")
  assert code == EXIT_HUNG, err[-3000:]
  assert took < STEP_TIMEOUT + EXIT_S
  assert "Process 0's Python stacks:" in err and "(most recent call first)" in err
  failed = [line for line in err.splitlines() if line.startswith("job failed:")]
  assert len(failed) == 1 and "; process 1 sent no heartbeat for " in failed[0], failed
  assert f"(step_timeout {STEP_TIMEOUT} s)" in failed[0]
  before = _saved(run)
  assert before and "400" not in before

  ((code1, _, err1, _),) = finish_timed(procs[1:], timeout=120)  # SIGCONT: the job is over
  print(f"process 1 after SIGCONT: exit {code1}")
  assert code1 != 0, err1[-3000:]
  assert _saved(run) == before and not (run / "metrics.json").exists()


def test_a_process_raising_on_a_malformed_record_ends_both_naming_the_file_and_line(tmp_path):
  """Each process reads train.tsv in its own directory (as each host its local copy); line 5
  of process 1's copy has a field too many. Process 1 prints its error and exits 2; process 0
  exits EXIT_PEER_FAILED with the same error, naming process 1, well within a minute."""
  _local_copies(tmp_path)
  overrides = {**OVERRIDES, "train_file": "train.tsv"}
  procs = start_processes(
    finetune_command(tmp_path / "run", overrides), 2, cwd=str(tmp_path / "{process}")
  )
  (code0, _, err0, end0), (code1, _, err1, end1) = finish_timed(procs, timeout=300)
  error = [line for line in err1.splitlines() if line.startswith("error:")]
  assert code1 == EXIT_USER_ERROR and len(error) == 1, err1[-3000:]
  assert "train.tsv line 5: 3 fields, but the header has 2" in error[0]
  assert code0 == EXIT_PEER_FAILED, err0[-3000:]
  assert f"job failed: process 1 failed: {error[0]}; training had not started." in err0
  assert "Python stacks" not in err0  # the failed process said what happened
  print(f"process 0 ended {end0 - end1:+.1f} s after process 1")
  assert end0 - end1 < DETECTION_S


def _local_copies(tmp_path: pathlib.Path) -> None:
  """tmp_path/0/train.tsv: the SST-2 sample's; tmp_path/1/train.tsv: the same with a field too
  many on line 5."""
  lines = pathlib.Path(tasks.sample_files("sst2")["train"]).read_text().splitlines(True)
  for i in (0, 1):
    (tmp_path / str(i)).mkdir()
    bad = [*lines[:4], lines[4].replace("\t", "\textra\t", 1), *lines[5:]] if i else lines
    (tmp_path / str(i) / "train.tsv").write_text("".join(bad))


def test_supervised_launcher_stops_after_3_failures_at_the_same_step(tmp_path):
  """Process 1 fails at the same point on every attempt (its copy of the data is malformed):
  with --restarts 2 the launcher starts the job 3 times, then stops with a line saying why and
  the failure's exit code."""
  _local_copies(tmp_path)
  program = (  # the CLI in directory argv[1], "{p}" there standing for the process's index
    "import os, runpy, sys; "
    "os.chdir(sys.argv.pop(1).replace('{p}', os.environ['ALBERT_JAX_PROCESS_ID'])); "
    "runpy.run_module('albert_jax.finetune', run_name='__main__')"
  )
  overrides = {**OVERRIDES, "train_file": "train.tsv"}
  command = finetune_command(
    tmp_path / "run", overrides, program=["-c", program, str(tmp_path / "{p}")]
  )
  env = environment(
    {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  )
  supervise = [sys.executable, str(ROOT / "launch" / "supervise.py"), "--processes=2"]
  done = subprocess.run(
    [*supervise, "--restarts=2", "--", *command],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  decisions = [line for line in done.stderr.splitlines() if line.startswith("supervise:")]
  assert done.returncode in (EXIT_USER_ERROR, EXIT_PEER_FAILED), done.stderr[-3000:]
  assert len([d for d in decisions if "restarting (" in d]) == 2, decisions
  assert decisions[-1] == (
    "supervise: 3 consecutive failures at the start of training (--restarts 2); not "
    "restarting. Fix the cause the errors above name, then rerun to resume."
  ), decisions
  attempts = done.stderr.split("supervise: attempt ")  # the job's log, one part per attempt
  assert len(attempts) == 3
  for log in attempts:  # the failed process's error line is the first word of the failure
    assert log.index("error: train.tsv line 5: 3 fields") < log.index("job failed: process 1")


def test_supervised_launcher_counts_failures_at_the_same_step_only(tmp_path):
  """A job that progresses between failures is restarted past --restarts; the streak at one
  step stops it. (The command stands in for a job: it prints the watchdog's line.)"""
  steps = [2, 4, 4, 4, 4]
  job = (
    "import pathlib, sys; f = pathlib.Path(sys.argv[1]); n = len(f.read_text()) if f.exists() "
    "else 0; f.write_text('x' * (n + 1)); "
    f"print('job failed: process 1 stopped responding; the last step all processes completed "
    f"is %d.' % {steps}[n], file=sys.stderr); sys.exit(69)"
  )
  supervise = [sys.executable, str(ROOT / "launch" / "supervise.py"), "--restarts=2", "--"]
  done = subprocess.run(
    [*supervise, sys.executable, "-c", job, str(tmp_path / "attempts")],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert done.returncode == EXIT_PEER_FAILED
  decisions = [line for line in done.stderr.splitlines() if line.startswith("supervise:")]
  assert decisions == [
    "supervise: attempt 1 failed (exit 69) at step 2; restarting (1 of 2 restarts from this step)",
    "supervise: attempt 2 failed (exit 69) at step 4; restarting (1 of 2 restarts from this step)",
    "supervise: attempt 3 failed (exit 69) at step 4; restarting (2 of 2 restarts from this step)",
    "supervise: 3 consecutive failures at step 4 (--restarts 2); not restarting. Fix the cause "
    "the errors above name, then rerun to resume.",
  ]
