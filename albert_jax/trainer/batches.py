"""The training batches of a fine-tuning run, and the bucket lengths they are cut to.

`choose_buckets` picks the lengths once from every split's feature lengths; `record_buckets`
keeps them in the workdir (a resumed run must get the same); `train_batches` streams the
sharded micro-batches with the data position after each; `BatchStats` counts what they
computed (padding share, compiled shapes) for the log.
"""

from __future__ import annotations

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


def gather(arrays: Mapping[str, np.ndarray], keys, idx: np.ndarray) -> dict[str, np.ndarray]:
  return {k: arrays[k][idx] for k in keys if k in arrays}


def choose_buckets(config, train_arrays, eval_sets: list) -> tuple[int, ...] | None:
  """The bucket lengths of a `batching="bucket"` run, from every split's feature lengths
  (None for "max_length")."""
  if config.batching == "max_length":
    return None
  masks = [
    train_arrays["attention_mask"],
    *(e.features.arrays["attention_mask"] for e in eval_sets),
  ]
  lengths = np.concatenate([batching.row_lengths(m) for m in masks])
  return batching.choose_buckets(
    lengths, config.max_buckets, config.bucket_multiple, max_length=config.max_seq_length
  )


def record_buckets(workdir: str, buckets: tuple[int, ...] | None) -> None:
  """Writes buckets.json, or checks a resumed run's buckets against it."""
  if buckets is None:
    return
  path = os.path.join(workdir, "buckets.json")
  if os.path.exists(path):
    with open(path) as f:
      saved = tuple(json.load(f)["buckets"])
    if saved != buckets:
      raise UserError(
        f"Workdir {workdir} was trained with bucket lengths {list(saved)}, but this data gives "
        f"{list(buckets)}: the training or eval data changed. Resume with the same data, or "
        "pass another --workdir."
      )
    return
  write_json(path, {"buckets": list(buckets)}, main_only=True)


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
