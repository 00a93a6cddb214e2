"""The training batches of a fine-tuning run, and the bucket lengths they are cut to.

`choose_buckets` picks the lengths once from every split's feature lengths and the run's
length (`run_cost`: a short run affords fewer compiled shapes); `record_buckets` keeps them in
the workdir (a resumed run takes them back); `train_batches` streams the
sharded micro-batches with the data position after each; `BatchStats` counts what they
computed (padding share, compiled shapes) for the log.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping

import numpy as np

from albert_jax.data import batching
from albert_jax.data.order import DataPosition, shuffled_batches
from albert_jax.errors import UserError
from albert_jax.files import write_json
from albert_jax.heads import MODEL_INPUTS

TARGETS = ("label", "labels", "start_positions", "end_positions")
BUCKETS_FILE = "buckets.json"  # in the workdir: the run's bucket lengths
_PLANNED_MICRO_BATCHES = 2_000  # training micro-batches `run_cost` looks at


def gather(arrays: Mapping[str, np.ndarray], keys, idx: np.ndarray) -> dict[str, np.ndarray]:
  return {k: arrays[k][idx] for k in keys if k in arrays}


def choose_buckets(
  config, train_arrays, eval_sets: list, total_steps: int, eval_batch: int, workdir: str
) -> tuple[int, ...] | None:
  """The bucket lengths of a `batching="bucket"` run (None for "max_length"), from every split's
  feature lengths: for each count k up to `config.max_buckets`, the k lengths that pad the
  rows least (`batching.choose_buckets`); of those, the set whose run costs least, counting
  each train or eval shape the run uses as `config.bucket_cost_steps` optimizer steps at the
  longest length (compiling one costs about that: see `run_cost`) beside the positions its
  batches compute. A long run affords every bucket that saves positions; a short one, few.
  `bucket_cost_steps=0`: always the `max_buckets` set. Depends on the data and config only,
  so every process, and a rerun, chooses the same. A resumed run keeps the set in the
  workdir's buckets.json when it is one of this data's candidates (the run may be longer now);
  another set means the data changed: refused."""
  if config.batching == "max_length":
    return None
  masks = [
    train_arrays["attention_mask"],
    *(e.features.arrays["attention_mask"] for e in eval_sets),
  ]
  lengths = np.concatenate([batching.row_lengths(m) for m in masks])
  candidates = list(
    dict.fromkeys(  # distinct sets, fewest buckets first
      batching.choose_buckets(lengths, k, config.bucket_multiple, max_length=config.max_seq_length)
      for k in range(1, config.max_buckets + 1)
    )
  )
  if (saved := _recorded(workdir)) is not None:
    if saved not in candidates:
      raise UserError(
        f"Workdir {workdir} was trained with bucket lengths {list(saved)}, but this data gives "
        f"{' or '.join(str(list(c)) for c in candidates)}: the training or eval data changed. "
        "Resume with the same data, or pass another --workdir."
      )
    return saved
  if not config.bucket_cost_steps or len(candidates) == 1:
    return candidates[-1]
  costs = [
    run_cost(config, train_arrays, eval_sets, b, total_steps, eval_batch) for b in candidates
  ]
  return candidates[int(np.argmin(costs))]  # the first (fewest buckets) of equal costs


def run_cost(config, train_arrays, eval_sets, buckets, total_steps: int, eval_batch: int) -> float:
  """The padded positions a run with `buckets` computes (its training micro-batches from the
  start, the first eval split at each evaluation, every split at the end) plus, for each
  distinct train and eval shape it compiles, `config.bucket_cost_steps` optimizer steps at the
  longest bucket (`batch_size * max(buckets)` positions each). Training beyond
  `_PLANNED_MICRO_BATCHES` micro-batches is counted from the first ones, scaled."""
  micro = config.batch_size // config.grad_accum_steps
  n_micro = total_steps * config.grad_accum_steps
  stream = batching.bucketed_batches(
    batching.row_lengths(train_arrays["attention_mask"]), micro, data_seed(config), buckets
  )
  planned = min(n_micro, _PLANNED_MICRO_BATCHES)
  train_lengths = [batch.length for batch, _, _ in itertools.islice(stream, planned)]
  positions = micro * sum(train_lengths) * n_micro / planned
  shapes = len(set(train_lengths))
  every = config.eval_every_steps
  eval_shapes: set[int] = set()
  for i, eval_set in enumerate(eval_sets):
    lengths = batching.row_lengths(eval_set.features.arrays["attention_mask"])
    batches = batching.length_sorted_batches(lengths, eval_batch, buckets)
    evaluations = 1 + ((total_steps - 1) // every if every and i == 0 else 0)
    positions += evaluations * eval_batch * sum(b.length for b in batches)
    eval_shapes |= {b.length for b in batches}
  per_shape = config.bucket_cost_steps * config.batch_size * max(buckets)
  return positions + (shapes + len(eval_shapes)) * per_shape


def _recorded(workdir: str) -> tuple[int, ...] | None:
  path = os.path.join(workdir, BUCKETS_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return tuple(json.load(f)["buckets"])


def record_buckets(workdir: str, buckets: tuple[int, ...] | None) -> None:
  """Writes buckets.json (`choose_buckets` reads it back when the run resumes)."""
  if buckets is not None and _recorded(workdir) != buckets:
    write_json(os.path.join(workdir, BUCKETS_FILE), {"buckets": list(buckets)}, main_only=True)


class BatchStats:
  """What the training batches computed: the padding share since the last `read`, and the
  distinct sequence lengths (compiled train-step shapes) so far."""

  def __init__(self, lengths: np.ndarray):
    self._lengths = lengths
    self._computed = self._real = 0.0
    self._shapes: set[int] = set()

  def add(self, indices: np.ndarray, length: int, weights: np.ndarray | None = None) -> None:
    """A batch of rows `indices` computed at `length` positions; weight-0 rows are padding."""
    real = self._lengths[indices]
    self._computed += length * len(indices)
    self._real += float(np.sum(real if weights is None else real * weights))
    self._shapes.add(length)

  def read(self) -> dict[str, float]:
    padding = 1.0 - self._real / self._computed if self._computed else 0.0
    self._computed = self._real = 0.0
    return {"padding_fraction": padding, "compiled_shapes": float(len(self._shapes))}


def data_seed(config) -> int:
  """The seed of the training data's order: `config.data_seed`, or `config.seed` when None."""
  return config.seed if config.get("data_seed") is None else config.data_seed


def train_batches(config, arrays, micro: int, position: DataPosition, buckets, put, stats):
  """Endless (sharded micro-batch, data position after it as JSON) from `position` on:
  shuffled full-length batches (`buckets` None), or bucketed ones whose position counts the
  micro-batches of the epoch. The order is `config.data_seed`'s (None: `config.seed`'s)."""
  keys = MODEL_INPUTS + TARGETS
  seed = data_seed(config)
  if buckets is None:
    length = arrays["input_ids"].shape[-1]
    for idx, after in shuffled_batches(len(arrays["input_ids"]), micro, seed, position):
      stats.add(idx, length)
      yield put(gather(arrays, keys, idx)), after.to_json()
    return
  lengths = batching.row_lengths(arrays["attention_mask"])
  stream = batching.bucketed_batches(lengths, micro, seed, buckets, position.epoch, position.index)
  for batch, epoch, index in stream:
    stats.add(batch.indices, batch.length, batch.weights)
    yield put(batching.take(arrays, batch, keys)), DataPosition(epoch, index).to_json()
