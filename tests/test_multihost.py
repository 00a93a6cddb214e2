"""Two processes on localhost (4 CPU devices each) fine-tune like one process with 8 devices.

The real entry point, `python -m albert_jax.finetune`, runs twice with the ALBERT_JAX_*
variables that `albert_jax.distributed.initialize` reads: the processes form one JAX system
over an fsdp mesh of all 8 devices (parameters split across processes), each process feeds only
its rows of every batch, and they save each Orbax checkpoint together. The same run in this
(single) process on the 8 devices of conftest.py must end with the same parameters, optimizer
state and eval metrics, and its checkpoint must read back the two-process one. The run batches
by length buckets, and one uninterrupted two-process run serves three tests: the one above, and
the reference for a run one of whose processes is killed mid-way (the other must end within a
minute, naming it), run again; and for the supervised launcher's restart of such a run.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from albert_jax.errors import EXIT_PEER_FAILED
from albert_jax.trainer import finetune
from tests.localhost import ROOT, environment, finish, start_processes, succeed
from tests.runs import TINY_FLAGS, assert_trees_equal, finetune_command, load_config, restore

NUM_PROCESSES, STEPS = 2, 6
# The tiny model on the bundled SST-2 sample: 6 steps of batch 8 in length buckets, a checkpoint
# every 2 steps, eval on 8 sentences.
OVERRIDES = {
  "mesh.shape.data": 1,
  "mesh.shape.fsdp": -1,
  **TINY_FLAGS,
  "max_seq_length": 32,
  "batch_size": 8,
  "num_train_steps": STEPS,
  "warmup_steps": 1,
  "max_train_examples": 32,
  "max_eval_examples": 8,
  "eval_every_steps": 0,
  "checkpoint_every_steps": 2,
  "batching": "bucket",
  "max_buckets": 3,
  "bucket_multiple": 2,  # the sample's sentences have 8 to 14 tokens: several bucket lengths
  "bucket_cost_steps": 0,  # all three in so short a run
}
TOL = 1e-6  # absolute, on every array of the final train state (f32, gloo vs in-process sums)


def _finetune_in_processes(workdir: pathlib.Path) -> list[str]:
  """Runs the CLI as NUM_PROCESSES processes, which must all succeed; their stdouts."""
  return succeed(start_processes(finetune_command(workdir, OVERRIDES), NUM_PROCESSES))


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> tuple[pathlib.Path, list[str]]:
  """The run as NUM_PROCESSES processes, uninterrupted: its workdir and their stdouts."""
  workdir = tmp_path_factory.mktemp("two") / "run"
  return workdir, _finetune_in_processes(workdir)


def test_finetune_two_processes_equals_one(two_processes, tmp_path):
  workdir, stdouts = two_processes
  one = finetune.run(load_config("sst2_sample", OVERRIDES), str(tmp_path / "one"))

  two = json.loads((workdir / "metrics.json").read_text())
  assert two == json.loads((tmp_path / "one" / "metrics.json").read_text()) == one
  # stdout is the result alone: process 0 prints the metrics, the others nothing (gloo's
  # "[Gloo] Rank i is connected" goes to stderr)
  assert json.loads(stdouts[0]) == two and stdouts[1:] == [""] * (NUM_PROCESSES - 1)
  assert two["step"] == STEPS
  state = workdir / "checkpoints" / str(STEPS) / "state"
  assert sorted(p.name for p in state.glob("ocdbt.process_*")) == [
    "ocdbt.process_0",
    "ocdbt.process_1",
  ]  # one checkpoint, written by processes 0 and 1 of one system, each its own shards
  a = restore(state)
  b = restore(tmp_path / "one" / "checkpoints" / str(STEPS) / "state")
  assert jax.tree.structure(a) == jax.tree.structure(b)
  pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  diffs = [float(np.abs(x - y).max()) for x, y in pairs]
  print(f"train state after {STEPS} steps, 2 processes vs 1: max abs diff {max(diffs):.2g}")
  assert max(diffs) <= TOL
  assert int(a["step"]) == STEPS
  buckets = json.loads((workdir / "buckets.json").read_text())["buckets"]
  assert len(buckets) > 1  # the run really batched at several lengths


def test_two_seeds_on_two_processes_equal_one_process(tmp_path):
  """`seeds=2` as two processes: at every evaluation both processes save each replica's best
  state at once (one Orbax manager per replica, whose barriers must not share names), and the
  run ends as the same run in one process on 8 devices."""
  overrides = {**OVERRIDES, "seeds": 2, "eval_every_steps": 2}
  workdir = tmp_path / "two"
  stdouts = succeed(start_processes(finetune_command(workdir, overrides), NUM_PROCESSES))
  one = finetune.run(load_config("sst2_sample", overrides), str(tmp_path / "one"))

  two = json.loads((workdir / "metrics.json").read_text())
  assert json.loads(stdouts[0]) == two == one
  first = two["seeds"][0]["seed"]
  assert [s["seed"] for s in two["seeds"]] == [first, first + 1]
  for k in range(2):
    (best,) = [p for p in (workdir / "best" / f"replica_{k}").iterdir() if p.name.isdigit()]
    assert int(best.name) == two["seeds"][k]["best_step"]
    a = restore(best / "state")
    b = restore(tmp_path / "one" / "best" / f"replica_{k}" / best.name / "state")
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    assert max(float(np.abs(x - y).max()) for x, y in pairs) <= TOL


# ---- kill -9 of one process mid-run, with length buckets: the other ends, the rerun is exact -----

# The CLI with a pause: after its PAUSE_AFTER-th step, process PAUSE_PROCESS marks a file and
# sleeps, so the test kills it at a known point of the run (after the checkpoint of step 4
# started); the other process goes on into step 5's collectives and waits there. With KILL_MARK
# instead, process PAUSE_PROCESS kills itself there, once (when KILL_MARK does not exist yet).
PAUSING_CLI = """
import os, signal, time
from albert_jax.trainer import loop
advance, done = loop.Reporter.advance, []
def advance_then_pause(self, steps=1):
  advance(self, steps)
  done.append(steps)
  if os.environ["ALBERT_JAX_PROCESS_ID"] != os.environ["PAUSE_PROCESS"]:
    return
  if len(done) == int(os.environ["PAUSE_AFTER"]):
    mark = os.environ.get("KILL_MARK")
    if mark and not os.path.exists(mark):
      open(mark, "w").close()
      os.kill(os.getpid(), signal.SIGKILL)
    elif not mark:
      open(os.environ["PAUSED"], "w").close()
      time.sleep(600)
loop.Reporter.advance = advance_then_pause
from albert_jax import cli, finetune
cli.run(finetune.main, finetune.FLAGS)
"""
DETECTION_S = 60  # a dead process's peers end within this (watchdog.PEER_TIMEOUT_S is 30 s)


def _assert_ends_as_uninterrupted(run: pathlib.Path, straight: pathlib.Path) -> None:
  assert json.loads((run / "metrics.json").read_text()) == json.loads(
    (straight / "metrics.json").read_text()
  )
  checkpoint = pathlib.Path("checkpoints", str(STEPS), "state")
  assert_trees_equal(restore(run / checkpoint), restore(straight / checkpoint))  # bit for bit


def test_one_process_killed_ends_the_other_naming_it_and_the_rerun_equals_uninterrupted(
  two_processes, tmp_path
):
  """Process 1 gets SIGKILL mid-run: process 0 exits with EXIT_PEER_FAILED within a minute,
  naming it (not aborted by JAX's coordination service after its heartbeat timeout). The same
  two-process command again resumes from the last checkpoint and its data position, and ends
  with the uninterrupted two-process run's metrics, parameters and optimizer state, bit for
  bit."""
  straight, _ = two_processes
  run, paused = tmp_path / "run", tmp_path / "paused"
  extra = {"PAUSE_PROCESS": "1", "PAUSE_AFTER": "5", "PAUSED": str(paused)}
  command = finetune_command(run, OVERRIDES, program=["-c", PAUSING_CLI])
  procs = start_processes(command, NUM_PROCESSES, extra)
  deadline = time.monotonic() + 300
  while not paused.exists():
    dead = [p for p in procs if p.poll() is not None]
    if dead or time.monotonic() > deadline:
      finish(procs, timeout=1)
      pytest.fail("a process ended, or did not reach step 5")
    time.sleep(0.2)
  os.kill(procs[1].pid, signal.SIGKILL)
  killed = time.monotonic()
  (code, _, err), (dead, _, _) = finish(procs, timeout=DETECTION_S + 30)
  took = time.monotonic() - killed
  print(f"process 0 ended {took:.1f} s after process 1's SIGKILL, exit {code}")
  assert dead == -signal.SIGKILL
  assert code == EXIT_PEER_FAILED, err[-3000:]
  assert took < DETECTION_S
  assert "job failed: process 1 stopped responding" in err
  assert "Process 0's Python stacks:" in err
  assert not (run / "metrics.json").exists()
  saved = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
  assert saved and max(saved) < STEPS  # killed mid-run, after a checkpoint

  _finetune_in_processes(run)  # the same command again
  _assert_ends_as_uninterrupted(run, straight)


# ---- the supervised launcher restarts the job after one process is killed --------------------


def test_supervised_launcher_restarts_a_killed_job_once_and_it_ends_as_uninterrupted(
  two_processes, tmp_path
):
  """`launch/supervise.py --processes 2 --restarts 2`: process 1 kills itself (SIGKILL) after
  step 3 of the first attempt; process 0 ends by itself, the launcher starts both again once,
  and the job ends with the uninterrupted run's metrics and train state, bit for bit."""
  straight, _ = two_processes
  run = tmp_path / "run"
  command = finetune_command(run, OVERRIDES, program=["-c", PAUSING_CLI])
  env = environment(
    {
      "JAX_PLATFORMS": "cpu",
      "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
      "PAUSE_PROCESS": "1",
      "PAUSE_AFTER": "3",
      "KILL_MARK": str(tmp_path / "killed"),
    }
  )
  supervise = [sys.executable, str(ROOT / "launch" / "supervise.py"), "--processes=2"]
  done = subprocess.run(
    [*supervise, "--restarts=2", "--", *command],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert done.returncode == 0, done.stderr[-4000:]
  decisions = [line for line in done.stderr.splitlines() if line.startswith("supervise:")]
  assert len([d for d in decisions if "restarting" in d]) == 1, decisions
  assert "supervise: exit codes process 0: 69, process 1: -9" in decisions, decisions
  assert decisions[-1] == "supervise: attempt 2 succeeded"
  assert json.loads(done.stdout) == json.loads((straight / "metrics.json").read_text())
  _assert_ends_as_uninterrupted(run, straight)
