"""A resumable example order: where a run stands in its stream of examples.

Epoch e visits the examples in the order `epoch_permutation(n, seed, e)`; a `DataPosition`
(epoch, index) says where the next batch starts, so a restored run reads exactly the batches
an uninterrupted run would have read. Saved with every checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from albert_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class DataPosition:
  """Where a run stands in its stream of examples."""

  epoch: int = 0  # the epoch the next batch starts in
  index: int = 0  # how many examples of that epoch's permutation are already used

  def to_json(self) -> dict[str, int]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> DataPosition:
    return cls(epoch=int(d["epoch"]), index=int(d["index"]))


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The order of the examples in `epoch`: a permutation seeded by (seed, epoch) only."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def shuffled_batches(
  num_examples: int, batch_size: int, seed: int, start: DataPosition = DataPosition()
) -> Iterator[tuple[np.ndarray, DataPosition]]:
  """Endless (indices [batch_size], position after the batch) from `start` on.

  Epochs follow each other without a gap: a batch that reaches the end of an epoch is filled
  from the start of the next one, so every batch is full and every example is used once an epoch.
  """
  if num_examples < 1:
    raise UserError("No training examples: check the training data file or split.")
  epoch, index = start.epoch, start.index
  order = epoch_permutation(num_examples, seed, epoch)
  while True:
    parts, need = [], batch_size
    while need:
      take = order[index : index + need]
      parts.append(take)
      need -= len(take)
      index += len(take)
      if index == num_examples:
        epoch, index = epoch + 1, 0
        order = epoch_permutation(num_examples, seed, epoch)
    yield np.concatenate(parts), DataPosition(epoch, index)
