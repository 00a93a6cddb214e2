"""The files of a pretraining dataset: features, shard names, record files in both directions.

A dataset directory holds `train-SSSSS-of-NNNNN.tfrecord` (tf.train.Example records) or
`.array_record` (ArrayRecord, each record a serialized tf.train.Example) and `manifest.json`.
Features of every example (Google's names; L = max_seq_length, P = max_predictions_per_seq):
  input_ids [L] int64, input_mask [L] int64, segment_ids [L] int64,
  masked_lm_positions [P] int64, masked_lm_ids [P] int64, masked_lm_weights [P] float32,
  next_sentence_labels [1] int64 (the SOP label).
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from albert_jax import crc32c
from albert_jax.data.pretraining.config import PretrainingDataConfig, PretrainingDataError
from albert_jax.data.pretraining.instances import PretrainingInstance

FEATURE_NAMES = (
  "input_ids",
  "input_mask",
  "segment_ids",
  "masked_lm_positions",
  "masked_lm_ids",
  "masked_lm_weights",
  "next_sentence_labels",
)
FORMATS = ("tfrecord", "arrayrecord")
FILE_SUFFIX = {"tfrecord": "tfrecord", "arrayrecord": "array_record"}
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


def feature_spec(config: PretrainingDataConfig) -> dict[str, dict[str, Any]]:
  """Name -> {"shape": [...], "dtype": ...} of the written features."""
  length, predictions = config.max_seq_length, config.max_predictions_per_seq
  shapes = {
    "input_ids": length,
    "input_mask": length,
    "segment_ids": length,
    "masked_lm_positions": predictions,
    "masked_lm_ids": predictions,
    "masked_lm_weights": predictions,
    "next_sentence_labels": 1,
  }
  return {
    name: {"shape": [shapes[name]], "dtype": "float32" if name == "masked_lm_weights" else "int64"}
    for name in FEATURE_NAMES
  }


def shard_name(index: int, num_shards: int, data_format: str) -> str:
  """`train-00000-of-00004.tfrecord` style name of shard `index`."""
  return f"train-{index:05d}-of-{num_shards:05d}.{FILE_SUFFIX[data_format]}"


def check_format(data_format: str) -> None:
  """Raises unless `data_format` is known and its package is installed."""
  if data_format not in FORMATS:
    raise PretrainingDataError(f"format {data_format!r} is not one of {FORMATS}")
  if data_format == "arrayrecord":
    try:
      import array_record.python.array_record_module  # noqa: F401
    except ImportError as e:
      raise PretrainingDataError(
        "format 'arrayrecord' needs the array_record package (pip install array-record); "
        "or use --format=tfrecord"
      ) from e


# --------------------------------------------------------------------------------------------
# Writing


def instance_to_features(
  instance: PretrainingInstance, max_seq_length: int
) -> dict[str, np.ndarray]:
  """Pads one instance to the written features (see the module docstring for shapes)."""
  length = len(instance.input_ids)
  if length > max_seq_length:
    raise ValueError(f"instance of {length} tokens > max_seq_length={max_seq_length}")
  input_ids_L = np.zeros(max_seq_length, dtype=np.int64)
  input_ids_L[:length] = instance.input_ids
  input_mask_L = (np.arange(max_seq_length) < length).astype(np.int64)
  segment_ids_L = input_mask_L * (np.arange(max_seq_length) >= instance.num_first_segment)
  return {
    "input_ids": input_ids_L,
    "input_mask": input_mask_L,
    "segment_ids": segment_ids_L.astype(np.int64),
    "masked_lm_positions": instance.masked_lm_positions.astype(np.int64),
    "masked_lm_ids": instance.masked_lm_ids.astype(np.int64),
    "masked_lm_weights": instance.masked_lm_weights.astype(np.float32),
    "next_sentence_labels": np.asarray([instance.sentence_order_label], dtype=np.int64),
  }


def serialize_example(features: dict[str, np.ndarray]) -> bytes:
  """One tf.train.Example, serialized deterministically."""
  import tensorflow as tf

  feature = {}
  for name in FEATURE_NAMES:
    values = features[name]
    if values.dtype == np.float32:
      feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values.tolist()))
    else:
      feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values.tolist()))
  example = tf.train.Example(features=tf.train.Features(feature=feature))
  return example.SerializeToString(deterministic=True)


class ShardWriter(Protocol):
  def write(self, record: bytes) -> None: ...

  def close(self) -> None: ...


def open_writer(path: str, data_format: str) -> ShardWriter:
  """A record writer for a new shard."""
  if data_format == "tfrecord":
    import tensorflow as tf

    return tf.io.TFRecordWriter(path)
  from array_record.python.array_record_module import ArrayRecordWriter

  return ArrayRecordWriter(path, "group_size:1")


# --------------------------------------------------------------------------------------------
# Reading, by record index


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
      bad_N = crc32c.masked_rows(header_N12[:, :8]) != stored_N
      if bad_N.any():
        raise self._error(f"record {int(np.argmax(bad_N))} has a corrupt header (CRC mismatch)")
    self.offsets = np.asarray(offsets, dtype=np.int64)
    self.lengths = np.asarray(lengths, dtype=np.int64)

  def _error(self, what: str) -> PretrainingDataError:
    return PretrainingDataError(
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
      raise PretrainingDataError(
        f"{path!r} is not a readable ArrayRecord file ({e}); regenerate the data"
      ) from e

  def __len__(self) -> int:
    return self._num_records

  def read(self, indices: Sequence[int]) -> list[bytes]:
    return list(self._reader.read([int(i) for i in indices]))


RECORD_FILES = {"tfrecord": TFRecordFile, "arrayrecord": ArrayRecordFile}
