"""Several seeds of one fine-tuning run trained as one program (`config.seeds = R`).

Replica k starts from seed `config.seed + k`: the task head's initialization and its dropout
stream. Every replica sees the same batches, in the order of `config.data_seed`. So replica k
computes what the single-seed run `--config.seed=S+k --config.data_seed=S` computes.

The train state holds every replica: its params and optimizer state gain a leading replica
axis [R, ...] (the logical axis `axes.REPLICA` of the rule table; by default each device holds
every replica, sharded as one replica would be), the step count is shared. One jitted step,
`jax.vmap`ped over that axis, trains them all (`jit_train_step`); one vmapped predict step
evaluates them all (`jit_predict_step`).

`Replicas` is the run's bookkeeping, a JSON dict saved with each checkpoint's data position:
each replica's seed now, its best evaluation, its restarts, and restarts decided but not yet
done. A replica collapses when its train loss or gradient norm is not finite, or when its dev
metric is no better than the best constant prediction (`chance_level`: the majority class)
for `restart_after` evaluations in a row after the warm-up. It is then re-initialized in place
with the next unused seed (fresh head and optimizer state: its learning-rate schedule starts
again) at the next optimizer step; the other replicas go on untouched.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from albert_jax import axes, sharding, train
from albert_jax.data import tasks
from albert_jax.errors import UserError

logger = logging.getLogger(__name__)
EXPORT_SEEDS = ("best", "all")  # `config.export_seeds`
SUMMARY = ("mean", "std", "min", "max", "median")
_NOT_BETTER = 1e-6  # a metric within this of the constant prediction's is at chance level


# ---- the stacked state --------------------------------------------------------------------


def replica_axes(rules: sharding.Rules) -> sharding.MeshAxes:
  """The mesh axes the replica axis is split over (the "replica" rule; None: not split)."""
  return nn.logical_to_mesh_axes((axes.REPLICA,), rules)[0]


def _names(mesh_axes: sharding.MeshAxes) -> tuple[str, ...]:
  if mesh_axes is None:
    return ()
  return (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)


def stacked_sharding(inner: NamedSharding, ndim: int, rules: sharding.Rules) -> NamedSharding:
  """The sharding of R arrays sharded as `inner` (`ndim` dimensions), stacked on a new leading
  replica axis; a mesh axis the replica axis takes is dropped from the inner dimensions."""
  rep = replica_axes(rules)
  taken = set(_names(rep))
  spec = list(inner.spec) + [None] * (ndim - len(inner.spec))
  rest = []
  for entry in spec:
    kept = tuple(a for a in _names(entry) if a not in taken)
    rest.append(None if not kept else kept[0] if len(kept) == 1 else kept)
  return NamedSharding(inner.mesh, PartitionSpec(rep, *rest))


def stacked_shardings(state: train.TrainState, rules: sharding.Rules) -> train.TrainState:
  """Shardings of the stacked state of one replica's (abstract) `state`: params and optimizer
  state stacked, the step count shared."""

  def stacked(x):
    return stacked_sharding(x.sharding, np.ndim(x), rules)

  return state.replace(
    step=state.step.sharding,
    params=jax.tree.map(stacked, state.params),
    opt_state=jax.tree.map(stacked, state.opt_state),
  )


def abstract_stacked(state: train.TrainState, n: int, rules: sharding.Rules) -> train.TrainState:
  """The abstract stacked state of `n` replicas of one replica's (abstract) `state`."""
  shardings = stacked_shardings(state, rules)

  def stacked(x, s):
    return jax.ShapeDtypeStruct((n, *np.shape(x)), x.dtype, sharding=s)

  return state.replace(
    step=jax.ShapeDtypeStruct((), state.step.dtype, sharding=shardings.step),
    params=jax.tree.map(stacked, state.params, shardings.params),
    opt_state=jax.tree.map(stacked, state.opt_state, shardings.opt_state),
  )


def stack(states: Sequence[train.TrainState], shardings: train.TrainState) -> train.TrainState:
  """One stacked state from the replicas' states (all at the same step)."""

  def fn(*states):
    first = states[0]
    return first.replace(
      params=jax.tree.map(lambda *x: jnp.stack(x), *(s.params for s in states)),
      opt_state=jax.tree.map(lambda *x: jnp.stack(x), *(s.opt_state for s in states)),
    )

  return jax.jit(fn, out_shardings=shardings)(*states)


def unstack(state: train.TrainState, k: int) -> train.TrainState:
  """Replica k's state (a single-seed run's state: what export and checkpoints take)."""
  params, opt_state = _take((state.params, state.opt_state), jnp.int32(k))
  return state.replace(params=params, opt_state=opt_state)


@jax.jit
def _take(tree: Any, k: jax.Array) -> Any:
  """Row `k` of every array of `tree`: one program for every k (not one small one per leaf)."""
  return jax.tree.map(lambda x: x[k], tree)


def replace_replica(shardings: train.TrainState) -> Callable:
  """A jitted (stacked state, one replica's state, k) -> the stacked state with replica k
  replaced (the stacked state is donated)."""

  def fn(state, fresh, k):
    put = lambda a, b: a.at[k].set(b)  # noqa: E731
    return state.replace(
      params=jax.tree.map(put, state.params, fresh.params),
      opt_state=jax.tree.map(put, state.opt_state, fresh.opt_state),
    )

  return jax.jit(fn, out_shardings=shardings, donate_argnums=(0,))


def dropout_rngs(seeds: Sequence[int], mesh) -> jax.Array:
  """The replicas' dropout keys [R], each a single-seed run's (`fold_in(key(seed), 1)`)."""
  keys = jnp.stack([jax.random.fold_in(jax.random.key(s), 1) for s in seeds])
  return sharding.replicate(keys, mesh)


# ---- the steps ----------------------------------------------------------------------------


def train_step(state: train.TrainState, batch: train.Batch, rngs: jax.Array, spmd_axis=None):
  """`train.train_step` of every replica on the same batch: (stacked state, metrics [R])."""

  def one(params, opt_state, rng):
    new, metrics = train.train_step(state.replace(params=params, opt_state=opt_state), batch, rng)
    return new.params, new.opt_state, metrics

  params, opt_state, metrics = jax.vmap(one, spmd_axis_name=spmd_axis)(
    state.params, state.opt_state, rngs
  )
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def predict_step(state: train.TrainState, batch: train.Batch, spmd_axis=None):
  """`train.predict_step` of every replica: outputs with a leading replica axis [R, B, ...]."""

  def one(params):
    return train.predict_step(state.replace(params=params), batch)

  return jax.vmap(one, spmd_axis_name=spmd_axis)(state.params)


def jit_train_step(shardings: train.TrainState, mesh, rules: sharding.Rules) -> Callable:
  """`train_step` jitted for the mesh: (stacked state, batch, rngs [R]) -> (state, metrics)."""
  fn = lambda state, batch, rngs: train_step(state, batch, rngs, replica_axes(rules))  # noqa: E731
  step = jax.jit(
    fn,
    in_shardings=(shardings, sharding.batch_sharding(mesh, rules), sharding.replicated(mesh)),
    out_shardings=(shardings, sharding.replicated(mesh)),
    donate_argnums=(0,),
  )
  return sharding.under_mesh(step, mesh, rules)


def jit_predict_step(shardings: train.TrainState, mesh, rules: sharding.Rules) -> Callable:
  fn = lambda state, batch: predict_step(state, batch, replica_axes(rules))  # noqa: E731
  return sharding.jit_state_fn(fn, shardings, mesh, rules)


# ---- checks -------------------------------------------------------------------------------


def check_config(config, mesh, rules: sharding.Rules) -> None:
  """The seeds fields; the replica axis's mesh axes must divide the replicas and must not
  also split the batch."""
  if config.export_seeds not in EXPORT_SEEDS:
    raise UserError(
      f"export_seeds={config.export_seeds!r}: choose one of {', '.join(EXPORT_SEEDS)} "
      "(all: also export/seed_<seed>/ for every replica)."
    )
  if config.seeds == 1:
    return
  rep = _names(replica_axes(rules))
  size = math.prod(mesh.shape[a] for a in rep)
  if config.seeds % size:
    raise UserError(
      f"seeds={config.seeds} is not divisible by {size}, the size of mesh axes {rep} that the "
      f"replica axis is split over (mesh {dict(mesh.shape)}); use a multiple of {size} seeds."
    )
  if set(rep) & set(_names(sharding.batch_axes(rules))):
    raise UserError(
      f"mesh.rules split both the replica and the batch axis over mesh axes "
      f"{sorted(set(rep) & set(_names(sharding.batch_axes(rules))))}; map the batch to other "
      "mesh axes (or None) when the replicas take them."
    )


def _bytes_per_device(tree) -> int:
  return sum(
    math.prod(x.sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
    for x in jax.tree.leaves(tree)
  )


def memory_estimate(stacked: train.TrainState, albert, config, mesh, rules) -> dict[str, int]:
  """Bytes per device a run of the abstract `stacked` state needs, roughly: the state, its
  gradients, and the activations one micro-batch keeps for the backward pass (per replica:
  rows x length x layers x (12 hidden + 2 FFN + 2 heads x length) values; less with remat)."""
  state = _bytes_per_device(stacked)
  grads = _bytes_per_device(stacked.params)
  rows = config.batch_size // config.grad_accum_steps // sharding.num_batch_shards(mesh, rules)
  length = config.max_seq_length
  per_position = 12 * albert.hidden_size + 2 * albert.intermediate_size
  per_position += 2 * albert.num_attention_heads * length
  itemsize = 2 if config.dtype == "bfloat16" else 4
  replicas = np.shape(jax.tree.leaves(stacked.params)[0])[0]
  replicas //= math.prod(mesh.shape[a] for a in _names(replica_axes(rules)))
  activations = replicas * rows * length * albert.num_hidden_layers * per_position * itemsize
  return {"state": state, "gradients": grads, "activations": activations}


def device_memory(device) -> tuple[int, str]:
  """(bytes one device may use, where that figure comes from)."""
  stats = device.memory_stats() or {}
  if "bytes_limit" in stats:
    return int(stats["bytes_limit"]), f"{device.device_kind} memory"
  host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  local = max(jax.local_device_count(), 1)
  return host // local, f"host memory / {local} local device(s)"


def check_memory(estimate: Mapping[str, int], seeds: int, device) -> None:
  """Refuses a run whose estimate exceeds the device's memory, before anything is compiled."""
  need = sum(estimate.values())
  have, source = device_memory(device)
  if need <= have:
    return
  gib = lambda b: f"{b / 2**30:.1f} GiB"  # noqa: E731
  fits = max(int(seeds * have / need), 0)
  raise UserError(
    f"seeds={seeds} needs about {gib(need)} per device (estimate: state {gib(estimate['state'])}, "
    f"gradients {gib(estimate['gradients'])}, activations {gib(estimate['activations'])}) but "
    f"{source} is {gib(have)}; use at most about {fits} seeds, a smaller batch_size (or more "
    "grad_accum_steps), or a mesh that splits the replica axis (mesh.rules)."
  )


# ---- collapse -----------------------------------------------------------------------------


def constant_outputs(task, features) -> list[dict[str, np.ndarray]]:
  """Model outputs that predict the same thing for every row: each class (or choice) in turn
  for the classifiers, all-zero scores otherwise (regression, span scores)."""
  n = len(features)
  if task.head == tasks.HEAD_QUESTION_ANSWERING:
    length = features.arrays["input_ids"].shape[-1]
    return [{"start_logits": np.zeros((n, length)), "end_logits": np.zeros((n, length))}]
  if task.head == tasks.HEAD_MULTIPLE_CHOICE:
    classes, shape = features.arrays["input_ids"].shape[1], (n,)
  elif task.head == tasks.HEAD_TOKEN_CLASSIFICATION:
    classes, shape = task.num_labels, features.arrays["input_ids"].shape
  elif task.num_labels == 1:  # regression
    return [{"logits": np.zeros((n,))}]
  else:
    classes, shape = task.num_labels, (n,)
  return [{"logits": np.eye(classes)[np.full(shape, c)]} for c in range(classes)]


def chance_level(task, eval_set, best_metric: str, best_mode: str, postprocess_kwargs) -> float:
  """The best `best_metric` a constant prediction reaches on `eval_set` (a metric a constant
  cannot define, e.g. a correlation, counts as 0)."""
  values = []
  for outputs in constant_outputs(task, eval_set.features):
    _, metrics = tasks.postprocess(
      task, eval_set.examples, eval_set.features, outputs, **postprocess_kwargs
    )
    value = float(metrics.get(best_metric, 0.0))
    values.append(0.0 if not math.isfinite(value) else value)
  return max(values) if best_mode == "max" else min(values)


def at_chance(value: float, chance: float, best_mode: str) -> bool:
  """True when `value` is no better than the constant prediction's (or not finite)."""
  if not math.isfinite(value):
    return True
  return value <= chance + _NOT_BETTER if best_mode == "max" else value >= chance - _NOT_BETTER


def better(value: float, best: float | None, best_mode: str) -> bool:
  return best is None or (value > best if best_mode == "max" else value < best)


# ---- bookkeeping --------------------------------------------------------------------------


@dataclasses.dataclass
class Replicas:
  """Where each replica stands; saved with every checkpoint (JSON), so a resumed run restarts
  the same replicas with the same seeds at the same steps."""

  seeds: list[int]  # the seed each replica runs now
  next_seed: int  # the next unused seed
  restarts_left: int
  restarts: list[list[dict[str, Any]]]  # per replica: {"step", "seed", "reason"} of each
  at_chance: list[int]  # evaluations at chance level in a row
  pending: list[str | None]  # why a replica restarts before the next optimizer step
  best: list[dict[str, Any] | None]  # {"step", "metrics"} of the current seed's best eval
  collapsed: list[str | None]  # why a replica would have restarted once none were left

  @classmethod
  def start(cls, seed: int, n: int, max_restarts: int) -> Replicas:
    return cls(
      seeds=[seed + k for k in range(n)],
      next_seed=seed + n,
      restarts_left=max_restarts,
      restarts=[[] for _ in range(n)],
      at_chance=[0] * n,
      pending=[None] * n,
      best=[None] * n,
      collapsed=[None] * n,
    )

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> Replicas:
    return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})

  def mark(self, k: int, reason: str) -> None:
    """Replica k restarts before the next optimizer step (unless one is pending already, or
    none are left: then it goes on, and `collapsed` says why, logged once)."""
    if self.pending[k] is not None or self.collapsed[k] is not None:
      return
    if self.restarts_left > 0:
      self.pending[k] = reason
      return
    self.collapsed[k] = reason
    logger.warning(
      "replica %d (seed %d): %s; no restarts left (max_restarts), it goes on.",
      k,
      self.seeds[k],
      reason,
    )

  def evaluated(self, k: int, step: int, metrics, config, chance: float, warmup: int) -> bool:
    """Records replica k's eval at `step`; True when it is the best of its seed so far."""
    value = float(metrics[config.best_metric])
    collapsed = step > warmup and at_chance(value, chance, config.best_mode)
    self.at_chance[k] = self.at_chance[k] + 1 if collapsed else 0
    if config.restart_after and self.at_chance[k] >= config.restart_after:
      self.mark(
        k,
        f"{config.best_metric} {value:.4g} at chance level ({chance:.4g}) "
        f"for {self.at_chance[k]} evaluations",
      )
    best = None if self.best[k] is None else self.best[k]["metrics"][config.best_metric]
    if not better(value, best, config.best_mode):
      return False
    self.best[k] = {"step": step, "metrics": dict(metrics)}
    return True

  def restart(self, k: int, step: int) -> int | None:
    """Gives replica k the next unused seed (returned; None when no restarts are left)."""
    reason, self.pending[k] = self.pending[k], None
    if reason is None:
      return None
    if self.restarts_left <= 0:  # taken by another replica restarted at this step
      self.mark(k, reason)
      return None
    old, new = self.seeds[k], self.next_seed
    self.restarts[k].append({"step": step, "seed": old, "reason": reason})
    self.seeds[k], self.next_seed = new, new + 1
    self.restarts_left -= 1
    self.at_chance[k], self.best[k] = 0, None
    logger.warning(
      "step %d: replica %d (seed %d): %s; restarted with seed %d (%d restarts left).",
      step,
      k,
      old,
      reason,
      new,
      self.restarts_left,
    )
    return new


def summary(values: Sequence[float]) -> dict[str, float]:
  """mean, std (sample, ddof=1; 0 for one value), min, max, median of the replicas' values."""
  v = np.asarray(values, np.float64)
  return {
    "mean": float(np.mean(v)),
    "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
    "min": float(np.min(v)),
    "max": float(np.max(v)),
    "median": float(np.median(v)),
  }


def summaries(per_replica: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, Any]:
  """{split: {metric: summary}} over the replicas' {split: metrics}."""
  out: dict[str, Any] = {}
  for split, metrics in per_replica[0].items():
    out[split] = {name: summary([r[split][name] for r in per_replica]) for name in metrics}
  return out


def mean_metrics(per_replica: Sequence[Mapping[str, float]]) -> dict[str, float]:
  """The mean of each metric over the replicas (the curve TensorBoard shows as the run's)."""
  return {k: float(np.mean([m[k] for m in per_replica])) for k in per_replica[0]}
