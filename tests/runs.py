"""Fine-tuning runs in the tests: the suite's tiny model, the configs and the command line, what
a run saved, and a run killed mid-way and run again."""

import glob
import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from tensorboardX.proto import event_pb2

from albert_jax.trainer import finetune, loop

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs" / "finetune"
SST2_SAMPLE = CONFIGS / "sst2_sample.py"
# The suite's tiny model, trained from random weights by every run that need not learn: small
# enough that tracing and compiling, not the steps, take a run's time.
TINY = dict(
  hidden_size=32,
  num_hidden_layers=2,
  num_attention_heads=4,
  intermediate_size=64,
  embedding_size=16,
  max_position_embeddings=64,
)
TINY_FLAGS = {f"model_overrides.{k}": v for k, v in TINY.items()}  # as --config.X overrides


def _module(name: str):
  spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


GLUE = _module("glue")


def load_config(name: str, overrides: dict | None = None):
  """The config of --config=configs/finetune/glue.py:NAME for a GLUE task, else NAME.py, with
  `overrides` as the command line's --config.X=value flags would set them."""
  config = GLUE.get_config(name) if name in GLUE.RECIPES else _module(name).get_config()
  config.update_from_flattened_dict(overrides or {})
  return config


def tiny(name: str, **fields):
  """Config `name` with the tiny model from scratch, one device, short runs; `fields` on top."""
  config = load_config(name)
  config.model = "albert-base-v2"
  config.from_scratch = True
  config.model_overrides.update(TINY)
  config.update(
    dict(
      max_seq_length=32,
      batch_size=8,
      learning_rate=1e-3,
      num_train_steps=3,
      num_epochs=None,
      warmup_steps=1,
      warmup_fraction=None,
      eval_every_steps=2,
      checkpoint_every_steps=2,
      log_every_steps=1,
    )
  )
  config.mesh.shape.data = 1
  config.update(fields)
  return config


def finetune_command(
  workdir, overrides: dict, config: str | Path = SST2_SAMPLE, program=("-m", "albert_jax.finetune")
) -> list[str]:
  """`python -m albert_jax.finetune` (or `program`) for `config` with `overrides`."""
  flags = [f"--config.{k}={v}" for k, v in overrides.items()]
  return [sys.executable, *program, f"--config={config}", *flags, f"--workdir={workdir}"]


def run_command(workdir, overrides: dict, config: str) -> subprocess.CompletedProcess:
  """`python -m albert_jax.finetune --config=CONFIG` (a path from the checkout's root, as the
  README writes it) with `overrides`, run there to its end, which must be exit 0."""
  command = finetune_command(workdir, overrides, config=config)
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return done


def read(path) -> str:
  with open(path) as f:
    return f.read()


def tb_scalars(workdir) -> dict[str, dict[int, float]]:
  """tag -> step -> value, read from the TensorBoard event files in workdir/tb."""
  out: dict[str, dict[int, float]] = {}
  for path in glob.glob(os.path.join(workdir, "tb", "events.*")):
    data, i = open(path, "rb").read(), 0
    while i < len(data):  # TFRecord framing: length, crc, payload, crc
      (n,) = struct.unpack("Q", data[i : i + 8])
      event = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
      i += n + 16
      for value in event.summary.value:
        out.setdefault(value.tag, {})[event.step] = value.simple_value
  return out


def restore(path) -> dict:
  """The arrays of a saved train state (the `state` directory of a checkpoint), on one device
  of this process, whatever mesh or processes wrote it."""
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.StandardCheckpointer() as ckptr:
    meta = ckptr.metadata(path).item_metadata.tree
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)
    return ckptr.restore(path, target)


def train_state(workdir, step: int, kind: str = "checkpoints") -> dict:
  """The arrays of checkpoint `step`'s train state, on one device."""
  return restore(os.path.join(workdir, kind, str(step), "state"))


def saved_state(workdir, step: int, kind: str = "checkpoints") -> tuple[dict, dict]:
  """Checkpoint `step` of a run: its train state's arrays and its data position."""
  with open(os.path.join(workdir, kind, str(step), "data", "metadata")) as f:
    position = json.load(f)
  assert set(position.pop("data")) == {"examples", "sha256"}  # the training data's fingerprint
  return train_state(workdir, step, kind), position


def assert_trees_equal(a, b):
  """The same leaves, bit for bit."""
  flat_a, flat_b = ocp.tree.to_flat_dict(a), ocp.tree.to_flat_dict(b)
  assert flat_a.keys() == flat_b.keys()
  for key in flat_a:
    np.testing.assert_array_equal(np.asarray(flat_a[key]), np.asarray(flat_b[key]), err_msg=key)


class Killed(Exception):
  """Stands for the process dying: raised inside the train loop by `run_killed`."""


def run_killed(run, *args, at_step: int) -> None:
  """Calls `run(*args)` (a trainer's run), which dies at step `at_step`: its update is done,
  nothing that follows it in the loop (log, eval, checkpoint) is."""
  advance, steps_done = loop.Reporter.advance, []

  def advance_then_die(self, steps=1):
    advance(self, steps)
    steps_done.append(steps)
    if len(steps_done) == at_step:
      raise Killed

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(loop.Reporter, "advance", advance_then_die)
    with pytest.raises(Killed):
      run(*args)


def assert_killed_run_resumes(config, workdir, straight, *, at_step: int, predictions: str):
  """`finetune.run(config, workdir)` killed at step `at_step`, then the same call again, ends
  as the uninterrupted run in `straight` did: the same metrics, train state bit for bit
  (parameters, optimizer state, step), data position and predictions file (`predictions`,
  relative to the workdir). Returns (the step the rerun resumed from, that checkpoint's data
  position, the last checkpoint's data position), for the caller to check."""
  run_killed(finetune.run, config, workdir, at_step=at_step)
  assert not os.path.exists(os.path.join(workdir, "metrics.json"))
  saved = [int(p) for p in os.listdir(os.path.join(workdir, "checkpoints")) if p.isdigit()]
  resumed_from = max(saved)
  arrays, position = saved_state(workdir, resumed_from)
  assert int(arrays["step"]) == resumed_from * config.grad_accum_steps  # counts micro-batches

  metrics = finetune.run(config, workdir)  # the same command again
  assert metrics == json.loads(read(os.path.join(straight, "metrics.json")))
  final, final_position = saved_state(workdir, metrics["step"])
  expected, expected_position = saved_state(straight, metrics["step"])
  assert final_position == expected_position
  assert_trees_equal(final, expected)
  assert read(os.path.join(workdir, predictions)) == read(os.path.join(straight, predictions))
  return resumed_from, position, final_position
