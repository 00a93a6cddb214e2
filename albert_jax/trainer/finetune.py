"""Fine-tunes ALBERT on a GLUE, SQuAD or RACE task: `run(config, workdir)`.

  python -m albert_jax.finetune --config=configs/finetune/glue.py:mnli --workdir=/tmp/mnli

What is particular to fine-tuning: the model (`albert_jax.pretrained` or a preset trained from
scratch), the task data (`albert_jax.data.tasks`), evaluation with the task's metrics and
prediction files; the rest is the trainer core (`albert_jax.trainer`). A run writes into its
workdir:
  config.json          the run config (a rerun with another config is refused)
  checkpoints/<step>/  the latest checkpoints: train state + data position (`checkpoint.py`)
  best/<step>/         the checkpoint with the best eval metric (`config.best_metric`)
  tb/                  TensorBoard scalars: train loss, learning rate, eval metrics
  predictions/         prediction files of the final model, per eval split
  metrics.json         the final eval metrics
  buckets.json         the sequence lengths batches are cut to (`config.batching="bucket"`)
  export/              the best evaluated (`export=best`, else the final) model, in the layout
                       `python -m albert_jax.convert` writes, with the task's head, labels and
                       the metrics of its step (`albert_jax.trainer.export.write`)
Rerunning the same command resumes from the latest checkpoint, at the same step and data
position, and ends with the same parameters and metrics as an uninterrupted run.
With `config.seeds = N > 1`, N seeds train as one program from here on:
`albert_jax.trainer.finetune_seeds` (and what the workdir holds then).

Batching (`config.batching`): "bucket" (the default) cuts each batch to the smallest of at most
`max_buckets` lengths that holds its rows (`albert_jax.data.batching`), so the model computes
on real tokens with a few compiled shapes; "max_length" pads every row to `max_seq_length`.
The buckets are chosen once from the training and eval features' lengths (eval never needs a
longer one), a pure function of the data and the config; a resumed run checks the config
(`config.json`) and recomputes them, and refuses to go on if they differ from buckets.json
(the data changed). With buckets the data position's `index` counts the micro-batches of its
epoch already used (with "max_length", the examples). Every process computes the same plan
from the same global arrays, so all agree on each batch's bucket. The batches are
`albert_jax.trainer.batches`, evaluation `albert_jax.trainer.evaluation`.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from albert_jax import compilation, distributed, sharding
from albert_jax import metrics as metrics_lib
from albert_jax.checkpoint import Checkpoints, abstract_state
from albert_jax.config import PRESETS, AlbertConfig
from albert_jax.data import batching, ner, tasks
from albert_jax.data.order import data_fingerprint, resume_position
from albert_jax.errors import UserError
from albert_jax.files import write_json
from albert_jax.heads import MODEL_INPUTS, create_module, has_num_labels
from albert_jax.tokenizer import AlbertTokenizer, check_token_ids
from albert_jax.trainer import config as config_lib
from albert_jax.trainer import export, finetune_seeds, loop, programs, seeds
from albert_jax.trainer.batches import (
  TARGETS,
  BatchStats,
  choose_buckets,
  gather,
  record_buckets,
  train_batches,
)
from albert_jax.trainer.evaluation import EvalSet, evaluate
from albert_jax.trainer.state import initial_state
from albert_jax.weights.pretrained import from_pretrained

placeholder = ml_collections.config_dict.placeholder
# Task options a config may carry, and which data function takes them.
_FEATURIZE_KEYS = ("doc_stride", "max_query_length", "max_qa_length", "label_all_tokens")
BATCHING = ("bucket", "max_length")  # `config.batching`
# `config.bucket_cost_steps`: measured on a 2-core CPU (the README demo's model, cold cache),
# compiling a train or eval step took ~2.3 s against 0.65 s for a step of 32 rows at 256.
BUCKET_COST_STEPS = 4.0
EXPORTS = ("best", "final", "none")
# `export`, `export_seeds` decide only what is written at the end: a run made before they
# existed resumes.
# bucket_cost_steps: a resumed run keeps the bucket lengths it recorded (`choose_buckets`)
_RESUMABLE_CHANGES = (*config_lib.RESUMABLE_CHANGES, "export", "export_seeds", "bucket_cost_steps")


# ---- config ------------------------------------------------------------------------------------


def base_config(task: str) -> ml_collections.ConfigDict:
  """Every field `run` reads, with Google ALBERT's fine-tuning defaults; configs fill the rest.

  The shared fields are `albert_jax.trainer.config.base_config`'s.
  """
  c = config_lib.base_config()
  c.task = task
  # An HF hub name (albert-base-v2, albert/albert-base-v2) or a converted checkpoint directory;
  # with from_scratch=True, a preset name whose architecture is trained from random weights.
  c.model = "albert-base-v2"
  c.from_scratch = False
  c.data_dir = placeholder(str)  # TFDS data_dir
  c.train_file = placeholder(str)  # local files instead of TFDS
  c.eval_file = placeholder(str)
  c.max_train_examples = placeholder(int)  # None = all
  c.max_eval_examples = placeholder(int)

  c.optimizer = "adamw"
  c.learning_rate = 1e-5
  c.batch_size = 32
  c.num_epochs = placeholder(float)  # instead of num_train_steps
  c.warmup_fraction = placeholder(float)  # instead of warmup_steps
  # eval_batch_size: None = batch_size

  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 2
  c.best_metric = "accuracy"  # eval metric (first eval split) that picks the best checkpoint
  c.best_mode = "max"

  c.batching = "bucket"  # or "max_length": every row padded to max_seq_length (module doc)
  c.max_buckets = batching.MAX_BUCKETS  # "bucket": at most this many lengths (compiled shapes)
  c.bucket_multiple = batching.BUCKET_MULTIPLE  # "bucket": each length a multiple of this
  # "bucket": what compiling one more shape costs, in optimizer steps at the longest length; a
  # run takes fewer than max_buckets lengths when more would not pay for their compiling
  # (`batches.choose_buckets`); 0 = always max_buckets
  c.bucket_cost_steps = BUCKET_COST_STEPS
  c.export = "best"  # into WORKDIR/export: "best" (evaluated) step, "final" step or "none"

  # Several seeds in one compiled program (`albert_jax.trainer.seeds`): replica k starts from
  # seed + k (head initialization and dropout); all see the data order of data_seed.
  c.seeds = 1
  c.data_seed = placeholder(int)  # the training data's order; None = seed
  # seeds > 1: a replica whose dev metric is at chance level (no better than the majority
  # class) this many evaluations in a row after the warm-up restarts with a new seed; 0 = never
  # (a non-finite loss always restarts it)
  c.restart_after = 2
  c.max_restarts = placeholder(int)  # seeds > 1: restarts in all; None = seeds
  # seeds > 1: "best" writes the best replica to WORKDIR/export; "all" also every replica's
  # best to export/seed_<seed>/
  c.export_seeds = "best"
  return c


# The offline samples' model: small enough for a laptop CPU, the released vocabulary.
SAMPLE_MODEL = {
  "hidden_size": 128,
  "num_hidden_layers": 4,  # sharing one block
  "num_attention_heads": 4,
  "intermediate_size": 512,
  "embedding_size": 64,
}


def sample_config(task: str, max_seq_length: int, max_positions: int) -> ml_collections.ConfigDict:
  """`base_config(task)` for a bundled sample (`tasks.sample_files`): its train and eval files,
  and `SAMPLE_MODEL` (albert-base-v2's architecture at that size) trained from random weights,
  at from-scratch rates (1e-3, batch 32); nothing is downloaded."""
  config = base_config(task)
  files = tasks.sample_files(task)
  config.train_file = files.pop("train")
  (config.eval_file,) = files.values()
  config.model = "albert-base-v2"  # the architecture, trained from random weights ...
  config.from_scratch = True  # ... with these overrides
  config.model_overrides.update(SAMPLE_MODEL, max_position_embeddings=max_positions)
  config.max_seq_length = max_seq_length
  config.learning_rate = 1e-3  # from scratch: much higher than fine-tuning's 1e-5
  config.batch_size = 32
  return config


def _eval_batch_size(config: ml_collections.ConfigDict) -> int:
  return config.eval_batch_size or config.batch_size


def _model_source(config: ml_collections.ConfigDict) -> str:
  """How `config.model` is read: "checkpoint" (a directory), "preset" (random init) or "hub"."""
  if config.from_scratch:
    if config.model.split("/")[-1] not in PRESETS:
      raise UserError(
        f"from_scratch=True needs a preset name for model, got {config.model!r}; "
        f"choose one of {', '.join(sorted(PRESETS))}."
      )
    return "preset"
  return "checkpoint" if os.path.isdir(config.model) else "hub"


def _preset_config(config: ml_collections.ConfigDict) -> AlbertConfig | None:
  """The ALBERT config of a preset model with `model_overrides`; None for stored weights."""
  overrides = config_lib.model_overrides(config)
  if _model_source(config) == "preset":
    try:
      return AlbertConfig.from_name(config.model.split("/")[-1], **overrides)
    except ValueError as e:
      raise UserError(f"model_overrides: {e}") from None
  if overrides:
    raise UserError(
      f"model_overrides {overrides} apply only to models trained from scratch "
      f"(from_scratch=True); model={config.model!r} brings its own config. Drop the "
      "overrides or set --config.from_scratch=True."
    )
  return None


_RANGES = (  # fine-tuning's own numeric fields, as config_lib.SHARED_RANGES
  ("max_train_examples", 1, True),
  ("max_eval_examples", 1, True),
  ("doc_stride", 1, True),
  ("max_query_length", 1, True),
  ("n_best_size", 1, True),
  ("max_answer_length", 1, True),
  ("seeds", 1, False),
  ("data_seed", 0, True),
  ("restart_after", 0, False),
  ("max_restarts", 0, True),
)


def reported_metrics(task) -> tuple[set[str], tuple[str, ...]]:
  """(the metric names, the prefixes of per-kind names) the task's evaluation reports."""
  if task.head == "sequence_classification":
    labels = np.arange(2) % max(task.num_labels, 1)
    preds = labels.astype(np.float32) if task.num_labels == 1 else labels
    return set(metrics_lib.glue_metrics(task.name, preds, labels)), ()
  if task.head == "question_answering":
    names = {"exact", "f1", "HasAns_exact", "HasAns_f1"}
    if task.name.endswith("v2"):
      names |= {"NoAns_exact", "NoAns_f1", "best_exact", "best_f1"}
    return names, ()
  if task.head == "multiple_choice":
    return {"accuracy"}, ("accuracy_",)
  if ner.is_entity_scheme(task.label_names):  # token classification
    return {"accuracy", "precision", "recall", "f1"}, ("f1_",)
  return {"accuracy"}, ()


def check_best_metric(best_metric: str, task) -> None:
  """`best_metric` must be a metric the task reports: checked before training, not at the first
  evaluation."""
  names, prefixes = reported_metrics(task)
  if best_metric not in names and not (prefixes and best_metric.startswith(prefixes)):
    raise UserError(
      f"best_metric={best_metric!r} is not a metric task {task.name!r} reports; choose one of "
      f"{', '.join(sorted(names))}"
      + (f" or {', '.join(p + '*' for p in prefixes)}" if prefixes else "")
      + "."
    )


def check_config(config: ml_collections.ConfigDict, workdir: str):
  """Checks what can be checked before loading weights or data; returns (task, mesh, rules)."""
  config_lib.check_ranges(config, config_lib.SHARED_RANGES + _RANGES)
  for name, value in (
    ("num_epochs", config.num_epochs),
    ("warmup_fraction", config.warmup_fraction),
  ):
    if value is not None and not (0 < value if name == "num_epochs" else 0 <= value <= 1):
      raise UserError(
        f"{name}={value!r}: must be {'> 0' if name == 'num_epochs' else 'in [0, 1]'}."
      )
  try:
    task = tasks.get_task(config.task)
    if config.get("label_names"):  # a token classification file's own tag set
      task = tasks.with_labels(task, config.label_names)
  except ValueError as e:
    raise UserError(str(e)) from None
  check_best_metric(config.best_metric, task)
  if (model_config := _preset_config(config)) is not None:
    config_lib.check_max_seq_length(config, model_config)
  if (config.num_train_steps is None) == (config.num_epochs is None):
    raise UserError(
      "Set exactly one of num_train_steps and num_epochs; got "
      f"num_train_steps={config.num_train_steps}, num_epochs={config.num_epochs}."
    )
  if config.warmup_steps is None and config.warmup_fraction is None:
    raise UserError("Set warmup_steps or warmup_fraction.")
  if config.get("export", "best") not in EXPORTS:
    raise UserError(f"export={config.export!r}: choose one of {', '.join(EXPORTS)}.")
  if config.num_train_steps is not None and config.warmup_steps is not None:
    config_lib.check_steps(config.num_train_steps, config.warmup_steps)
  if config.batching not in BATCHING:
    raise UserError(f"batching={config.batching!r}: use one of {', '.join(BATCHING)}.")
  if config.max_buckets < 1 or config.bucket_multiple < 1:
    raise UserError(
      f"max_buckets={config.max_buckets} and bucket_multiple={config.bucket_multiple} must be >= 1."
    )
  cost = config.bucket_cost_steps
  if isinstance(cost, bool) or not isinstance(cost, int | float) or not cost >= 0:
    raise UserError(
      f"bucket_cost_steps={cost!r}: give the optimizer steps one compiled shape costs, a number "
      ">= 0 (0: always max_buckets lengths)."
    )
  mesh, rules = config_lib.check(
    config, workdir, eval_batch_size=_eval_batch_size(config), resumable=_RESUMABLE_CHANGES
  )
  seeds.check_config(config, mesh, rules)
  return task, mesh, rules


def train_steps(config: ml_collections.ConfigDict, num_train: int) -> tuple[int, int]:
  """(optimizer steps, warm-up steps) for `num_train` training features."""
  total = config.num_train_steps or math.ceil(num_train * config.num_epochs / config.batch_size)
  if config.warmup_steps is not None:
    return total, config.warmup_steps
  return total, round(config.warmup_fraction * total)


# ---- model ---------------------------------------------------------------------------------


def _load_model(config: ml_collections.ConfigDict, task, seed: int):
  """(module, pretrained params or None for a random init, tokenizer) for the task's head;
  parameters the weights lack (the head) are initialized from `seed`."""
  options = dict(dtype=config.dtype, remat_policy=config.remat_policy)
  num_labels = task.num_labels if has_num_labels(task.head) else None
  if (model_config := _preset_config(config)) is not None:
    logging.warning("from_scratch=True: training %r from random weights.", config.model)
    module = create_module(model_config, task.head, num_labels=num_labels, **options)
    return module, None, AlbertTokenizer()
  model = from_pretrained(
    config.model,
    task.head,
    num_labels=num_labels,
    ignore_mismatched_sizes=True,
    rng=jax.random.key(seed),
    **options,
  )
  config_lib.check_max_seq_length(config, model.config)
  return model.module, model.params, model.tokenizer


# ---- data ----------------------------------------------------------------------------------


def _featurize(config, task, examples, tokenizer, max_positions: int, training: bool = False):
  kwargs = {k: config[k] for k in _FEATURIZE_KEYS if k in config}
  if task.head == "question_answering":
    kwargs["training"] = training  # drops training questions whose answer is not found
  return tasks.featurize(
    task, examples, tokenizer, config.max_seq_length, max_positions=max_positions, **kwargs
  )


def _load(config, task, split: str, file: str | None, limit: int | None):
  return tasks.load_examples(
    task, split, data_dir=config.data_dir, files={split: file} if file else None, limit=limit
  )


def _load_data(config, task, tokenizer, max_positions: int):
  """(training feature arrays, the eval splits); one split only when `eval_file` is given."""
  examples = _load(config, task, "train", config.train_file, config.max_train_examples)
  train = _featurize(config, task, examples, tokenizer, max_positions, training=True).arrays
  eval_sets = []
  for split in task.eval_splits[:1] if config.eval_file else task.eval_splits:
    examples = _load(config, task, split, config.eval_file, config.max_eval_examples)
    features = _featurize(config, task, examples, tokenizer, max_positions)
    eval_sets.append(EvalSet(split, examples, features))
  return train, eval_sets


# ---- the run -------------------------------------------------------------------------------


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains, evaluates and writes predictions; returns the final metrics (as metrics.json).

  With checkpoints in `workdir` (a killed or preempted run), continues from the latest one.
  An exception (Ctrl-C) lets checkpoint writes in flight finish first.
  """
  task, mesh, rules = check_config(config, workdir)
  compilation.setup(config.get("compilation_cache", True))
  module, params, tokenizer = _load_model(config, task, config.seed)
  max_positions = module.config.max_position_embeddings
  train_arrays, eval_sets = _load_data(config, task, tokenizer, max_positions)
  for what, arrays in [("train", train_arrays)] + [(s.split, s.features.arrays) for s in eval_sets]:
    check_token_ids(arrays["input_ids"], module.config.vocab_size, f"the {what} data")
  num_train = len(train_arrays["input_ids"])
  total, warmup = train_steps(config, num_train)
  buckets = choose_buckets(
    config, train_arrays, eval_sets, total, _eval_batch_size(config), workdir
  )
  schedule, tx = config_lib.make_optimizer(config, total, warmup)
  seed = jax.random.key(config.seed)
  sample = gather(train_arrays, MODEL_INPUTS, np.arange(1))
  if config.seeds > 1:  # the replicas must fit: refused before anything is written or compiled
    finetune_seeds.check_memory(config, module, tx, task.head, sample, mesh, rules)
  config_lib.save(config, workdir)  # once the data is known to load: a fixed rerun may resume
  record_buckets(workdir, buckets)

  # Every process builds the same global batches; each passes on the rows its devices hold.
  def put(batch):
    return sharding.shard_batch(distributed.process_rows(batch, mesh, rules), mesh, rules)

  if config.seeds > 1:  # several seeds in one program: `albert_jax.trainer.seeds`
    load = None if params is None else lambda s: _load_model(config, task, s)[1]
    setup = finetune_seeds.Setup(
      config=config,
      workdir=workdir,
      task=task,
      mesh=mesh,
      rules=rules,
      module=module,
      tokenizer=tokenizer,
      train_arrays=train_arrays,
      eval_sets=eval_sets,
      buckets=buckets,
      total=total,
      warmup=warmup,
      schedule=schedule,
      tx=tx,
      sample=sample,
      put=put,
      load_params=load,
      eval_batch=_eval_batch_size(config),
    )
    return finetune_seeds.run(setup, params)

  def evaluate_first(step, state) -> dict[str, dict[str, float]]:
    if step == total:  # `finish` evaluates every split
      return {}
    _, metrics = evaluate(predict_fn, state, eval_sets[0], eval_batch, put, task, config, buckets)
    return {f"eval_{eval_sets[0].split}": metrics}

  def finish(step, state, position):
    """The final model on every split: metrics, prediction files, metrics.json."""
    results: dict[str, Any] = {"step": step}
    for eval_set in eval_sets:
      predictions, results[eval_set.split] = evaluate(
        predict_fn, state, eval_set, eval_batch, put, task, config, buckets
      )
      if distributed.is_main_process():
        directory = os.path.join(workdir, "predictions")
        tasks.write_predictions(task, predictions, directory, eval_set.split)
    write_json(os.path.join(workdir, "metrics.json"), results, main_only=True)
    return results, {f"eval_{s.split}": results[s.split] for s in eval_sets}

  ckpts = Checkpoints(
    os.path.join(workdir, "checkpoints"),
    keep=config.keep_checkpoints,
    best_directory=os.path.join(workdir, "best"),
    best_metric=config.best_metric,
    best_mode=config.best_mode,
  )
  with ckpts:
    state, saved = initial_state(
      module,
      tx,
      task.head,
      sample,
      mesh,
      rules,
      ckpts,
      init_rng=jax.random.fold_in(seed, 0),
      load_params=None if params is None else lambda _: params,
    )
    params = None  # the state holds the weights now
    fingerprint = data_fingerprint(gather(train_arrays, MODEL_INPUTS + TARGETS, slice(None)))
    position = resume_position(saved, fingerprint, config.allow_data_change)
    train_fn = sharding.jit_train_step(sharding.shardings_of(state), mesh, rules)
    predict_fn = sharding.jit_predict_step(sharding.shardings_of(state), mesh, rules)
    eval_batch = _eval_batch_size(config)
    micro = config.batch_size // config.grad_accum_steps
    train_fn, predict_fn = programs.compile_ahead(  # every shape, concurrently, from now on
      train_fn,
      predict_fn,
      state,
      programs.train_templates(
        config, train_arrays, micro, position, buckets, total * config.grad_accum_steps
      ),
      programs.eval_templates(eval_sets, eval_batch, buckets),
      mesh,
      rules,
    )
    stats = BatchStats(batching.row_lengths(train_arrays["attention_mask"]))
    batches = (  # each position also records the data's fingerprint (checked on resume)
      (batch, {**after, "data": fingerprint})
      for batch, after in train_batches(config, train_arrays, micro, position, buckets, put, stats)
    )
    result = loop.run(
      config,
      state,
      train_fn,
      batches,
      {**position.to_json(), "data": fingerprint},
      num_train_steps=total,
      schedule=schedule,
      ckpts=ckpts,
      dropout_rng=sharding.replicate(jax.random.fold_in(seed, 1), mesh),
      logdir=os.path.join(workdir, "tb"),
      desc=config.task,
      evaluate=evaluate_first if config.eval_every_steps else None,
      finish=finish,
      batch_stats=stats.read,
    )
    if result.finished is not None and config.get("export", "best") != "none":
      _export(config, workdir, task, tokenizer, module.config, ckpts, result, eval_sets)
  return result.finished


def _export(config, workdir, task, tokenizer, albert, ckpts, result, eval_sets) -> None:
  """Writes WORKDIR/export: the best evaluated step's model (`export=best`), else the final."""
  ckpts.wait_until_finished()
  state, step = result.state, result.step
  metrics = {s.split: result.finished[s.split] for s in eval_sets}
  best = ckpts.best_step()
  if config.export == "best" and best is not None and best != step:
    state, _ = ckpts.restore(abstract_state(state), best=True)
    step, metrics = best, {eval_sets[0].split: ckpts.best_metrics()}
  export.write(
    os.path.join(workdir, "export"),
    state,
    albert,
    tokenizer,
    export.run_metadata(config, workdir, task, step, metrics),
  )
