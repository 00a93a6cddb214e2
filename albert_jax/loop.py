"""Training-loop pieces shared by the entry points: a resumable example order and reporting.

- `DataPosition` / `shuffled_batches`: epoch e visits the examples in the order
  `epoch_permutation(n, seed, e)`; a position (epoch, index) says where the next batch starts,
  so a restored run reads exactly the batches an uninterrupted run would have read.
- `Reporter`: a tqdm progress bar (loss, steps/s, ETA) and TensorBoard scalars (tensorboardX).
- `is_due`: "every N steps, and at the last step".
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np


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
    raise ValueError("No training examples: check the training data file or split.")
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


def is_due(step: int, every: int | None, last: int) -> bool:
  """True every `every` steps (never if `every` is falsy) and at step `last`."""
  return step == last or bool(every) and step % every == 0


class Reporter:
  """Progress bar on stderr and TensorBoard event files in `logdir`."""

  def __init__(
    self,
    logdir: str | os.PathLike,
    total_steps: int,
    initial_step: int = 0,
    desc: str = "train",
    enabled: bool = True,
  ):
    from tensorboardX import SummaryWriter  # imported here: only runs that report need it
    from tqdm.auto import tqdm

    # Disabled (other processes of a multi-host run): counts steps, shows and writes nothing.
    self._writer = SummaryWriter(os.fspath(logdir)) if enabled else None
    self._bar = tqdm(
      total=total_steps,
      initial=initial_step,
      desc=desc,
      unit="step",
      dynamic_ncols=True,
      disable=not enabled,
    )
    self._step = initial_step

  @property
  def step(self) -> int:
    """Steps done so far (`initial_step` plus those `advance` counted)."""
    return self._step

  def advance(self, steps: int = 1) -> None:
    self._step += steps
    self._bar.update(steps)

  def scalars(self, step: int, metrics: Mapping[str, float], prefix: str = "") -> None:
    """Writes `metrics` to TensorBoard as `prefix/name`; train metrics also go to the bar."""
    if self._writer is None:
      return
    for name, value in metrics.items():
      self._writer.add_scalar(f"{prefix}/{name}" if prefix else name, float(value), step)
    if prefix == "train":
      self._bar.set_postfix(
        {k: f"{float(v):.4g}" for k, v in metrics.items() if k in ("loss", "lr")}
      )
    self._writer.flush()

  def write(self, line: str) -> None:
    """Prints a line without breaking the progress bar."""
    self._bar.write(line)

  def close(self) -> None:
    self._bar.close()
    if self._writer is not None:
      self._writer.close()
