"""Two processes on localhost (4 CPU devices each) fine-tune like one process with 8 devices.

The real entry point, `python -m albert_jax.finetune`, runs twice with the ALBERT_JAX_*
variables that `albert_jax.distributed.initialize` reads: the processes form one JAX system
over an fsdp mesh of all 8 devices (parameters split across processes), each process feeds only
its rows of every batch, and they save each Orbax checkpoint together. The same run in this
(single) process on the 8 devices of conftest.py must end with the same parameters, optimizer
state and eval metrics, and its checkpoint must read back the two-process one.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from albert_jax.trainer import finetune
from tests.localhost import free_port

ROOT = pathlib.Path(__file__).resolve().parent.parent
NUM_PROCESSES, STEPS = 2, 3
# A tiny model on the bundled SST-2 sample: 3 steps of batch 8, eval on 8 sentences.
OVERRIDES = {
  "mesh.shape.data": 1,
  "mesh.shape.fsdp": -1,
  "model_overrides.hidden_size": 32,
  "model_overrides.num_hidden_layers": 1,
  "model_overrides.intermediate_size": 64,
  "model_overrides.embedding_size": 16,
  "max_seq_length": 32,
  "batch_size": 8,
  "num_train_steps": STEPS,
  "warmup_steps": 1,
  "max_train_examples": 32,
  "max_eval_examples": 8,
  "eval_every_steps": 0,
  "checkpoint_every_steps": STEPS,
}
TOL = 1e-6  # absolute, on every array of the final train state (f32, gloo vs in-process sums)


def _config():
  spec = importlib.util.spec_from_file_location(
    "sst2_sample", ROOT / "configs" / "finetune" / "sst2_sample.py"
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.update_from_flattened_dict(OVERRIDES)
  return config


def _start(workdir: pathlib.Path, overrides: dict, program: list[str], extra: dict) -> list:
  """The finetune CLI (`program` runs it) as NUM_PROCESSES processes of one JAX system."""
  port = free_port()
  flags = [f"--config.{k}={v}" for k, v in overrides.items()]
  command = [
    sys.executable,
    *program,
    f"--workdir={workdir}",
    f"--config={ROOT / 'configs' / 'finetune' / 'sst2_sample.py'}",
    *flags,
  ]
  procs = []
  for i in range(NUM_PROCESSES):
    env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      XLA_FLAGS="--xla_force_host_platform_device_count=4",
      ALBERT_JAX_COORDINATOR=f"127.0.0.1:{port}",
      ALBERT_JAX_NUM_PROCESSES=str(NUM_PROCESSES),
      ALBERT_JAX_PROCESS_ID=str(i),
      PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
      **{k: v.format(process=i) for k, v in extra.items()},
    )
    procs.append(
      subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
      )
    )
  return procs


def _finetune_in_processes(
  workdir: pathlib.Path, overrides: dict = OVERRIDES, program=("-m", "albert_jax.finetune"), **extra
) -> list[str]:
  """Runs the CLI as NUM_PROCESSES processes, which must all succeed; their stdouts."""
  procs = _start(workdir, overrides, list(program), extra)
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=300))
  finally:
    for p in procs:  # a process left waiting for a dead peer
      if p.poll() is None:
        p.kill()
  for i, (p, (_, err)) in enumerate(zip(procs, outputs, strict=True)):
    assert p.returncode == 0, f"process {i}:\n{err[-4000:]}"
  return [out for out, _ in outputs]


def _restore(path: pathlib.Path):
  """The arrays of a checkpoint's train state, on one device of this process."""
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.StandardCheckpointer() as ckptr:
    meta = ckptr.metadata(path).item_metadata.tree
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)
    return ckptr.restore(path, target)


def test_finetune_two_processes_equals_one(tmp_path):
  stdouts = _finetune_in_processes(tmp_path / "two")
  one = finetune.run(_config(), str(tmp_path / "one"))

  two = json.loads((tmp_path / "two" / "metrics.json").read_text())
  assert two == json.loads((tmp_path / "one" / "metrics.json").read_text()) == one
  # stdout is the result alone: process 0 prints the metrics, the others nothing (gloo's
  # "[Gloo] Rank i is connected" goes to stderr)
  assert json.loads(stdouts[0]) == two and stdouts[1:] == [""] * (NUM_PROCESSES - 1)
  assert two["step"] == STEPS
  state = tmp_path / "two" / "checkpoints" / str(STEPS) / "state"
  assert sorted(p.name for p in state.glob("ocdbt.process_*")) == [
    "ocdbt.process_0",
    "ocdbt.process_1",
  ]  # one checkpoint, written by processes 0 and 1 of one system, each its own shards
  a = _restore(state)
  b = _restore(tmp_path / "one" / "checkpoints" / str(STEPS) / "state")
  assert jax.tree.structure(a) == jax.tree.structure(b)
  pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  diffs = [float(np.abs(x - y).max()) for x, y in pairs]
  print(f"train state after {STEPS} steps, 2 processes vs 1: max abs diff {max(diffs):.2g}")
  assert max(diffs) <= TOL
  assert int(a["step"]) == STEPS


# ---- kill -9 of both processes mid-run, with length buckets: the rerun ends bit for bit --------

RESUME_STEPS = 6
RESUME = {
  **OVERRIDES,
  "batching": "bucket",
  "max_buckets": 3,
  "bucket_multiple": 2,  # the sample's sentences have 8 to 14 tokens: several bucket lengths
  "num_train_steps": RESUME_STEPS,
  "checkpoint_every_steps": 2,
}
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


def _state_arrays(workdir: pathlib.Path, step: int) -> list:
  return jax.tree.leaves(_restore(workdir / "checkpoints" / str(step) / "state"))


def test_bucketed_two_process_run_killed_and_rerun_equals_uninterrupted(tmp_path):
  """Both processes get SIGKILL mid-run; the same two-process command again resumes from the
  last checkpoint and its data position, and ends with the uninterrupted two-process run's
  metrics, parameters and optimizer state, bit for bit."""
  import signal
  import time

  _finetune_in_processes(tmp_path / "straight", RESUME)
  expected = json.loads((tmp_path / "straight" / "metrics.json").read_text())
  buckets = json.loads((tmp_path / "straight" / "buckets.json").read_text())["buckets"]
  assert len(buckets) > 1  # the run really batched at several lengths

  run = tmp_path / "run"
  marks = [tmp_path / f"paused.{i}" for i in range(NUM_PROCESSES)]
  extra = {"PAUSE_AFTER": "5", "PAUSED": str(tmp_path / "paused.{process}")}
  procs = _start(run, RESUME, ["-c", PAUSING_CLI], extra)
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
  assert saved and max(saved) < RESUME_STEPS  # killed mid-run, after a checkpoint

  _finetune_in_processes(run, RESUME)  # the same command again
  assert json.loads((run / "metrics.json").read_text()) == expected
  a, b = _state_arrays(run, RESUME_STEPS), _state_arrays(tmp_path / "straight", RESUME_STEPS)
  assert len(a) == len(b)
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x, y)  # bit for bit
