"""Fine-tunes ALBERT on GLUE, SQuAD, RACE or token classification: `python -m albert_jax.finetune`.

  python -m albert_jax.finetune --config=configs/finetune/sst2_sample.py --workdir=/tmp/albert_demo

Wiring only: config -> model (`albert_jax.pretrained` or a preset) -> task data
(`albert_jax.data.tasks`) -> jitted `albert_jax.train` steps -> checkpoints, eval, predictions.
A run writes into its workdir:
  config.json          the run config (a rerun with another config is refused)
  checkpoints/<step>/  the latest checkpoints: train state + data position (`checkpoint.py`)
  best/<step>/         the checkpoint with the best eval metric (`config.best_metric`)
  tb/                  TensorBoard scalars: train loss, learning rate, eval metrics
  predictions/         prediction files of the final model, per eval split
  metrics.json         the final eval metrics
Rerunning the same command resumes from the latest checkpoint, at the same step and data
position, and ends with the same parameters and metrics as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from albert_jax import distributed, optim, sharding, train
from albert_jax.checkpoint import Checkpoints
from albert_jax.config import PRESETS, AlbertConfig
from albert_jax.data import tasks
from albert_jax.heads import MODEL_INPUTS as _MODEL_INPUTS
from albert_jax.heads import create_module
from albert_jax.loop import DataPosition, Reporter, is_due, shuffled_batches
from albert_jax.model import TRAIN_REMAT_POLICY
from albert_jax.tokenizer import AlbertTokenizer
from albert_jax.weights.pretrained import from_pretrained
from albert_jax.workdir import ConfigError, check_resumable, write_json

_TARGETS = ("label", "labels", "start_positions", "end_positions")
# Task options a config may carry, and which data function takes them.
_FEATURIZE_KEYS = ("doc_stride", "max_query_length", "max_qa_length", "label_all_tokens")
_POSTPROCESS_KEYS = ("n_best_size", "max_answer_length", "null_score_diff_threshold")
# Config fields that may change between a run and its resumption (they do not change results).
_RESUMABLE_CHANGES = (
  "log_every_steps",
  "checkpoint_every_steps",
  "eval_every_steps",
  "keep_checkpoints",
  "mesh",
)


# ---- config ------------------------------------------------------------------------------------


def base_config(task: str) -> ml_collections.ConfigDict:
  """Every field `run` reads, with Google ALBERT's fine-tuning defaults; configs fill the rest."""
  c = ml_collections.ConfigDict()
  c.task = task
  # An HF hub name (albert-base-v2, albert/albert-base-v2) or a converted checkpoint directory;
  # with from_scratch=True, a preset name whose architecture is trained from random weights.
  c.model = "albert-base-v2"
  c.from_scratch = False
  # AlbertConfig fields to override (e.g. a tiny model); None = the model's own value.
  c.model_overrides = ml_collections.ConfigDict(
    {
      f.name: ml_collections.config_dict.placeholder(type(f.default))
      for f in dataclasses.fields(AlbertConfig)
    }
  )
  c.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir
  c.train_file = ml_collections.config_dict.placeholder(str)  # local files instead of TFDS
  c.eval_file = ml_collections.config_dict.placeholder(str)
  c.max_train_examples = ml_collections.config_dict.placeholder(int)  # None = all
  c.max_eval_examples = ml_collections.config_dict.placeholder(int)
  c.max_seq_length = 512

  c.optimizer = "adamw"
  c.learning_rate = 1e-5
  c.batch_size = 32  # examples per optimizer step
  c.grad_accum_steps = 1  # micro-batches per optimizer step (batch_size must divide evenly)
  c.eval_batch_size = ml_collections.config_dict.placeholder(int)  # None = batch_size
  c.num_train_steps = ml_collections.config_dict.placeholder(int)  # or num_epochs
  c.num_epochs = ml_collections.config_dict.placeholder(float)
  c.warmup_steps = ml_collections.config_dict.placeholder(int)  # or warmup_fraction
  c.warmup_fraction = ml_collections.config_dict.placeholder(float)
  c.weight_decay = 0.01  # not on LayerNorm parameters and biases
  c.clip_norm = 1.0  # global gradient norm

  c.dtype = "float32"  # compute dtype: float32 or bfloat16 (parameters stay float32)
  # a jax.checkpoint_policies name (None or "none" = no remat); see albert_jax.model
  c.remat_policy = TRAIN_REMAT_POLICY
  c.seed = 0  # model init, data order and dropout

  c.log_every_steps = 50
  c.eval_every_steps = ml_collections.config_dict.placeholder(int)  # None = only at the end
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 2
  c.best_metric = "accuracy"  # eval metric (first eval split) that picks the best checkpoint
  c.best_mode = "max"

  c.mesh = ml_collections.ConfigDict()  # see albert_jax.sharding
  # Devices per mesh axis; -1 = all the rest. Default: data parallel over every device.
  c.mesh.shape = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.mesh.rules = ml_collections.config_dict.placeholder(str)  # None = sharding.RULES
  return c


def _model_source(config: ml_collections.ConfigDict) -> str:
  """How `config.model` is read: "checkpoint" (a directory), "preset" (random init) or "hub"."""
  if config.from_scratch:
    if config.model.split("/")[-1] not in PRESETS:
      raise ConfigError(
        f"from_scratch=True needs a preset name for model, got {config.model!r}; "
        f"choose one of {', '.join(sorted(PRESETS))}."
      )
    return "preset"
  return "checkpoint" if os.path.isdir(config.model) else "hub"


def _preset_config(config: ml_collections.ConfigDict) -> AlbertConfig | None:
  """The ALBERT config of a preset model with `model_overrides`; None for stored weights."""
  overrides = {k: v for k, v in config.model_overrides.items() if v is not None}
  if _model_source(config) == "preset":
    try:
      return AlbertConfig.from_name(config.model.split("/")[-1], **overrides)
    except ValueError as e:
      raise ConfigError(f"model_overrides: {e}") from None
  if overrides:
    raise ConfigError(
      f"model_overrides {overrides} apply only to models trained from scratch "
      f"(from_scratch=True); model={config.model!r} brings its own config. Drop the "
      "overrides or set --config.from_scratch=True."
    )
  return None


def check_config(config: ml_collections.ConfigDict, workdir: str):
  """Checks what can be checked before loading weights or data; returns the task."""
  try:
    task = tasks.get_task(config.task)
    if config.get("label_names"):  # a token classification file's own tag set
      task = tasks.with_labels(task, config.label_names)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if (model_config := _preset_config(config)) is not None:
    _check_max_seq_length(config, model_config)
  if config.grad_accum_steps < 1 or config.batch_size % config.grad_accum_steps:
    raise ConfigError(
      f"batch_size={config.batch_size} is not divisible by grad_accum_steps="
      f"{config.grad_accum_steps}; pick a batch size that is a multiple of it."
    )
  if (config.num_train_steps is None) == (config.num_epochs is None):
    raise ConfigError(
      "Set exactly one of num_train_steps and num_epochs; got "
      f"num_train_steps={config.num_train_steps}, num_epochs={config.num_epochs}."
    )
  if config.warmup_steps is None and config.warmup_fraction is None:
    raise ConfigError("Set warmup_steps or warmup_fraction.")
  if config.dtype not in ("float32", "bfloat16"):
    raise ConfigError(f"dtype={config.dtype!r}: use 'float32' or 'bfloat16'.")
  try:
    mesh, rules = sharding.mesh_from_config(config.mesh)
    sharding.check_batch_size(config.batch_size // config.grad_accum_steps, mesh, rules)
    sharding.check_batch_size(config.eval_batch_size or config.batch_size, mesh, rules)
  except ValueError as e:
    raise ConfigError(
      f"{e} (micro-batch = batch_size / grad_accum_steps; eval_batch_size defaults to batch_size.)"
    ) from None
  check_resumable(config, workdir, _RESUMABLE_CHANGES)
  return task


def _check_max_seq_length(config: ml_collections.ConfigDict, model_config: AlbertConfig) -> None:
  if config.max_seq_length > model_config.max_position_embeddings:
    raise ConfigError(
      f"max_seq_length={config.max_seq_length} exceeds the model's max_position_embeddings="
      f"{model_config.max_position_embeddings}; use --config.max_seq_length="
      f"{model_config.max_position_embeddings} or less."
    )


# ---- model ---------------------------------------------------------------------------------


def _load_model(config: ml_collections.ConfigDict, task):
  """(module, pretrained params or None for a random init, tokenizer) for the task's head."""
  options = dict(
    dtype=jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32,
    remat_policy=config.remat_policy,
  )
  num_labels = (
    task.num_labels if task.head in ("sequence_classification", "token_classification") else None
  )
  if (model_config := _preset_config(config)) is not None:
    logging.warning("from_scratch=True: training %r from random weights.", config.model)
    module = create_module(model_config, task.head, num_labels=num_labels, **options)
    return module, None, AlbertTokenizer()
  model = from_pretrained(
    config.model, task.head, num_labels=num_labels, ignore_mismatched_sizes=True, **options
  )
  _check_max_seq_length(config, model.config)
  return model.module, model.params, model.tokenizer


# ---- data ----------------------------------------------------------------------------------


@dataclasses.dataclass
class EvalSet:
  split: str
  examples: list
  features: Any  # tasks.Features


def _featurize(config, task, examples, tokenizer, training: bool = False):
  kwargs = {k: config[k] for k in _FEATURIZE_KEYS if k in config}
  if task.head == "question_answering":
    kwargs["training"] = training  # drops training questions whose answer is not found
  return tasks.featurize(task, examples, tokenizer, config.max_seq_length, **kwargs)


def _load(config, task, split: str, file: str | None, limit: int | None):
  return tasks.load_examples(
    task, split, data_dir=config.data_dir, files={split: file} if file else None, limit=limit
  )


def _load_data(config, task, tokenizer) -> tuple[dict[str, np.ndarray], list[EvalSet]]:
  """(training feature arrays, the eval splits); one split only when `eval_file` is given."""
  examples = _load(config, task, "train", config.train_file, config.max_train_examples)
  train_arrays = _featurize(config, task, examples, tokenizer, training=True).arrays
  eval_sets = []
  for split in task.eval_splits[:1] if config.eval_file else task.eval_splits:
    examples = _load(config, task, split, config.eval_file, config.max_eval_examples)
    eval_sets.append(EvalSet(split, examples, _featurize(config, task, examples, tokenizer)))
  return train_arrays, eval_sets


def _gather(arrays: Mapping[str, np.ndarray], keys, idx: np.ndarray) -> dict[str, np.ndarray]:
  return {k: arrays[k][idx] for k in keys if k in arrays}


# ---- evaluation ----------------------------------------------------------------------------


def evaluate(predict_fn, state, eval_set: EvalSet, batch_size: int, put, task, config):
  """(predictions, metrics) of `state` on one eval split; `put` shards a host batch."""
  arrays = eval_set.features.arrays
  n = len(arrays["input_ids"])
  outputs: dict[str, list[np.ndarray]] = {}
  for start in range(0, n, batch_size):
    idx = np.minimum(np.arange(start, start + batch_size), n - 1)  # pad: repeat the last row
    out = predict_fn(state, put(_gather(arrays, _MODEL_INPUTS, idx)))
    for f in dataclasses.fields(out):
      outputs.setdefault(f.name, []).append(np.asarray(getattr(out, f.name), np.float32))
  merged = {k: np.concatenate(v)[:n] for k, v in outputs.items()}
  kwargs = {k: config[k] for k in _POSTPROCESS_KEYS if k in config}
  predictions, metrics = tasks.postprocess(
    task, eval_set.examples, eval_set.features, merged, **kwargs
  )
  return predictions, {k: float(v) for k, v in metrics.items()}


# ---- the run -------------------------------------------------------------------------------


def _optimizer(config, num_train: int):
  """(optimizer steps, learning-rate schedule, optimizer) for `num_train` training features."""
  total = config.num_train_steps or math.ceil(num_train * config.num_epochs / config.batch_size)
  warmup = (
    config.warmup_steps
    if config.warmup_steps is not None
    else round(config.warmup_fraction * total)
  )
  schedule = optim.warmup_linear_decay(config.learning_rate, total, warmup)
  tx = optim.make_optimizer(
    config.optimizer, schedule, weight_decay=config.weight_decay, clip_norm=config.clip_norm
  )
  if config.grad_accum_steps > 1:
    tx = optim.accumulate(tx, config.grad_accum_steps)
  return total, schedule, tx


def _initial_state(config, task, module, params, tx, sample, mesh, rules, ckpts: Checkpoints):
  """(state, data position): the latest checkpoint's, else a new state (sharded as it is made)."""
  abstract = sharding.abstract_train_state(module, tx, task.head, sample, mesh, rules)
  if ckpts.latest_step() is not None:
    state, data = ckpts.restore(abstract)
    return state, DataPosition.from_json(data)
  if params is None:
    init_rng = jax.random.fold_in(jax.random.key(config.seed), 0)
    return sharding.create_sharded_state(
      module, tx, task.head, init_rng, sample, mesh, rules
    ), DataPosition()
  state = jax.jit(
    lambda p: train.create_train_state(module, p, tx, task.head),
    out_shardings=sharding.shardings_of(abstract),
  )(params)
  return state, DataPosition()


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains, evaluates and writes predictions; returns the final metrics (as metrics.json).

  With checkpoints in `workdir` (a killed or preempted run), continues from the latest one.
  An exception (Ctrl-C) lets checkpoint writes in flight finish first.
  """
  task = check_config(config, workdir)
  mesh, rules = sharding.mesh_from_config(config.mesh)
  module, params, tokenizer = _load_model(config, task)
  main_process = distributed.is_main_process()  # the one that writes files and logs
  os.makedirs(workdir, exist_ok=True)
  if main_process:
    write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json()))
  train_arrays, eval_sets = _load_data(config, task, tokenizer)
  num_train = len(train_arrays["input_ids"])
  total, schedule, tx = _optimizer(config, num_train)
  ckpts = Checkpoints(
    os.path.join(workdir, "checkpoints"),
    keep=config.keep_checkpoints,
    best_directory=os.path.join(workdir, "best"),
    best_metric=config.best_metric,
    best_mode=config.best_mode,
  )
  sample = _gather(train_arrays, _MODEL_INPUTS, np.arange(1))
  state, position = _initial_state(config, task, module, params, tx, sample, mesh, rules, ckpts)
  del params
  train_fn = sharding.jit_train_step(sharding.shardings_of(state), mesh, rules)
  predict_fn = sharding.jit_predict_step(sharding.shardings_of(state), mesh, rules)

  # Every process builds the same global batches; each passes on the rows its devices hold.
  def put(batch):
    return sharding.shard_batch(distributed.process_rows(batch, mesh, rules), mesh, rules)

  dropout_rng = sharding.replicate(jax.random.fold_in(jax.random.key(config.seed), 1), mesh)
  accum = config.grad_accum_steps  # micro-batches per optimizer step; state.step counts them
  eval_batch = config.eval_batch_size or config.batch_size

  step = int(state.step) // accum
  reporter = Reporter(
    os.path.join(workdir, "tb"), total, initial_step=step, desc=config.task, enabled=main_process
  )
  try:
    if step:
      reporter.write(
        f"Resuming {workdir} at step {step} (epoch {position.epoch}, example {position.index})."
      )
    batches = shuffled_batches(num_train, config.batch_size // accum, config.seed, position)
    history = []
    while step < total:
      for _ in range(accum):
        idx, position = next(batches)
        batch = put(_gather(train_arrays, _MODEL_INPUTS + _TARGETS, idx))
        state, metrics = train_fn(state, batch, dropout_rng)
        history.append(metrics)
      step += 1
      reporter.advance()
      if is_due(step, config.log_every_steps, total):
        means = {k: float(np.mean([m[k] for m in jax.device_get(history)])) for k in history[0]}
        lr = float(schedule(step - 1))  # the rate of this step's update
        reporter.scalars(step, {**means, "lr": lr}, "train")
        history = []
      if step < total and config.eval_every_steps and step % config.eval_every_steps == 0:
        _, metrics = evaluate(predict_fn, state, eval_sets[0], eval_batch, put, task, config)
        reporter.scalars(step, metrics, f"eval_{eval_sets[0].split}")
        if metrics:  # none without labels
          ckpts.save_if_best(step, state, position.to_json(), metrics)
      if is_due(step, config.checkpoint_every_steps, total):
        ckpts.save(step, state, position.to_json())

    results: dict[str, Any] = {"step": step}
    for eval_set in eval_sets:  # the final model on every split: metrics, prediction files
      predictions, metrics = evaluate(predict_fn, state, eval_set, eval_batch, put, task, config)
      reporter.scalars(step, metrics, f"eval_{eval_set.split}")
      if eval_set is eval_sets[0] and metrics:
        ckpts.save_if_best(step, state, position.to_json(), metrics)
      if main_process:
        tasks.write_predictions(
          task, predictions, os.path.join(workdir, "predictions"), eval_set.split
        )
      results[eval_set.split] = metrics
    if main_process:
      write_json(os.path.join(workdir, "metrics.json"), results)
    return results
  finally:
    ckpts.wait_until_finished()
    ckpts.close()
    reporter.close()


def main(argv: list[str]) -> None:
  from absl import app, flags  # noqa: PLC0415
  from absl import logging as absl_logging  # noqa: PLC0415

  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  distributed.initialize()  # joins the processes of a multi-host run; else nothing
  if not flags.FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every save at INFO
  try:
    results = run(flags.FLAGS.config, flags.FLAGS.workdir)
  except ConfigError as e:
    raise SystemExit(f"error: {e}") from None
  if distributed.is_main_process():  # output from process 0 only, as for every file
    print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
  # Flags are defined only when run as a program: config files import `base_config` from here.
  from absl import app, flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", None, "A configs/finetune/*.py file.", lock_config=True)
  flags.DEFINE_string(
    "workdir",
    None,
    "Where checkpoints, TensorBoard files, predictions and "
    "metrics.json go; rerun with the same one to resume.",
  )
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
