"""A resumable example order: where a run stands in its stream of examples.

Epoch e visits the examples in the order `epoch_permutation(n, seed, e)`; a `DataPosition`
(epoch, index) says where the next batch starts, so a restored run reads exactly the batches
an uninterrupted run would have read. Saved with every checkpoint, together with a
fingerprint of the training data (`data_fingerprint`): resuming on different data is refused
(`resume_position`), or with allow_data_change=True restarts the epoch at (epoch, 0).
"""

from __future__ import annotations

import dataclasses
import hashlib
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


def data_fingerprint(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """{"examples", "sha256"} of the training feature arrays (every array's name, shape, dtype
  and bytes): a changed file, split, tokenizer or featurization changes it."""
  digest = hashlib.sha256()
  for name in sorted(arrays):
    a = np.ascontiguousarray(arrays[name])
    digest.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
    digest.update(a.tobytes())
  first = next(iter(arrays.values()), np.zeros(0))
  return {"examples": int(len(first)), "sha256": digest.hexdigest()}


def resume_position(
  saved: Mapping[str, Any] | None, fingerprint: Mapping[str, Any], allow_data_change: bool
) -> DataPosition:
  """Where a restored run continues: the saved position if the data is the same one."""
  if not saved:
    return DataPosition()
  position = DataPosition.from_json(saved)
  before = saved.get("data")  # None: a checkpoint from before fingerprints were saved
  if before is None or dict(before) == dict(fingerprint):
    return position
  if allow_data_change:
    return DataPosition(position.epoch, 0)
  raise UserError(
    f"The training data changed since the checkpoint was saved ({before['examples']} examples, "
    f"sha256 {before['sha256'][:12]}... then; {fingerprint['examples']}, "
    f"{fingerprint['sha256'][:12]}... now). Restore the data, or pass "
    "--config.allow_data_change=True to continue on the new data from the start of epoch "
    f"{position.epoch}, or start a new run in another --workdir."
  )


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
  if not 0 <= index < num_examples:
    raise UserError(
      f"Data position {index} is outside the {num_examples} training examples: the data "
      "changed since the checkpoint; see allow_data_change."
    )
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
