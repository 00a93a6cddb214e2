"""Two processes on localhost (4 CPU devices each) fine-tune like one process with 8 devices.

The real entry point, `python -m albert_jax.finetune`, runs twice with the ALBERT_JAX_*
variables that `albert_jax.distributed.initialize` reads: the processes form one JAX system
over an fsdp mesh of all 8 devices (parameters split across processes), each process feeds only
its rows of every batch, and they save each Orbax checkpoint together. The same run in this
(single) process on the 8 devices of conftest.py must end with the same parameters, optimizer
state and eval metrics, and its checkpoint must read back the two-process one. The run batches
by length buckets, and one uninterrupted two-process run serves both tests: the one above, and
the reference for the run killed mid-way and run again.
"""

import json
import os
import pathlib
import signal
import time

import jax
import numpy as np
import pytest

from albert_jax.trainer import finetune
from tests.localhost import start_processes, succeed
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


# ---- kill -9 of both processes mid-run, with length buckets: the rerun ends bit for bit --------

# The CLI with a pause: after its PAUSE_AFTER-th step a process marks a file and sleeps, so the
# test kills both processes at a known point of the run (after the checkpoint of step 4 started).
PAUSING_CLI = """
import os, time
from albert_jax.trainer import loop
advance, done = loop.Reporter.advance, []
def advance_then_pause(self, steps=1):
  advance(self, steps)
  done.append(steps)
  if len(done) == int(os.environ["PAUSE_AFTER"]):
    open(os.environ["PAUSED"], "w").close()
    time.sleep(600)
loop.Reporter.advance = advance_then_pause
from albert_jax import cli, finetune
cli.run(finetune.main, finetune.FLAGS)
"""


def test_bucketed_two_process_run_killed_and_rerun_equals_uninterrupted(two_processes, tmp_path):
  """Both processes get SIGKILL mid-run; the same two-process command again resumes from the
  last checkpoint and its data position, and ends with the uninterrupted two-process run's
  metrics, parameters and optimizer state, bit for bit."""
  straight, _ = two_processes
  run = tmp_path / "run"
  marks = [tmp_path / f"paused.{i}" for i in range(NUM_PROCESSES)]
  extra = {"PAUSE_AFTER": "5", "PAUSED": str(tmp_path / "paused.{process}")}
  command = finetune_command(run, OVERRIDES, program=["-c", PAUSING_CLI])
  procs = start_processes(command, NUM_PROCESSES, extra)
  try:
    deadline = time.monotonic() + 300
    while not all(m.exists() for m in marks):
      dead = [p for p in procs if p.poll() is not None]
      assert not dead, dead[0].communicate()[1][-4000:]
      assert time.monotonic() < deadline, "the processes did not reach step 5"
      time.sleep(0.2)
    for p in procs:
      os.kill(p.pid, signal.SIGKILL)
    for p in procs:
      p.wait(timeout=60)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert [p.returncode for p in procs] == [-signal.SIGKILL] * NUM_PROCESSES
  assert not (run / "metrics.json").exists()
  saved = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
  assert saved and max(saved) < STEPS  # killed mid-run, after a checkpoint

  _finetune_in_processes(run)  # the same command again
  assert json.loads((run / "metrics.json").read_text()) == json.loads(
    (straight / "metrics.json").read_text()
  )
  checkpoint = pathlib.Path("checkpoints", str(STEPS), "state")
  assert_trees_equal(restore(run / checkpoint), restore(straight / checkpoint))  # bit for bit
