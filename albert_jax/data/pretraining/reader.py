"""Reading a generated dataset: its manifest, checked shards, and the one record parser.

Checks, all before any compute (`open_shards`): the manifest exists and lists files; every file
exists and has exactly the manifest's number of records (for TFRecord: a walk over the record
headers, with their CRCs, that must end exactly at the end of the file); the first record of each
file parses; optionally each file's sha256 equals the manifest's (`verify_checksums`, a full
read); the data's `max_seq_length` / `max_predictions_per_seq` equal the run's; its vocabulary
fits the model's.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from albert_jax import files
from albert_jax.data.pretraining.config import PretrainingDataError
from albert_jax.data.pretraining.records import (
  FEATURE_NAMES,
  MANIFEST_NAME,
  MANIFEST_VERSION,
  RECORD_FILES,
  ArrayRecordFile,
  TFRecordFile,
)

Batch = dict[str, np.ndarray]


def read_manifest(directory: str) -> dict[str, Any]:
  """The manifest of a generated dataset that exists and lists examples (else a clear error)."""
  if not os.path.isdir(directory):
    raise PretrainingDataError(f"pretraining data directory {directory!r} does not exist")
  path = os.path.join(directory, MANIFEST_NAME)
  if not os.path.isfile(path):
    raise PretrainingDataError(
      f"{directory!r} has no {MANIFEST_NAME}; is it an output of create_pretraining_data?"
    )
  with open(path, encoding="utf-8") as f:
    manifest = json.load(f)
  if manifest.get("version") != MANIFEST_VERSION:
    raise PretrainingDataError(
      f"{path!r} has manifest version {manifest.get('version')!r}, expected {MANIFEST_VERSION}"
    )
  if not manifest.get("files") or not manifest.get("num_instances"):
    raise PretrainingDataError(f"{directory!r} holds no examples (its manifest lists none)")
  return manifest


def fingerprint(manifest: dict[str, Any], file_ids: Sequence[int]) -> dict[str, Any]:
  """{"examples", "sha256"} of the files `file_ids` as the manifest records them (each file's
  name, instance count and sha256, which the writer computed from its bytes): saved with the
  data position, so a resumed run knows whether its data is the same (`data.order`)."""
  entries = [manifest["files"][i] for i in file_ids]
  listed = [(e["path"], int(e["num_instances"]), e.get("sha256")) for e in entries]
  digest = hashlib.sha256(json.dumps(listed).encode())
  return {"examples": sum(n for _, n, _ in listed), "sha256": digest.hexdigest()}


@functools.cache
def _tensorflow() -> Any:
  """TensorFlow for parsing records, kept off the GPUs (they belong to JAX)."""
  import tensorflow as tf

  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # TF's devices were initialized before: too late to hide them
    pass
  return tf


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
    """Serialized examples -> features {name: [B, ...]} (int32, float32 weights).

    `where`: the (file position in `files`, record) of each, to name a corrupt one.
    """
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
          raise PretrainingDataError(
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

  Raises `PretrainingDataError` (a UserError) naming the problem: a missing or empty dataset,
  a missing, truncated or corrupt file, a record count that differs from the manifest, a
  max_seq_length / max_predictions_per_seq other than the run's, ids beyond `vocab_size`.
  """
  manifest = read_manifest(directory)
  entries = manifest["files"]
  missing = sorted(set(FEATURE_NAMES) - set(manifest.get("features", {})))
  if missing:
    raise PretrainingDataError(f"{directory!r}: the manifest lacks the features {missing}")
  data = manifest["config"]
  for name, wanted in (
    ("max_seq_length", max_seq_length),
    ("max_predictions_per_seq", max_predictions_per_seq),
  ):
    if wanted is not None and int(data[name]) != wanted:
      raise PretrainingDataError(
        f"the data in {directory!r} has {name}={data[name]} but the run has {name}={wanted}; "
        f"set --config.{name}={data[name]} or regenerate the data with --{name}={wanted}"
      )
  data_vocab = int(manifest.get("vocab", {}).get("vocab_size", 0))
  if vocab_size is not None and data_vocab > vocab_size:
    raise PretrainingDataError(
      f"the data in {directory!r} uses a vocabulary of {data_vocab} ids but the model has "
      f"vocab_size={vocab_size}; use a model with vocab_size >= {data_vocab}"
    )
  ids = list(range(len(entries))) if file_ids is None else [int(i) for i in file_ids]
  opener = RECORD_FILES.get(manifest["format"])
  if opener is None:
    raise PretrainingDataError(f"{directory!r} has unknown format {manifest['format']!r}")
  record_files = []
  for i in ids:
    entry = entries[i]
    path = os.path.join(directory, entry["path"])
    if not os.path.isfile(path):
      raise PretrainingDataError(
        f"{path!r}, listed in {directory!r}/manifest.json, does not exist; copy the whole "
        "directory or regenerate the data"
      )
    if verify_checksums and files.sha256(path) != entry["sha256"]:
      raise PretrainingDataError(
        f"{path!r} differs from the file that was written (sha256 mismatch with the manifest): "
        "it is corrupt; regenerate the data or restore the file"
      )
    record_file = opener(path)
    if len(record_file) != int(entry["num_instances"]):
      raise PretrainingDataError(
        f"{path!r} holds {len(record_file)} records but the manifest says "
        f"{entry['num_instances']}: the file is truncated or corrupt; regenerate the data"
      )
    record_files.append(record_file)
  shards = Shards(directory, manifest, ids, record_files)
  for f, record_file in enumerate(record_files):  # every file's first example must parse
    if len(record_file):
      shards.read([(f, 0)])
  return shards


def read_pretraining_dataset(directory: str, block: int = 256) -> Iterator[dict[str, np.ndarray]]:
  """Yields every example of a generated dataset (any format), shard by shard, as a dict of
  numpy arrays: int32 features and float32 `masked_lm_weights`, shapes as in the manifest.

  `block`: records parsed at a time."""
  shards = open_shards(directory)
  for f, count in enumerate(shards.counts.tolist()):
    for start in range(0, count, block):
      features = shards.read([(f, r) for r in range(start, min(start + block, count))])
      for b in range(len(features["input_ids"])):
        yield {name: value[b] for name, value in features.items()}


def split_files(num_files: int, num_holdout: int) -> tuple[list[int], list[int]]:
  """(training, held-out) file indices: the last `num_holdout` files are held out."""
  if not 0 <= num_holdout < num_files:
    raise PretrainingDataError(
      f"cannot hold out {num_holdout} of {num_files} files for evaluation; hold out fewer, or "
      "give a separate eval_data directory"
    )
  return list(range(num_files - num_holdout)), list(range(num_files - num_holdout, num_files))


def process_files(file_ids: Sequence[int], process_index: int, process_count: int) -> list[int]:
  """Files read by process `process_index` of `process_count`: every `process_count`-th."""
  if len(file_ids) < process_count:
    raise PretrainingDataError(
      f"{len(file_ids)} data files cannot be shared by {process_count} processes: regenerate "
      f"the data with --num_shards >= {process_count} (a multiple of {process_count} is best)"
    )
  return list(file_ids)[process_index::process_count]


def check_vocabulary(manifest: dict[str, Any], directory: str, vocab_file: str | None) -> None:
  """Raises unless `vocab_file` (None = the bundled 30k-clean model) is the vocabulary the data
  in `directory` was made with (by the sha256 its manifest records, when it records one)."""
  from albert_jax.tokenizer import bundled_model_path

  path = str(bundled_model_path() if vocab_file is None else vocab_file)
  vocab = manifest.get("vocab", {})
  if not vocab.get("sha256"):
    return
  if files.sha256(path) != vocab["sha256"]:
    raise PretrainingDataError(
      f"the data in {directory!r} was made with another vocabulary ({vocab.get('file')!r}) "
      f"than {path!r}; set config.vocab_file to the SentencePiece model the data was made with"
    )


def original_input_ids(example: dict[str, np.ndarray]) -> np.ndarray:
  """The unmasked ids [L] of a written example (masked_lm_ids put back at their positions), to
  re-mask it on the fly with `mask_tokens`."""
  ids_L = np.array(example["input_ids"], copy=True)
  real_P = np.asarray(example["masked_lm_weights"]) > 0
  positions_P = np.asarray(example["masked_lm_positions"])
  ids_L[positions_P[real_P]] = np.asarray(example["masked_lm_ids"])[real_P]
  return ids_L
