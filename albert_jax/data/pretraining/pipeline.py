"""The pretraining input pipeline: checked shards -> deterministic, resumable batches.

Yields numpy batches with the keys `albert_jax.train` expects (Google's feature names mapped:
input_mask -> attention_mask, segment_ids -> token_type_ids, next_sentence_labels [B, 1] ->
sentence_order_label [B]) from shards opened and checked by `reader.open_shards`.

Order. Process p of P reads the files p, p + P, p + 2P, ... of the split (per-process sharding
of the record files, `reader.process_files`; a split needs at least P files). Epoch e of
process p: its files in an order drawn from (seed, e, p), cut into windows of `shuffle_window`
files, and the examples of each window in an order drawn from (seed, e, p, window). So the
order is a pure function of (seed, epoch, process), memory is bounded by one window, and a
position (epoch, index) -- index = examples of the epoch already read -- restarts the stream
exactly: the batch after a restore is the batch an uninterrupted run would have read. Every
process makes the same number of batches per epoch (the least any process can fill,
`steps_per_epoch`); the examples past that are left out of this epoch only, since the next
epoch draws a new order.

Dynamic masking (optional): from epoch 1 on, every example is re-masked with
`masking.mask_tokens` (the generation's masked_lm_prob, ngram and max_predictions_per_seq)
from the unmasked ids, with a generator seeded by (seed, epoch, file, record); epoch 0 uses the
masks written in the data.

Evaluation (`eval_batches`): every example of the process's files once, in file order, the last
batch padded with `example_weight` 0.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from albert_jax.data.order import DataPosition
from albert_jax.data.pretraining.config import PretrainingDataError
from albert_jax.data.pretraining.masking import mask_tokens
from albert_jax.data.pretraining.reader import Batch, Shards, check_vocabulary, original_input_ids

# Google's feature names -> the batch keys of `albert_jax.train`.
BATCH_KEYS = {
  "input_ids": "input_ids",
  "input_mask": "attention_mask",
  "segment_ids": "token_type_ids",
  "masked_lm_positions": "masked_lm_positions",
  "masked_lm_ids": "masked_lm_ids",
  "masked_lm_weights": "masked_lm_weights",
  "next_sentence_labels": "sentence_order_label",
}
_ORDER_STREAM, _MASK_STREAM = 0, 1  # SeedSequence spawn keys: file/example order, re-masking


def to_batch(features: Batch) -> Batch:
  """Google's feature names -> `albert_jax.train`'s batch keys (the SOP label as [B])."""
  batch = {BATCH_KEYS[name]: value for name, value in features.items()}
  batch["sentence_order_label"] = batch["sentence_order_label"].reshape(-1)
  return batch


class _Remasker:
  """Re-draws the masks of examples (dynamic masking) with the generation's parameters."""

  def __init__(self, manifest: dict[str, Any], vocab_file: str | None):
    from albert_jax.tokenizer import AlbertTokenizer

    tokenizer = AlbertTokenizer(vocab_file)
    vocab = manifest.get("vocab", {})
    self.pieces_V = np.asarray(tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size))))
    self.mask_token_id = tokenizer.mask_token_id
    self.vocab_size = int(vocab.get("vocab_size", tokenizer.vocab_size))
    self.config = manifest["config"]

  def __call__(self, features: Batch, rngs: Sequence[np.random.Generator]) -> Batch:
    out = {k: v.copy() for k, v in features.items()}
    for b, rng in enumerate(rngs):
      example = {k: v[b] for k, v in features.items()}
      length = int(example["input_mask"].sum())
      ids_T = original_input_ids(example)[:length]
      masked = mask_tokens(
        self.pieces_V[ids_T].tolist(),
        ids_T,
        rng,
        vocab_size=self.vocab_size,
        masked_lm_prob=float(self.config["masked_lm_prob"]),
        max_predictions_per_seq=int(self.config["max_predictions_per_seq"]),
        ngram=int(self.config["ngram"]),
        mask_token_id=self.mask_token_id,
      )
      out["input_ids"][b, :length] = masked.input_ids
      out["masked_lm_positions"][b] = masked.masked_lm_positions
      out["masked_lm_ids"][b] = masked.masked_lm_ids
      out["masked_lm_weights"][b] = masked.masked_lm_weights
    return out


class TrainBatches:
  """Endless training batches of one process, resumable from a `DataPosition`.

  One consumer: `next()` from one thread (batches are read ahead on a background thread).

  Args:
    shards: this process's files (`open_shards(directory, process_files(...))`).
    batch_size: examples per batch of this process (the global batch / process count).
    steps_per_epoch: batches per epoch, the same on every process (`steps_per_epoch`).
    seed: the data seed; with (epoch, process_index) it decides the order.
    process_index: this process (it seeds the order).
    shuffle_window: files whose examples are shuffled together (memory: 16 bytes per example
      of a window); the order of the files is shuffled too. 0 = all files of the process.
    shuffle: False reads in file order (for debugging).
    dynamic_masking: re-mask from epoch 1 on (see the module docstring).
    vocab_file: the SentencePiece model of the data (None = the bundled one); for re-masking.
    start: where to begin.
    prefetch: batches read ahead on a background thread.
  """

  def __init__(
    self,
    shards: Shards,
    batch_size: int,
    steps_per_epoch: int,
    *,
    seed: int = 0,
    process_index: int = 0,
    shuffle_window: int = 16,
    shuffle: bool = True,
    dynamic_masking: bool = False,
    vocab_file: str | None = None,
    start: DataPosition | None = None,
    prefetch: int = 2,
  ):
    if batch_size < 1 or steps_per_epoch < 1:
      raise PretrainingDataError(
        f"batch_size={batch_size} and steps_per_epoch={steps_per_epoch} must be >= 1"
      )
    if steps_per_epoch * batch_size > int(shards.counts.sum()):
      raise PretrainingDataError(
        f"steps_per_epoch={steps_per_epoch} batches of {batch_size} need more examples than the "
        f"{int(shards.counts.sum())} of these files (see `steps_per_epoch`)"
      )
    self.shards, self.batch_size, self.steps_per_epoch = shards, batch_size, steps_per_epoch
    self.seed, self.process_index = seed, process_index
    self.shuffle_window = shuffle_window or len(shards.files)
    self.shuffle = shuffle
    self._remask = None
    if dynamic_masking:
      check_vocabulary(shards.manifest, shards.directory, vocab_file)
      self._remask = _Remasker(shards.manifest, vocab_file)
    self._window_cache: dict[tuple[int, int], np.ndarray] = {}
    self._position = start or DataPosition()
    self._executor = concurrent.futures.ThreadPoolExecutor(1) if prefetch else None
    self._prefetch = prefetch
    self._pending: list[tuple[DataPosition, concurrent.futures.Future]] = []

  def seek(self, position: DataPosition) -> None:
    """Makes `position` the start of the next batch (e.g. a restored checkpoint's)."""
    self._position = position

  @property
  def position(self) -> DataPosition:
    """Where the next batch starts: (epoch, examples of that epoch already read)."""
    return self._position

  def _rng(self, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(_ORDER_STREAM, *key)))

  def _epoch_windows(self, epoch: int) -> list[np.ndarray]:
    num_files = len(self.shards.files)
    if self.shuffle:
      order = self._rng(epoch, self.process_index).permutation(num_files)
    else:
      order = np.arange(num_files)
    w = self.shuffle_window
    return [order[i : i + w] for i in range(0, num_files, w)]

  def _window_order(self, epoch: int, window: int, files_F: np.ndarray) -> np.ndarray:
    """[(file, record)] of one window in its epoch order, as an [n, 2] array (cached)."""
    key = (epoch, window)
    if key not in self._window_cache:
      counts_F = self.shards.counts[files_F]
      file_N = np.repeat(files_F, counts_F)
      first_F = np.cumsum(counts_F) - counts_F
      record_N = np.arange(int(counts_F.sum())) - np.repeat(first_F, counts_F)
      pairs_N2 = np.stack([file_N, record_N], axis=1)
      if self.shuffle:
        pairs_N2 = pairs_N2[self._rng(epoch, self.process_index, window).permutation(len(file_N))]
      if len(self._window_cache) >= 2:
        self._window_cache.pop(next(iter(self._window_cache)))
      self._window_cache[key] = pairs_N2
    return self._window_cache[key]

  def where(self, position: DataPosition) -> list[tuple[int, int]]:
    """The (file, record) pairs of the batch starting at `position` (must fit in its epoch)."""
    if position != self._in_epoch(position):
      raise PretrainingDataError(f"{position} is past the last full batch of its epoch")
    windows = self._epoch_windows(position.epoch)
    sizes = np.asarray([int(self.shards.counts[w].sum()) for w in windows])
    starts = np.concatenate([[0], np.cumsum(sizes)])
    out: list[tuple[int, int]] = []
    index = position.index
    while len(out) < self.batch_size:
      window = int(np.searchsorted(starts, index, side="right") - 1)
      order_N2 = self._window_order(position.epoch, window, windows[window])
      take = order_N2[index - starts[window] : index - starts[window] + self.batch_size - len(out)]
      out.extend((int(f), int(r)) for f, r in take)
      index += len(take)
    return out

  def batch_at(self, position: DataPosition) -> Batch:
    """The batch starting at `position` (a pure function of the position and the settings)."""
    where = self.where(position)
    features = self.shards.read(where)
    if self._remask is not None and position.epoch > 0:
      epoch, file_ids = position.epoch, self.shards.file_ids
      rngs = [
        np.random.default_rng(
          np.random.SeedSequence(self.seed, spawn_key=(_MASK_STREAM, epoch, file_ids[f], r))
        )
        for f, r in where
      ]
      features = self._remask(features, rngs)
    return to_batch(features)

  def _in_epoch(self, position: DataPosition) -> DataPosition:
    """`position`, or the next epoch's start when its epoch has no full batch left there (as
    after a restore with a bigger batch)."""
    if position.index + self.batch_size > self.steps_per_epoch * self.batch_size:
      return DataPosition(position.epoch + 1, 0)
    return position

  def next_position(self, position: DataPosition) -> DataPosition:
    """Where the batch after the one at `position` starts."""
    position = self._in_epoch(position)
    return self._in_epoch(DataPosition(position.epoch, position.index + self.batch_size))

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    position = self._in_epoch(self._position)
    if self._executor is None:
      batch = self.batch_at(position)
    else:
      if not self._pending or self._pending[0][0] != position:
        self._pending = [(position, self._executor.submit(self.batch_at, position))]
      ahead = self._pending[-1][0]
      while len(self._pending) <= self._prefetch:
        ahead = self.next_position(ahead)
        self._pending.append((ahead, self._executor.submit(self.batch_at, ahead)))
      batch = self._pending.pop(0)[1].result()
    self._position = self.next_position(position)
    return batch

  def close(self) -> None:
    if self._executor is not None:
      self._executor.shutdown(wait=True, cancel_futures=True)
      self._executor = None


def steps_per_epoch(
  manifest: dict[str, Any], file_ids: Sequence[int], process_count: int, batch_size: int
) -> int:
  """Batches per epoch: the least any process can fill from its files (`process_files`)."""
  counts = [int(manifest["files"][i]["num_instances"]) for i in file_ids]
  per_process = [sum(counts[p::process_count]) for p in range(process_count)]
  steps = min(per_process) // batch_size
  if steps < 1:
    raise PretrainingDataError(
      f"a batch of {batch_size} examples per process does not fit the data: the processes hold "
      f"{per_process} examples; use a smaller batch or more data"
    )
  return steps


# --------------------------------------------------------------------------------------------
# Evaluation batches


def eval_batches(
  shards: Shards, batch_size: int, num_batches: int | None = None
) -> Iterator[Batch]:
  """The examples of `shards` in file order, in batches of `batch_size` with `example_weight`
  [B] (1.0, and 0.0 for the copies that pad the last batch). `num_batches`: exactly that many
  batches (all processes must run the same number; `eval_num_batches`), padding or stopping."""
  where = [(f, r) for f, count in enumerate(shards.counts) for r in range(int(count))]
  total = -(-len(where) // batch_size) if num_batches is None else num_batches
  for step in range(total):
    chunk = where[step * batch_size : (step + 1) * batch_size]
    weight_B = np.zeros(batch_size, np.float32)
    weight_B[: len(chunk)] = 1.0
    padded = chunk + [where[0]] * (batch_size - len(chunk))
    batch = to_batch(shards.read(padded))
    batch["example_weight"] = weight_B
    yield batch


def eval_num_batches(
  manifest: dict[str, Any], file_ids: Sequence[int], process_count: int, batch_size: int
) -> int:
  """Batches for every process to see all of its eval files (the most any process needs)."""
  counts = [int(manifest["files"][i]["num_instances"]) for i in file_ids]
  return max(-(-sum(counts[p::process_count]) // batch_size) for p in range(process_count))
