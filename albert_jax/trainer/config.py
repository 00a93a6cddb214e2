"""The run-config fields both trainers share, their checks, and the optimizer they describe.

`base_config()` holds every field `albert_jax.trainer.finetune` and `.pretrain` both read; each
trainer's `base_config` adds its own fields and defaults, and configs/*.py files start from
that. `check` refuses a config that cannot run before any weights or data are loaded, and a
workdir that holds a run with another config (rerunning the same command resumes instead).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import ml_collections
import optax

from albert_jax import optim, sharding
from albert_jax.config import MAX_POSITIONS, AlbertConfig
from albert_jax.data import batching
from albert_jax.errors import UserError
from albert_jax.files import write_json
from albert_jax.model import TRAIN_REMAT_POLICY

placeholder = ml_collections.config_dict.placeholder

# Config fields that may change between a run and its resumption (they do not change results).
RESUMABLE_CHANGES = (
  "log_every_steps",
  "checkpoint_every_steps",
  "eval_every_steps",
  "keep_checkpoints",
  "mesh",
  "allow_data_change",
  "step_timeout",
  "compilation_cache",
)
LR_SCHEDULES = ("google", "hf")  # forms of `optim.warmup_linear_decay`
OPTIMIZERS = ("adamw", "lamb")


def base_config() -> ml_collections.ConfigDict:
  """The shared fields; None (a placeholder) where the trainers' defaults differ."""
  c = ml_collections.ConfigDict()
  # The architecture or weights; each trainer says how it reads this (a preset, a hub name, ...).
  c.model = "albert-base-v2"
  # AlbertConfig fields to override (e.g. a tiny model); None = the model's own value.
  c.model_overrides = ml_collections.ConfigDict(
    {f.name: placeholder(type(f.default)) for f in dataclasses.fields(AlbertConfig)}
  )
  c.max_seq_length = MAX_POSITIONS  # tokens per example; at most the model's positions

  c.optimizer = placeholder(str)  # "adamw" or "lamb"
  c.learning_rate = placeholder(float)  # the peak rate, reached at the end of the warm-up
  # Linear warm-up, then linear decay to 0 at num_train_steps. "google": Google's
  # optimization.py, lr * (1 - t / num_train_steps) after the warm-up; "hf": the decay starts
  # at the peak, lr * (T - t) / (T - warmup_steps). See `optim.warmup_linear_decay`.
  c.lr_schedule = "google"
  c.adam_bias_correction = False  # Adam's bias correction (Google's AdamW and LAMB have none)
  c.weight_decay = 0.01  # not on LayerNorm parameters and biases (nor LAMB's trust ratio)
  c.clip_norm = 1.0  # global gradient norm
  c.batch_size = placeholder(int)  # examples per optimizer step (all processes together)
  c.grad_accum_steps = 1  # micro-batches per optimizer step (batch_size must divide evenly)
  c.eval_batch_size = placeholder(int)  # None = the trainer's default
  c.num_train_steps = placeholder(int)  # optimizer steps
  c.warmup_steps = placeholder(int)

  c.dtype = "float32"  # compute dtype: float32 or bfloat16 (parameters stay float32)
  # a jax.checkpoint_policies name (None or "none" = no remat); see albert_jax.model
  c.remat_policy = TRAIN_REMAT_POLICY
  c.seed = 0  # model init and dropout
  # Resuming on training data other than the checkpoint's (its fingerprint) is an error; True
  # continues on the new data from the start of the saved epoch.
  c.allow_data_change = False
  # Keep compiled programs for the next run (`albert_jax.compilation`: $ALBERT_JAX_CACHE, else
  # ~/.cache/albert_jax/xla); False = compile everything again.
  c.compilation_cache = True

  c.log_every_steps = placeholder(int)
  c.eval_every_steps = placeholder(int)  # None or 0 = only at the end
  c.checkpoint_every_steps = placeholder(int)
  c.keep_checkpoints = placeholder(int)  # the latest N checkpoints are kept
  # Several processes: seconds without a completed step before a process dumps its stacks and
  # ends the job (exit 79, albert_jax.watchdog); 0 = max(60, 10x the median step time).
  c.step_timeout = 0.0

  c.mesh = ml_collections.ConfigDict()  # see albert_jax.sharding
  # A preset name (`sharding.MESH_PRESETS`: "data", "fsdp", "data_tensor") or devices per
  # mesh axis, -1 = all the rest: --config.mesh.shape=fsdp, --config.mesh.shape.tensor=4.
  c.mesh.shape = ml_collections.FieldReference(
    ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1}), field_type=object
  )
  # None = `sharding.RULES`; or a list of (logical axis, mesh axes) pairs.
  c.mesh.rules = ml_collections.FieldReference(None, field_type=object)
  return c


def model_overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The `model_overrides` that are set."""
  return {k: v for k, v in config.model_overrides.items() if v is not None}


# ---- checks ------------------------------------------------------------------------------------

# (field, smallest allowed value, None allowed): the numeric fields both trainers read.
# Intervals may be 0 (= only at the end); counts and sizes start at 1.
SHARED_RANGES = (
  ("batch_size", 1, False),
  ("grad_accum_steps", 1, False),
  ("eval_batch_size", 1, True),
  ("num_train_steps", 1, True),
  ("warmup_steps", 0, True),
  ("max_seq_length", 8, False),
  ("log_every_steps", 0, True),
  ("eval_every_steps", 0, True),
  ("checkpoint_every_steps", 0, True),
  ("keep_checkpoints", 1, True),
  ("seed", 0, False),
)
POSITIVE_RATES = ("learning_rate",)  # finite and > 0
NONNEGATIVE_RATES = ("weight_decay", "clip_norm", "step_timeout")  # finite and >= 0


def check_ranges(config: ml_collections.ConfigDict, ranges=SHARED_RANGES) -> None:
  """Refuses a numeric field out of range, naming it and its value, before any work starts."""
  for name, low, none_ok in ranges:
    if name not in config:
      continue
    value = config[name]
    if value is None and none_ok:
      continue
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise UserError(f"{name}={value!r}: must be an integer >= {low}.")
  for names, positive in ((POSITIVE_RATES, True), (NONNEGATIVE_RATES, False)):
    for name in names:
      if name not in config or config[name] is None:
        continue
      value = config[name]
      ok = isinstance(value, (int, float)) and math.isfinite(value)
      if not ok or (value <= 0 if positive else value < 0):
        raise UserError(f"{name}={value!r}: must be a finite number {'>' if positive else '>='} 0.")


def check(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  eval_batch_size: int,
  resumable: Iterable[str] = RESUMABLE_CHANGES,
) -> tuple[jax.sharding.Mesh, sharding.Rules]:
  """Checks the shared fields and the workdir; returns the run's (mesh, rules)."""
  check_ranges(config)
  if config.grad_accum_steps < 1 or config.batch_size % config.grad_accum_steps:
    raise UserError(
      f"batch_size={config.batch_size} is not divisible by grad_accum_steps="
      f"{config.grad_accum_steps}; pick a batch size that is a multiple of it."
    )
  if config.dtype not in ("float32", "bfloat16"):
    raise UserError(f"dtype={config.dtype!r}: use 'float32' or 'bfloat16'.")
  if config.optimizer.strip().lower() not in OPTIMIZERS:
    raise UserError(f"optimizer={config.optimizer!r}: use one of {', '.join(OPTIMIZERS)}.")
  if config.lr_schedule not in LR_SCHEDULES:
    raise UserError(f"lr_schedule={config.lr_schedule!r}: use one of {', '.join(LR_SCHEDULES)}.")
  try:
    mesh, rules = sharding.mesh_from_config(config.mesh)
  except ValueError as e:
    raise UserError(f"mesh: {e}") from None
  try:
    sharding.check_batch_size(config.batch_size // config.grad_accum_steps, mesh, rules)
    sharding.check_batch_size(eval_batch_size, mesh, rules)
  except ValueError as e:
    raise UserError(
      f"{e} (micro-batch = batch_size / grad_accum_steps; see also eval_batch_size.)"
    ) from None
  check_resumable(config, workdir, resumable)
  return mesh, rules


def check_steps(num_train_steps: int, warmup_steps: int) -> None:
  if not 0 <= warmup_steps <= num_train_steps:
    raise UserError(
      f"warmup_steps={warmup_steps} must be in [0, num_train_steps={num_train_steps}]."
    )


def check_max_seq_length(config: ml_collections.ConfigDict, albert: AlbertConfig) -> None:
  if config.max_seq_length > albert.max_position_embeddings:
    raise UserError(
      f"max_seq_length={config.max_seq_length} exceeds the model's max_position_embeddings="
      f"{albert.max_position_embeddings}; use --config.max_seq_length="
      f"{albert.max_position_embeddings} or less (and data of that length)."
    )


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1}, as the config flags name the fields."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def old_values(saved: Mapping[str, Any]) -> dict[str, Any]:
  """Fields added after runs were made, with the values that reproduce a run saved (as
  `saved`) before they existed: AdamW was
  optax's (bias-corrected) and LAMB Google's (none), the schedule HF's warm-up + linear decay,
  and fine-tuning padded every row to max_seq_length (bucket sizes then do not matter) and
  trained one seed."""
  adamw = str(saved.get("optimizer", "adamw")).strip().lower() == "adamw"
  return dict(
    adam_bias_correction=adamw,
    lr_schedule="hf",
    batching="max_length",
    max_buckets=batching.MAX_BUCKETS,
    bucket_multiple=batching.BUCKET_MULTIPLE,
    seeds=1,  # fine-tuning's several-seed fields: one seed, its data order
    data_seed=None,
    restart_after=2,
    max_restarts=None,
    export_seeds="best",
  )


def check_resumable(
  config: ml_collections.ConfigDict,
  workdir: str,
  resumable: Iterable[str],
) -> None:
  """Refuses a workdir whose saved config.json differs from `config` outside `resumable`
  (top-level fields a resumed run may change, e.g. how often it logs). An `old_values` field
  the saved config lacks (a run from before it existed) is read as that function says."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = _flat(json.load(f))
  current = _flat(json.loads(config.to_json()))
  saved = {**{k: v for k, v in old_values(saved).items() if k in current}, **saved}
  allowed = set(resumable)
  changed = sorted(
    k
    for k in set(saved) | set(current)
    if k.split(".")[0] not in allowed and saved.get(k) != current.get(k)
  )
  if changed:
    diff = "; ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
    raise UserError(
      f"Workdir {workdir} holds a run with a different config ({diff}). To resume that run, "
      f"rerun with its config (saved in {path}); to start a new run, pass another --workdir "
      "or delete this one."
    )


def save(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the run config to `workdir`/config.json (process 0), what `check_resumable` reads."""
  os.makedirs(workdir, exist_ok=True)
  write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json()), main_only=True)


# ---- the optimizer -----------------------------------------------------------------------------


def make_optimizer(
  c: Any, num_train_steps: int, warmup_steps: int
) -> tuple[optax.Schedule, optax.GradientTransformation]:
  """(learning-rate schedule, optimizer) of a run.

  `c` has the fields optimizer, learning_rate, lr_schedule, adam_bias_correction,
  weight_decay, clip_norm and grad_accum_steps: the run config, or a frozen copy of them.
  With grad_accum_steps > 1 the optimizer steps once per that many micro-batches.
  """
  check_steps(num_train_steps, warmup_steps)
  schedule = optim.warmup_linear_decay(
    c.learning_rate, num_train_steps, warmup_steps, form=c.lr_schedule
  )
  tx = optim.make_optimizer(
    c.optimizer,
    schedule,
    weight_decay=c.weight_decay,
    clip_norm=c.clip_norm,
    bias_correction=c.adam_bias_correction,
  )
  if c.grad_accum_steps > 1:
    tx = optim.accumulate(tx, c.grad_accum_steps)
  return schedule, tx
