"""Pretrains ALBERT (masked LM + sentence order): `run(config, workdir)`.

  python -m albert_jax.create_pretraining_data --input='corpus/*.txt' --output=data/pretrain
  python -m albert_jax.pretrain --config=configs/pretrain/large.py --workdir=runs/large \\
    --config.train_data=data/pretrain --config.eval_holdout_files=1

What is particular to pretraining: the checked data (`albert_jax.data.pretraining`), the
model (a preset from random weights, or `config.init_from`, a converted directory, to continue
pretraining), MLM/SOP evaluation, metrics.jsonl and the export; the rest is the trainer core
(`albert_jax.trainer`). A run writes into its workdir:
  config.json          the run config (a rerun with another config is refused)
  checkpoints/<step>/  the latest checkpoints: train state + data position (`checkpoint.py`)
  metrics.jsonl        one JSON line per logged train step and per eval: {"step", "split", ...}
  tb/                  TensorBoard scalars
  export/              the final model in the layout `python -m albert_jax.convert` writes
                       (params/, config.json, albert_jax.json, spiece.model): load it with
                       `albert_jax.from_pretrained(DIR)` or fine-tune it with
                       `--config.model=DIR`, no conversion step
Rerunning the same command resumes from the latest checkpoint at the same step and data
position; the steps after that checkpoint are trained again and their metrics.jsonl lines
replaced, so an interrupted run ends with the same parameters and metrics as an uninterrupted one.
The data position records the training files' fingerprint (`data.pretraining.fingerprint`):
resuming on other data is refused, or with `allow_data_change` restarts the saved epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from albert_jax import compilation, distributed, sharding, train
from albert_jax.checkpoint import Checkpoints
from albert_jax.config import AlbertConfig
from albert_jax.data import pretraining as data_lib
from albert_jax.data.order import DataPosition, resume_position
from albert_jax.errors import UserError
from albert_jax.files import write_text
from albert_jax.heads import create_module
from albert_jax.tokenizer import AlbertTokenizer
from albert_jax.trainer import config as config_lib
from albert_jax.trainer import export, loop
from albert_jax.trainer.state import initial_state
from albert_jax.weights import runs
from albert_jax.weights.pretrained import from_pretrained

HEAD = "pretraining"
placeholder = ml_collections.config_dict.placeholder
# Config fields that may change between a run and its resumption (they do not change results).
_RESUMABLE_CHANGES = (*config_lib.RESUMABLE_CHANGES, "eval_batches", "verify_checksums")


# ---- config ------------------------------------------------------------------------------------


def base_config() -> ml_collections.ConfigDict:
  """Every field `run` reads, with Google ALBERT's pretraining recipe; configs/pretrain/*.py
  pick the model size and the data. The shared fields are `albert_jax.trainer.config`'s."""
  c = config_lib.base_config()
  c.model = "albert-base-v2"  # the architecture: a preset name (random init)
  c.init_from = placeholder(str)  # a converted directory to continue pretraining from
  c.vocab_file = placeholder(str)  # the data's SentencePiece model; None = bundled 30k-clean

  c.train_data = placeholder(str)  # a create_pretraining_data output directory
  c.eval_data = placeholder(str)  # another one, held out; or:
  c.eval_holdout_files = 0  # hold out the last N files of train_data for eval
  # max_seq_length: must equal the data's
  c.max_predictions_per_seq = 20  # must equal the data's
  c.dynamic_masking = False  # re-mask every example from epoch 1 on
  c.shuffle_window = 16  # files whose examples are shuffled together (0 = all of a process)
  c.verify_checksums = False  # sha256 of every data file at start-up (reads all the data)

  c.optimizer = "lamb"
  c.learning_rate = 0.00176
  c.batch_size = 4096
  c.num_train_steps = 125_000
  c.warmup_steps = 3_125
  # eval_batch_size: None = batch_size / grad_accum_steps
  c.data_seed = 0  # example order and dynamic masks (seed: model init and dropout)

  c.log_every_steps = 100
  c.eval_every_steps = 10_000  # and at the end (with eval data)
  c.eval_batches = placeholder(int)  # batches per eval; None = the whole eval set
  c.checkpoint_every_steps = 5_000
  c.keep_checkpoints = 3
  return c


model_config = runs.pretraining_model_config  # the architecture a run config names


_RANGES = (  # pretraining's own numeric fields, as config_lib.SHARED_RANGES
  ("max_predictions_per_seq", 1, False),
  ("eval_holdout_files", 0, False),
  ("shuffle_window", 0, False),
  ("eval_batches", 1, True),
  ("data_seed", 0, False),
)


def check_config(config: ml_collections.ConfigDict, workdir: str):
  """Checks what can be checked without data; returns (the model's config, mesh, rules)."""
  config_lib.check_ranges(config, config_lib.SHARED_RANGES + _RANGES)
  if not config.train_data:
    raise UserError("Set --config.train_data to a create_pretraining_data output directory.")
  albert = model_config(config)
  config_lib.check_max_seq_length(config, albert)
  config_lib.check_steps(config.num_train_steps, config.warmup_steps)
  if config.eval_data and config.eval_holdout_files:
    raise UserError(
      f"Give eval_data={config.eval_data!r} or eval_holdout_files="
      f"{config.eval_holdout_files}, not both."
    )
  mesh, rules = config_lib.check(
    config, workdir, eval_batch_size=_eval_batch_size(config), resumable=_RESUMABLE_CHANGES
  )
  return albert, mesh, rules


# ---- data ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Inputs:
  """The run's checked data: this process's training batches and eval shards."""

  train: data_lib.TrainBatches
  eval: data_lib.Shards | None  # None: no eval data
  eval_num_batches: int  # batches per eval, the same on every process
  eval_rows: int  # rows of each global eval batch this process loads
  fingerprint: dict[str, Any]  # of all processes' training files, saved with the data position


def _data_share(global_rows: int, mesh, rules) -> tuple[int, int]:
  """(index, count) of this process's share of the data files: processes that load the same
  rows of the global batch (e.g. across a "tensor" axis) read the same files."""
  rows = distributed.process_batch_slice(global_rows, mesh, rules)
  local = rows.stop - rows.start
  return rows.start // local, global_rows // local


def _eval_batch_size(config: ml_collections.ConfigDict) -> int:
  return config.eval_batch_size or config.batch_size // config.grad_accum_steps


def open_inputs(config: ml_collections.ConfigDict, albert: AlbertConfig, mesh, rules) -> Inputs:
  """Opens and checks the training and eval data; every data error is raised here."""
  micro = config.batch_size // config.grad_accum_steps
  index, count = _data_share(micro, mesh, rules)
  vocab_file = runs.pretraining_vocab_file(config)
  manifest = data_lib.read_manifest(config.train_data)
  data_lib.check_vocabulary(manifest, config.train_data, vocab_file)
  train_ids, eval_ids = data_lib.split_files(len(manifest["files"]), config.eval_holdout_files)
  checks = dict(
    max_seq_length=config.max_seq_length,
    max_predictions_per_seq=config.max_predictions_per_seq,
    vocab_size=albert.vocab_size,
    verify_checksums=config.verify_checksums,
  )
  shards = data_lib.open_shards(
    config.train_data, data_lib.process_files(train_ids, index, count), **checks
  )
  train_batches = data_lib.TrainBatches(
    shards,
    micro // count,
    data_lib.steps_per_epoch(manifest, train_ids, count, micro // count),
    seed=config.data_seed,
    process_index=index,
    shuffle_window=config.shuffle_window,
    dynamic_masking=config.dynamic_masking,
    vocab_file=vocab_file,
  )
  eval_dir = config.train_data
  if config.eval_data:
    eval_manifest = data_lib.read_manifest(config.eval_data)
    data_lib.check_vocabulary(eval_manifest, config.eval_data, vocab_file)
    eval_dir, eval_ids = config.eval_data, list(range(len(eval_manifest["files"])))
  fingerprint = data_lib.fingerprint(manifest, train_ids)
  if not eval_ids:
    return Inputs(train_batches, None, 0, 0, fingerprint)
  eval_index, eval_count = _data_share(_eval_batch_size(config), mesh, rules)
  eval_rows = _eval_batch_size(config) // eval_count
  eval_shards = data_lib.open_shards(
    eval_dir, data_lib.process_files(eval_ids, eval_index, eval_count), **checks
  )
  num_batches = data_lib.eval_num_batches(eval_shards.manifest, eval_ids, eval_count, eval_rows)
  if config.eval_batches:
    num_batches = min(num_batches, config.eval_batches)
  return Inputs(train_batches, eval_shards, num_batches, eval_rows, fingerprint)


def _sample_batch(max_seq_length: int, max_predictions_per_seq: int) -> dict[str, np.ndarray]:
  """Zeros of the model inputs' shapes (for shapes only)."""
  ids = np.zeros((1, max_seq_length), np.int32)
  return {
    "input_ids": ids,
    "attention_mask": ids,
    "token_type_ids": ids,
    "masked_lm_positions": np.zeros((1, max_predictions_per_seq), np.int32),
  }


# ---- evaluation ----------------------------------------------------------------------------


def _eval_sums(state: train.TrainState, batch: train.Batch):
  """The batch's metrics and their denominators (examples; masked-LM predictions)."""
  w_B = batch["example_weight"].astype(jnp.float32)
  counts = {
    "examples": jnp.sum(w_B),
    "predictions": jnp.sum(batch["masked_lm_weights"].astype(jnp.float32) * w_B[:, None]),
  }
  return train.eval_step(state, batch), counts


def evaluate(eval_fn, state: train.TrainState, inputs: Inputs, mesh, rules) -> dict[str, float]:
  """MLM and SOP loss and accuracy over the eval set, each averaged over what it counts."""
  totals: dict[str, float] = {}
  counts = {"examples": 0.0, "predictions": 0.0}
  for local in data_lib.eval_batches(inputs.eval, inputs.eval_rows, inputs.eval_num_batches):
    metrics, n = jax.device_get(eval_fn(state, sharding.shard_batch(local, mesh, rules)))
    for name, value in metrics.items():
      kind = "predictions" if name.startswith("mlm_") else "examples"
      totals[name] = totals.get(name, 0.0) + float(value) * float(n[kind])
    for kind in counts:
      counts[kind] += float(n[kind])
  out = {
    name: total / max(counts["predictions" if name.startswith("mlm_") else "examples"], 1.0)
    for name, total in totals.items()
    if name != "loss"
  }
  out["loss"] = out["mlm_loss"] + out["sop_loss"]
  return out


# ---- metrics file --------------------------------------------------------------------------


class MetricsFile:
  """`metrics.jsonl`: one line per record. Opening it for a run resumed at `step` drops the
  lines of later steps (trained again after the restore)."""

  def __init__(self, path: str, step: int, enabled: bool = True):
    self.path, self.enabled = path, enabled
    if enabled and os.path.exists(path):
      with open(path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
      write_text(path, "".join(kept))

  def write(self, record: Mapping[str, Any]) -> None:
    if self.enabled:
      with open(self.path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


# ---- model, optimizer and compiled steps ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Recipe:
  """What the compiled program depends on (hashable: the key of `program`'s cache)."""

  albert: AlbertConfig
  dtype: str
  remat_policy: str | None
  optimizer: str
  learning_rate: float
  lr_schedule: str
  adam_bias_correction: bool
  num_train_steps: int
  warmup_steps: int
  weight_decay: float
  clip_norm: float
  grad_accum_steps: int
  max_seq_length: int
  max_predictions_per_seq: int

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, albert: AlbertConfig) -> Recipe:
    names = [f.name for f in dataclasses.fields(cls) if f.name != "albert"]
    return cls(albert, **{name: config[name] for name in names})


@dataclasses.dataclass(frozen=True)
class Program:
  """The model, the optimizer and the steps of a recipe, jitted for a mesh."""

  module: Any
  tx: Any
  schedule: Any
  train_step: Any  # (state, batch, rng) -> (state, metrics)
  eval_step: Any  # (state, batch) -> (metrics, {"examples", "predictions"})


@functools.lru_cache(maxsize=1)
def program(recipe: Recipe, mesh: jax.sharding.Mesh, rules: sharding.Rules) -> Program:
  """Builds (and caches, so that a rerun in the same process -- a resumed run, a test -- reuses
  the compiled steps) the program of `recipe` on `mesh`: parameters, optimizer state and
  batches placed by their shardings, activations constrained by `rules`.
  """
  r = recipe
  schedule, tx = config_lib.make_optimizer(r, r.num_train_steps, r.warmup_steps)
  module = create_module(r.albert, HEAD, dtype=r.dtype, remat_policy=r.remat_policy)
  sample = _sample_batch(r.max_seq_length, r.max_predictions_per_seq)
  abstract = sharding.abstract_train_state(module, tx, HEAD, sample, mesh, rules)
  shardings = sharding.shardings_of(abstract)
  train_step = sharding.jit_train_step(shardings, mesh, rules)
  eval_step = sharding.jit_state_fn(_eval_sums, shardings, mesh, rules)
  return Program(module, tx, schedule, train_step, eval_step)


def _init_from(config: ml_collections.ConfigDict, module, rng: jax.Array):
  """`load_params` of `init_from`'s weights (those it lacks are initialized from `rng`)."""

  def load(shardings):
    pretrained = from_pretrained(
      config.init_from,
      HEAD,
      shardings=shardings,
      rng=rng,
      options=module.options,
    )
    return pretrained.params

  return load


# ---- the run -------------------------------------------------------------------------------


def run(
  config: ml_collections.ConfigDict, workdir: str, *, stop_at_step: int | None = None
) -> dict[str, Any]:
  """Pretrains, evaluates and exports; returns {"step", "train", "eval", "export"}.

  `stop_at_step` ends the run after that step's checkpoint, as a preempted job would;
  rerunning continues from there.
  """
  albert, mesh, rules = check_config(config, workdir)
  compilation.setup(config.get("compilation_cache", True))
  try:
    inputs = open_inputs(config, albert, mesh, rules)  # every data check, before any compute
  except data_lib.PretrainingDataError as e:  # a bad file or directory: the message names it
    raise UserError(str(e)) from e
  config_lib.save(config, workdir)
  prog = program(Recipe.from_config(config, albert), mesh, rules)
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
  sample = _sample_batch(config.max_seq_length, config.max_predictions_per_seq)
  latest: dict[str, Any] = {"train": None, "eval": None}  # the last metrics of each kind

  def evaluate_all(step, state):
    return {"eval": evaluate(prog.eval_step, state, inputs, mesh, rules)}

  def record(step, split, metrics):
    latest[split] = metrics
    metrics_file.write({"step": step, "split": split, **metrics})

  def finish(step, state, position):
    directory = os.path.join(workdir, "export")
    export.write(
      directory,
      state,
      albert,
      AlbertTokenizer(runs.pretraining_vocab_file(config)),
      {
        "source": os.path.abspath(workdir),
        "source_format": "albert_jax.pretrain",
        "tokenizer": "source" if runs.pretraining_vocab_file(config) else "bundled",
        "step": step,
      },
    )
    return directory, {}

  ckpts = Checkpoints(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints)
  with ckpts, contextlib.closing(inputs.train):
    load = _init_from(config, prog.module, init_rng) if config.init_from else None
    state, saved = initial_state(
      prog.module, prog.tx, HEAD, sample, mesh, rules, ckpts, init_rng=init_rng, load_params=load
    )
    if saved is not None:
      position = resume_position(saved, inputs.fingerprint, config.allow_data_change)
      if position == DataPosition.from_json(saved):  # the same data
        _check_position(saved, inputs)
      inputs.train.seek(position)
    step = int(state.step) // config.grad_accum_steps
    metrics_file = MetricsFile(
      os.path.join(workdir, "metrics.jsonl"), step, enabled=distributed.is_main_process()
    )
    batches = (
      (sharding.shard_batch(next(inputs.train), mesh, rules), _position(inputs))
      for _ in itertools.count()
    )
    result = loop.run(
      config,
      state,
      prog.train_step,
      batches,
      _position(inputs),
      num_train_steps=config.num_train_steps,
      schedule=prog.schedule,
      ckpts=ckpts,
      dropout_rng=sharding.replicate(dropout_rng, mesh),
      logdir=os.path.join(workdir, "tb"),
      desc="pretrain",
      evaluate=evaluate_all if inputs.eval is not None else None,
      finish=finish,
      record=record,
      stop_at_step=stop_at_step,
    )
  return {"step": result.step, **latest, "export": result.finished}


def _position(inputs: Inputs) -> dict[str, Any]:
  """The data position saved with a checkpoint, with what it means (checked on restore)."""
  train_batches = inputs.train
  return {
    **train_batches.position.to_json(),
    "rows": train_batches.batch_size,
    "steps_per_epoch": train_batches.steps_per_epoch,
    "data": inputs.fingerprint,
  }


def _check_position(saved: Mapping[str, Any], inputs: Inputs) -> None:
  current = _position(inputs)
  changed = {
    k: (saved.get(k), current[k]) for k in ("rows", "steps_per_epoch") if saved.get(k) != current[k]
  }
  if changed:
    logging.warning(
      "The data position was saved with %s; the run now has %s. Resuming at "
      "epoch %d, example %d, but the examples read from here on differ from an "
      "uninterrupted run's.",
      {k: v[0] for k, v in changed.items()},
      {k: v[1] for k, v in changed.items()},
      saved["epoch"],
      saved["index"],
    )
