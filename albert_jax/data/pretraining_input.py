"""The pretraining input pipeline: checked shards -> deterministic, resumable batches.

Reads the output of `create_pretraining_data` (`albert_jax.data.pretraining`: shards plus
`manifest.json`) by random access and yields numpy batches with the keys `albert_jax.train`
expects (Google's feature names mapped: input_mask -> attention_mask, segment_ids ->
token_type_ids, next_sentence_labels [B, 1] -> sentence_order_label [B]).

Checks, all before any compute (`open_shards`): the manifest exists and lists files; every file
exists and has exactly the manifest's number of records (for TFRecord: a walk over the record
headers, with their CRCs, that must end exactly at the end of the file); the first record of each
file parses; optionally each file's sha256 equals the manifest's (`verify_checksums`, a full
read); the data's `max_seq_length` / `max_predictions_per_seq` equal the run's; its vocabulary
fits the model's.

Order. Process p of P reads the files p, p + P, p + 2P, ... of the split (per-process sharding
of the record files; a split needs at least P files). Epoch e of process p: its files in an order
drawn from (seed, e, p), cut into windows of `shuffle_window` files, and the examples of each
window in an order drawn from (seed, e, p, window). So the order is a pure function of
(seed, epoch, process), memory is bounded by one window, and a position (epoch, index) -- index =
examples of the epoch already read -- restarts the stream exactly: the batch after a restore is
the batch an uninterrupted run would have read. Every process makes the same number of batches
per epoch (the least any process can fill, `steps_per_epoch`); the examples past that are left
out of this epoch only, since the next epoch draws a new order.

Dynamic masking (optional): from epoch 1 on, every example is re-masked with
`albert_jax.data.pretraining.mask_tokens` (the generation's masked_lm_prob, ngram and
max_predictions_per_seq) from the unmasked ids, with a generator seeded by (seed, epoch, file,
record); epoch 0 uses the masks written in the data.

Evaluation (`eval_batches`): every example of the process's files once, in file order, the last
batch padded with `example_weight` 0.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import mmap
import os
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from albert_jax.data.pretraining import (
  FEATURE_NAMES,
  PretrainingDataError,
  load_manifest,
  mask_tokens,
  original_input_ids,
)
from albert_jax.trainer.order import DataPosition

Batch = dict[str, np.ndarray]

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


class PretrainingInputError(PretrainingDataError):
  """Pretraining data that cannot be used for this run; the message names the culprit."""


# --------------------------------------------------------------------------------------------
# Record files with random access


def _crc32c_table() -> np.ndarray:
  table = np.arange(256, dtype=np.uint32)
  for _ in range(8):
    table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1)
  return table.astype(np.uint32)


_CRC32C_TABLE = _crc32c_table()


def _masked_crc32c_N(data_NK: np.ndarray) -> np.ndarray:
  """TFRecord's masked CRC-32C of each row of `data_NK` (uint8), vectorized over rows."""
  crc_N = np.full(data_NK.shape[0], 0xFFFFFFFF, dtype=np.uint32)
  for k in range(data_NK.shape[1]):
    crc_N = _CRC32C_TABLE[(crc_N ^ data_NK[:, k]) & 0xFF] ^ (crc_N >> 8)
  crc_N = crc_N ^ np.uint32(0xFFFFFFFF)
  return (((crc_N >> 15) | (crc_N << 17)) + np.uint32(0xA282EAD8)).astype(np.uint32)


class TFRecordFile:
  """A TFRecord file indexed by record: `read(i)` is one slice of a memory map.

  Opening walks the record headers (length, CRC of the length) and checks that they are
  intact and end exactly at the end of the file; the payload CRCs are not checked (a corrupt
  payload fails to parse, or is caught by `verify_checksums`).
  """

  def __init__(self, path: str):
    self.path = path
    with open(path, "rb") as f:
      size = os.fstat(f.fileno()).st_size
      self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    offsets, lengths, headers = [], [], []
    position = 0
    while position < size:
      if position + 12 > size:
        raise self._error(f"a record header at byte {position} is cut off")
      (length,) = struct.unpack_from("<Q", self._map, position)
      if position + 16 + length > size:
        raise self._error(f"the record at byte {position} claims {length} bytes, past the end")
      headers.append(self._map[position : position + 12])
      offsets.append(position + 12)
      lengths.append(length)
      position += 16 + length
    if headers:
      header_N12 = np.frombuffer(b"".join(headers), dtype=np.uint8).reshape(-1, 12)
      stored_N = header_N12[:, 8:].copy().view("<u4")[:, 0]
      bad_N = _masked_crc32c_N(header_N12[:, :8]) != stored_N
      if bad_N.any():
        raise self._error(f"record {int(np.argmax(bad_N))} has a corrupt header (CRC mismatch)")
    self.offsets = np.asarray(offsets, dtype=np.int64)
    self.lengths = np.asarray(lengths, dtype=np.int64)

  def _error(self, what: str) -> PretrainingInputError:
    return PretrainingInputError(
      f"{self.path!r} is not a readable TFRecord file: {what}. The file is truncated or "
      "corrupt; regenerate the data with create_pretraining_data (or restore the file)"
    )

  def __len__(self) -> int:
    return len(self.offsets)

  def read(self, indices: Sequence[int]) -> list[bytes]:
    return [bytes(self._map[self.offsets[i] : self.offsets[i] + self.lengths[i]]) for i in indices]


class ArrayRecordFile:
  """An ArrayRecord file (random access is native to the format)."""

  def __init__(self, path: str):
    from array_record.python.array_record_module import ArrayRecordReader

    self.path = path
    try:
      self._reader = ArrayRecordReader(path, "readahead_buffer_size:0")
      self._num_records = int(self._reader.num_records())
    except Exception as e:  # the reader raises bare RuntimeErrors/ValueErrors on bad files
      raise PretrainingInputError(
        f"{path!r} is not a readable ArrayRecord file ({e}); regenerate the data"
      ) from e

  def __len__(self) -> int:
    return self._num_records

  def read(self, indices: Sequence[int]) -> list[bytes]:
    return list(self._reader.read([int(i) for i in indices]))


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


@functools.cache
def _tensorflow() -> Any:
  """TensorFlow for parsing records, kept off the GPUs (they belong to JAX)."""
  import tensorflow as tf

  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # TF's devices were initialized before: too late to hide them
    pass
  return tf


# --------------------------------------------------------------------------------------------
# A checked set of shards


@dataclasses.dataclass
class Shards:
  """Some files of one dataset, opened and checked (see `open_shards`)."""

  directory: str
  manifest: dict[str, Any]
  file_ids: list[int]  # indices into manifest["files"]
  files: list[TFRecordFile | ArrayRecordFile]

  @property
  def counts(self) -> np.ndarray:
    return np.asarray([len(f) for f in self.files], dtype=np.int64)

  @property
  def max_seq_length(self) -> int:
    return int(self.manifest["config"]["max_seq_length"])

  def parse(self, records: Sequence[bytes], where: Sequence[tuple[int, int]]) -> Batch:
    """Serialized examples -> features {name: [B, ...]} (int32, float32 weights)."""
    tf = _tensorflow()

    spec = {
      name: tf.io.FixedLenFeature(s["shape"], getattr(tf, s["dtype"]))
      for name, s in self.manifest["features"].items()
    }
    # A corrupt record makes TF raise InvalidArgumentError, or fail to decode its own message.
    errors = (tf.errors.InvalidArgumentError, UnicodeDecodeError)
    try:
      parsed = tf.io.parse_example(tf.constant(list(records), dtype=tf.string), spec)
    except errors:
      for record, (f, r) in zip(records, where, strict=True):
        try:
          tf.io.parse_example(tf.constant([record], dtype=tf.string), spec)
        except errors:
          raise PretrainingInputError(
            f"record {r} of {self.files[f].path!r} is not a valid pretraining example; the "
            "file is corrupt: regenerate the data (or restore the file)"
          ) from None
      raise
    return {
      name: value.numpy().astype(np.float32 if value.dtype == tf.float32 else np.int32)
      for name, value in parsed.items()
    }

  def read(self, where: Sequence[tuple[int, int]]) -> Batch:
    """The examples at (file position in `files`, record) pairs, as features [B, ...]."""
    records: list[bytes] = [b""] * len(where)
    by_file: dict[int, list[int]] = {}
    for j, (f, _) in enumerate(where):
      by_file.setdefault(f, []).append(j)
    for f, js in by_file.items():
      for j, record in zip(js, self.files[f].read([where[j][1] for j in js]), strict=True):
        records[j] = record
    return self.parse(records, where)


def read_manifest(directory: str) -> dict[str, Any]:
  """The manifest of a generated dataset that exists and lists examples (else a clear error)."""
  if not os.path.isdir(directory):
    raise PretrainingInputError(f"pretraining data directory {directory!r} does not exist")
  manifest = load_manifest(directory)
  if not manifest.get("files") or not manifest.get("num_instances"):
    raise PretrainingInputError(f"{directory!r} holds no examples (its manifest lists none)")
  return manifest


def open_shards(
  directory: str,
  file_ids: Sequence[int] | None = None,
  *,
  max_seq_length: int | None = None,
  max_predictions_per_seq: int | None = None,
  vocab_size: int | None = None,
  verify_checksums: bool = False,
) -> Shards:
  """Opens the files `file_ids` (default: all) of the dataset in `directory` and checks them.

  Raises `PretrainingInputError` (a ValueError) naming the problem: a missing or empty dataset,
  a missing, truncated or corrupt file, a record count that differs from the manifest, a
  max_seq_length / max_predictions_per_seq other than the run's, ids beyond `vocab_size`.
  """
  manifest = read_manifest(directory)
  entries = manifest["files"]
  missing = sorted(set(FEATURE_NAMES) - set(manifest.get("features", {})))
  if missing:
    raise PretrainingInputError(f"{directory!r}: the manifest lacks the features {missing}")
  data = manifest["config"]
  for name, wanted in (
    ("max_seq_length", max_seq_length),
    ("max_predictions_per_seq", max_predictions_per_seq),
  ):
    if wanted is not None and int(data[name]) != wanted:
      raise PretrainingInputError(
        f"the data in {directory!r} has {name}={data[name]} but the run has {name}={wanted}; "
        f"set --config.{name}={data[name]} or regenerate the data with --{name}={wanted}"
      )
  data_vocab = int(manifest.get("vocab", {}).get("vocab_size", 0))
  if vocab_size is not None and data_vocab > vocab_size:
    raise PretrainingInputError(
      f"the data in {directory!r} uses a vocabulary of {data_vocab} ids but the model has "
      f"vocab_size={vocab_size}; use a model with vocab_size >= {data_vocab}"
    )
  ids = list(range(len(entries))) if file_ids is None else [int(i) for i in file_ids]
  opener = {"tfrecord": TFRecordFile, "arrayrecord": ArrayRecordFile}.get(manifest["format"])
  if opener is None:
    raise PretrainingInputError(f"{directory!r} has unknown format {manifest['format']!r}")
  files = []
  for i in ids:
    entry = entries[i]
    path = os.path.join(directory, entry["path"])
    if not os.path.isfile(path):
      raise PretrainingInputError(
        f"{path!r}, listed in {directory!r}/manifest.json, does not exist; copy the whole "
        "directory or regenerate the data"
      )
    if verify_checksums and _sha256(path) != entry["sha256"]:
      raise PretrainingInputError(
        f"{path!r} differs from the file that was written (sha256 mismatch with the manifest): "
        "it is corrupt; regenerate the data or restore the file"
      )
    record_file = opener(path)
    if len(record_file) != int(entry["num_instances"]):
      raise PretrainingInputError(
        f"{path!r} holds {len(record_file)} records but the manifest says "
        f"{entry['num_instances']}: the file is truncated or corrupt; regenerate the data"
      )
    files.append(record_file)
  shards = Shards(directory, manifest, ids, files)
  for f, record_file in enumerate(files):  # every file's first example must parse
    if len(record_file):
      shards.read([(f, 0)])
  return shards


def split_files(num_files: int, num_holdout: int) -> tuple[list[int], list[int]]:
  """(training, held-out) file indices: the last `num_holdout` files are held out."""
  if not 0 <= num_holdout < num_files:
    raise PretrainingInputError(
      f"cannot hold out {num_holdout} of {num_files} files for evaluation; hold out fewer, or "
      "give a separate eval_data directory"
    )
  return list(range(num_files - num_holdout)), list(range(num_files - num_holdout, num_files))


def process_files(file_ids: Sequence[int], process_index: int, process_count: int) -> list[int]:
  """Files read by process `process_index` of `process_count`: every `process_count`-th."""
  if len(file_ids) < process_count:
    raise PretrainingInputError(
      f"{len(file_ids)} data files cannot be shared by {process_count} processes: regenerate "
      f"the data with --num_shards >= {process_count} (a multiple of {process_count} is best)"
    )
  return list(file_ids)[process_index::process_count]


def to_batch(features: Batch) -> Batch:
  """Google's feature names -> `albert_jax.train`'s batch keys (the SOP label as [B])."""
  batch = {BATCH_KEYS[name]: value for name, value in features.items()}
  batch["sentence_order_label"] = batch["sentence_order_label"].reshape(-1)
  return batch


# --------------------------------------------------------------------------------------------
# Training batches


def check_vocabulary(manifest: dict[str, Any], directory: str, vocab_file: str | None) -> None:
  """Raises unless `vocab_file` (None = the bundled 30k-clean model) is the vocabulary the data
  in `directory` was made with (by the sha256 its manifest records, when it records one)."""
  from albert_jax.tokenizer import bundled_model_path

  path = str(bundled_model_path() if vocab_file is None else vocab_file)
  vocab = manifest.get("vocab", {})
  if not vocab.get("sha256"):
    return
  with open(path, "rb") as f:
    if hashlib.sha256(f.read()).hexdigest() != vocab["sha256"]:
      raise PretrainingInputError(
        f"the data in {directory!r} was made with another vocabulary ({vocab.get('file')!r}) "
        f"than {path!r}; set config.vocab_file to the SentencePiece model the data was made with"
      )


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
      raise PretrainingInputError(
        f"batch_size={batch_size} and steps_per_epoch={steps_per_epoch} must be >= 1"
      )
    if steps_per_epoch * batch_size > int(shards.counts.sum()):
      raise PretrainingInputError(
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
      raise PretrainingInputError(f"{position} is past the last full batch of its epoch")
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
    raise PretrainingInputError(
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
