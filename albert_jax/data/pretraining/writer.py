"""`create_pretraining_data`: text -> instances (in parallel units) -> shards + manifest.

Units: the i-th input file, or the i-th block of `TFDS_DOCS_PER_UNIT` TFDS documents; each is
generated from its own seeded generator (`instances.generate_unit`), so `num_workers` does not
change a single output byte. All instances of a run are held (compactly) before the final
shuffle, drawn from `SeedSequence(seed, spawn_key=(1,))`, as in Google's tool; for a corpus of
billions of tokens run this once per slice of the input files. The shuffled instances are dealt
round-robin into the shards.

The output directory (`records.py` describes its files) is written through
`albert_jax.files.atomic_directory`: it appears complete or not at all. `manifest.json` records
the files with their instance counts and sha256, every generation parameter, the seed, the
vocabulary and text preprocessing, and statistics.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from albert_jax import files
from albert_jax.data.pretraining import corpus, records
from albert_jax.data.pretraining.config import PretrainingDataConfig, PretrainingDataError
from albert_jax.data.pretraining.instances import (
  GenerationStats,
  PretrainingInstance,
  Tokenizer,
  generate_unit,
)

TFDS_DOCS_PER_UNIT = 1000  # TFDS documents per work unit (the unit of seeding and parallelism)
DEFAULT_INSTANCES_PER_SHARD = 50_000  # used when num_shards is not given
_SHUFFLE_STREAM = 1  # SeedSequence spawn key (1,) of the final shuffle

log = logging.getLogger(__name__)


class _Unit(NamedTuple):
  index: int
  path: str | None  # a local file, read by the worker
  documents: list[list[str]] | None  # or the documents themselves (TFDS)


class _UnitResult(NamedTuple):
  instances: list[PretrainingInstance]
  stats: GenerationStats


_worker_state: dict[str, Any] = {}  # per worker process: its tokenizer and the config


def _init_worker(tokenizer_factory: Callable[[], Tokenizer], config: PretrainingDataConfig) -> None:
  _worker_state["tokenizer"] = tokenizer_factory()
  _worker_state["config"] = config


def _run_unit(
  unit: _Unit, tokenizer: Tokenizer | None = None, config: PretrainingDataConfig | None = None
) -> _UnitResult:
  """Generates one unit, with the given tokenizer and config or (in a worker) its own."""
  documents = unit.documents
  if documents is None:
    documents = corpus.read_documents(unit.path or "")
  instances, stats = generate_unit(
    documents,
    unit.index,
    tokenizer or _worker_state["tokenizer"],
    config or _worker_state["config"],
  )
  return _UnitResult(instances, stats)


def _tfds_units(documents: Iterator[list[str]]) -> Iterator[_Unit]:
  block: list[list[str]] = []
  index = 0
  for document in documents:
    block.append(document)
    if len(block) == TFDS_DOCS_PER_UNIT:
      yield _Unit(index, None, block)
      block, index = [], index + 1
  if block:
    yield _Unit(index, None, block)


def _vocab_description(tokenizer: Tokenizer) -> dict[str, Any]:
  vocab: dict[str, Any] = {
    "tokenizer": f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}",
    "vocab_size": int(tokenizer.vocab_size),
  }
  replace_quotes = getattr(tokenizer, "replace_quotes", None)
  if replace_quotes is not None:
    vocab["text_preprocessing"] = "hf" if replace_quotes else "google"
  for attribute in ("vocab_file", "model_file", "spm_model_file"):
    path = getattr(tokenizer, attribute, None)
    if isinstance(path, str | os.PathLike) and os.path.isfile(path):
      vocab["file"] = os.path.basename(os.fspath(path))
      vocab["sha256"] = files.sha256(path)
      break
  return vocab


def _check_output(output_dir: str, overwrite: bool) -> bool:
  """Raises for an output that may not be replaced; True when there is one to replace."""
  if not os.path.exists(output_dir):
    return False
  if not os.path.isdir(output_dir):
    raise PretrainingDataError(f"output {output_dir!r} exists and is not a directory")
  if os.listdir(output_dir) and not overwrite:
    raise PretrainingDataError(
      f"output directory {output_dir!r} is not empty; pass --overwrite to replace it"
    )
  return True


def create_pretraining_data(
  inputs: str | Sequence[str] | None,
  output_dir: str,
  config: PretrainingDataConfig | None = None,
  *,
  tfds_source: corpus.TfdsSource | None = None,
  tokenizer_factory: Callable[[], Tokenizer] = corpus.default_tokenizer,
  num_workers: int = 1,
  num_shards: int | None = None,
  data_format: str = "tfrecord",
  overwrite: bool = False,
  show_progress: bool = True,
) -> dict[str, Any]:
  """Generates a pretraining dataset into `output_dir` and returns its manifest.

  Args:
    inputs: text files, comma-separated or as a list; globs allowed (see
      `corpus.resolve_input_files`). None when `tfds_source` is given.
    output_dir: gets the shards and `manifest.json`; must be absent or empty unless `overwrite`.
    config: generation parameters (`random_seed` included); default Google's.
    tfds_source: a prepared TFDS text dataset instead of `inputs`.
    tokenizer_factory: zero-argument, picklable callable making the tokenizer (run once per
      worker); default: the bundled vocabulary with Google's text preprocessing
      (`corpus.TOKENIZERS`).
    num_workers: processes; > 1 uses a spawn pool over units. Output bytes do not depend on it.
    num_shards: output files; default ceil(instances / 50,000).
    data_format: "tfrecord" or "arrayrecord".
    overwrite: replace a non-empty `output_dir`.
    show_progress: tqdm progress bars.
  """
  from tqdm.auto import tqdm

  config = config or PretrainingDataConfig()
  if (inputs is None) == (tfds_source is None):
    raise PretrainingDataError("give exactly one of input files or a TFDS dataset")
  records.check_format(data_format)
  if num_shards is not None and num_shards < 1:
    raise PretrainingDataError(f"num_shards={num_shards} must be >= 1")
  output_dir = os.path.abspath(output_dir)
  _check_output(output_dir, overwrite)
  if inputs is not None:
    paths = corpus.resolve_input_files(inputs)
    units: Iterable[_Unit] = [_Unit(i, path, None) for i, path in enumerate(paths)]
    total_units: int | None = len(paths)
    source_description: dict[str, Any] = {"files": paths}
  else:
    assert tfds_source is not None
    units = _tfds_units(corpus.tfds_documents(tfds_source))
    total_units = None
    source_description = {"tfds": dataclasses.asdict(tfds_source)}

  tokenizer = tokenizer_factory()
  all_instances: list[PretrainingInstance] = []
  stats = GenerationStats()
  progress = tqdm(total=total_units, unit="file", desc="instances", disable=not show_progress)
  if num_workers > 1:
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(num_workers, initializer=_init_worker, initargs=(tokenizer_factory, config))
    results: Iterable[_UnitResult] = pool.imap(_run_unit, units)
  else:
    pool = None
    results = (_run_unit(unit, tokenizer, config) for unit in units)
  try:
    for result in results:
      all_instances.extend(result.instances)
      stats.add(result.stats)
      progress.update(1)
      progress.set_postfix(instances=len(all_instances))
  finally:
    progress.close()
    if pool is not None:
      pool.terminate()
      pool.join()
  if not all_instances:
    raise PretrainingDataError(
      f"no instance could be made from {source_description}: every document is too short"
    )

  shuffle_rng = np.random.default_rng(
    np.random.SeedSequence(config.random_seed, spawn_key=(_SHUFFLE_STREAM,))
  )
  order = shuffle_rng.permutation(len(all_instances))
  if num_shards is None:
    num_shards = max(1, math.ceil(len(all_instances) / DEFAULT_INSTANCES_PER_SHARD))
  names = [records.shard_name(i, num_shards, data_format) for i in range(num_shards)]
  replace = _check_output(output_dir, overwrite)  # again: it may have appeared meanwhile
  with files.atomic_directory(output_dir, overwrite=replace) as tmp_dir:
    counts = _write_shards(
      [str(tmp_dir / name) for name in names],
      (all_instances[i] for i in order),
      config,
      data_format,
      progress=tqdm(total=len(order), desc="writing", unit="example", disable=not show_progress),
    )
    manifest = {
      "version": records.MANIFEST_VERSION,
      "created_by": "albert_jax.create_pretraining_data",
      "format": data_format,
      "num_instances": len(all_instances),
      "files": [
        {"path": name, "num_instances": count, "sha256": files.sha256(tmp_dir / name)}
        for name, count in zip(names, counts, strict=True)
      ],
      "features": records.feature_spec(config),
      "config": dataclasses.asdict(config),
      "seed": config.random_seed,
      "num_shards": num_shards,
      "vocab": _vocab_description(tokenizer),
      "source": source_description,
      "stats": dataclasses.asdict(stats),
    }
    files.write_json(Path(tmp_dir) / records.MANIFEST_NAME, manifest)
  if stats.skipped_documents:
    log.warning("skipped %d documents too short for an instance", stats.skipped_documents)
  return manifest


def _write_shards(
  paths: Sequence[str],
  instances: Iterable[PretrainingInstance],
  config: PretrainingDataConfig,
  data_format: str,
  progress: Any,
) -> list[int]:
  """Deals `instances` round-robin into new shard files; returns the count of each."""
  writers = [records.open_writer(path, data_format) for path in paths]
  counts = [0] * len(paths)
  try:
    for j, instance in enumerate(instances):
      features = records.instance_to_features(instance, config.max_seq_length)
      writers[j % len(writers)].write(records.serialize_example(features))
      counts[j % len(writers)] += 1
      progress.update(1)
  finally:
    for writer in writers:
      writer.close()
    progress.close()
  return counts
