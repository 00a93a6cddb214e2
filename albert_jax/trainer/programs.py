"""A fine-tuning run's step programs, compiled ahead of time once the buckets are chosen.

`compile_ahead` lists every micro-batch shape the train step will get (the buckets the
training batches use, in the order they first come; or the one full length) and every eval
batch shape, and compiles them all concurrently (`albert_jax.compilation.Programs`: train
steps first, then eval steps) while the first batches are prepared and run. Once all are
compiled, one log line says how long it took, how many programs, and how many were read from
the persistent compilation cache (`albert_jax.compilation`).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np

from albert_jax import compilation, sharding
from albert_jax.data import batching
from albert_jax.data.order import DataPosition
from albert_jax.heads import MODEL_INPUTS
from albert_jax.trainer.batches import TARGETS, data_seed, gather

log = logging.getLogger(__name__)
_MAX_PLANNED = 10_000  # micro-batches looked at for the shapes training uses


def batch_key(batch) -> tuple:
  """What tells two batches' programs apart: each key's shape."""
  return tuple(sorted((k, tuple(np.shape(v))) for k, v in batch.items()))


def train_templates(config, arrays, micro: int, position: DataPosition, buckets, remaining: int):
  """One host micro-batch of each shape the next `remaining` training micro-batches have, in
  the order they first come."""
  keys = MODEL_INPUTS + TARGETS
  if buckets is None:
    return [gather(arrays, keys, np.zeros(micro, np.int64))]
  lengths = batching.row_lengths(arrays["attention_mask"])
  stream = batching.bucketed_batches(
    lengths, micro, data_seed(config), buckets, position.epoch, position.index
  )
  seen: list[int] = []
  for _, (batch, _, _) in zip(range(min(remaining, _MAX_PLANNED)), stream, strict=False):
    if batch.length not in seen:
      seen.append(batch.length)
      if len(seen) == len(buckets):
        break
  return [_template(arrays, keys, micro, length) for length in seen]


def eval_templates(eval_sets, batch_size: int, buckets):
  """One host batch of each shape evaluation gives the predict step (`trainer.evaluation`)."""
  templates = {}
  for eval_set in eval_sets:
    arrays = eval_set.features.arrays
    if buckets is None:
      batch = gather(arrays, MODEL_INPUTS, np.zeros(batch_size, np.int64))
      templates.setdefault(batch_key(batch), batch)
      continue
    lengths = batching.row_lengths(arrays["attention_mask"])
    for length in sorted(
      {b.length for b in batching.length_sorted_batches(lengths, batch_size, buckets)}
    ):
      batch = _template(arrays, MODEL_INPUTS, batch_size, length)
      templates.setdefault(batch_key(batch), batch)
  return list(templates.values())


def _template(arrays, keys, rows: int, length: int):
  """A host batch as `batching.take` cuts one of `rows` rows at `length`."""
  batch = batching.Batch(np.zeros(rows, np.int64), length, np.ones(rows, np.float32))
  return batching.take(arrays, batch, keys)


def compile_ahead(train_fn, predict_fn, state, train_batches, eval_batches, mesh, rules, rng=None):
  """(train_fn, predict_fn) that run programs compiled ahead for the host batch templates
  `train_batches` and `eval_batches` (compiling starts now; see the module doc). `rng`: a
  dropout key of the shape the train step takes (default: one key; several seeds' runs pass
  their replicas' keys). Functions without `.lower` (not jitted) come back as they are."""
  if not (hasattr(train_fn, "lower") and hasattr(predict_fn, "lower")):
    return train_fn, predict_fn
  batch_sharding = sharding.batch_sharding(mesh, rules)
  if rng is None:
    rng = sharding.replicate(jax.random.key(0), mesh)  # any key: only its type matters here
  pool = ThreadPoolExecutor(max(1, min(len(train_batches) + len(eval_batches), os.cpu_count())))
  train = compilation.Programs(
    train_fn,
    lambda state, batch, rng: batch_key(batch),
    "train step",
    [(batch_key(b), (state, compilation.abstract(b, batch_sharding), rng)) for b in train_batches],
    pool,
  )
  evaluate = compilation.Programs(
    predict_fn,
    lambda state, batch: batch_key(batch),
    "eval step",
    [(batch_key(b), (state, compilation.abstract(b, batch_sharding))) for b in eval_batches],
    pool,
  )
  pool.shutdown(wait=False)
  threading.Thread(target=_log_when_compiled, args=(train, evaluate), daemon=True).start()
  return train, evaluate


def _log_when_compiled(*programs: compilation.Programs) -> None:
  try:
    summaries = [p.summary() for p in programs]
  except Exception:  # the run's own call of the program raises it
    return
  seconds = max(s["seconds"] for s in summaries)
  counts = " and ".join(
    f"{s['programs']} {p.what}" for p, s in zip(programs, summaries, strict=True)
  )
  cached = sum(s["from_cache"] for s in summaries)
  where = jax.config.jax_compilation_cache_dir if jax.config.jax_enable_compilation_cache else None
  log.info(
    "compiled ahead %s programs in %.1f s; %d read from the compilation cache (%s)",
    counts,
    seconds,
    cached,
    where or "off",
  )
