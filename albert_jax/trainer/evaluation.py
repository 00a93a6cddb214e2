"""Evaluation of a fine-tuning run: every eval row's outputs, then the task's metrics.

Rows go through the model in batches of `eval_batch_size`; with buckets (`config.batching =
"bucket"`) sorted by length and each batch cut to its bucket (`albert_jax.data.batching`),
the outputs put back in row order and sequence outputs padded back to the features' length.
A run of several seeds (`albert_jax.trainer.seeds`) evaluates every replica in one pass: its
predict step returns outputs with a leading replica axis [R, B, ...], and
`evaluate_replicas` gives each replica's predictions and metrics.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from albert_jax.data import batching, tasks
from albert_jax.heads import MODEL_INPUTS
from albert_jax.trainer.batches import gather

_POSTPROCESS_KEYS = ("n_best_size", "max_answer_length", "null_score_diff_threshold")
# Model outputs with a sequence axis (axis 1), per head: padded back to max_seq_length after a
# bucketed evaluation with a score no padded position can win.
_SEQUENCE_OUTPUTS = {
  "question_answering": ("start_logits", "end_logits"),
  "token_classification": ("logits",),
}
_PADDED_SCORE = -1e9


@dataclasses.dataclass
class EvalSet:
  split: str
  examples: list
  features: Any  # tasks.Features


def _predict_all(
  predict_fn, state, arrays, batch_size: int, put, lead: int = 0
) -> dict[str, np.ndarray]:
  """Every row's outputs, each row padded to the full length (the last batch repeats a row);
  `lead` leading axes (the replicas) come before the rows."""
  n = len(arrays["input_ids"])
  outputs: dict[str, list[np.ndarray]] = {}
  for start in range(0, n, batch_size):
    idx = np.minimum(np.arange(start, start + batch_size), n - 1)  # pad: repeat the last row
    out = predict_fn(state, put(gather(arrays, MODEL_INPUTS, idx)))
    for f in dataclasses.fields(out):
      if (value := getattr(out, f.name)) is not None:  # research outputs are None when off
        outputs.setdefault(f.name, []).append(np.asarray(value, np.float32))
  rows = (slice(None),) * lead + (slice(None, n),)
  return {k: np.concatenate(v, axis=lead)[rows] for k, v in outputs.items()}


def _predict_bucketed(
  predict_fn, state, arrays, batch_size: int, put, buckets, head: str, lead: int = 0
) -> dict[str, np.ndarray]:
  """Every row's outputs from length-sorted batches cut to their buckets, put back in row
  order; outputs with a sequence axis are padded back to the arrays' length with a score no
  padded position can win. `lead` leading axes (the replicas) come before the rows."""
  n, length = arrays["input_ids"].shape[0], arrays["input_ids"].shape[-1]
  lengths = batching.row_lengths(arrays["attention_mask"])
  merged: dict[str, np.ndarray] = {}
  for batch in batching.length_sorted_batches(lengths, batch_size, buckets):
    out = predict_fn(state, put(batching.take(arrays, batch, MODEL_INPUTS)))
    real = batch.weights > 0
    rows = batch.indices[real]
    for f in dataclasses.fields(out):
      if (value := getattr(out, f.name)) is None:  # research outputs are None when off
        continue
      value = np.asarray(value, np.float32)[(slice(None),) * lead + (real,)]
      if f.name in _SEQUENCE_OUTPUTS.get(head, ()):
        pad = [(0, 0)] * value.ndim
        pad[lead + 1] = (0, length - value.shape[lead + 1])
        value = np.pad(value, pad, constant_values=_PADDED_SCORE)
      if f.name not in merged:
        shape = (*value.shape[:lead], n, *value.shape[lead + 1 :])
        merged[f.name] = np.zeros(shape, np.float32)
      merged[f.name][(slice(None),) * lead + (rows,)] = value
  return merged


def evaluate(
  predict_fn, state, eval_set: EvalSet, batch_size: int, put, task, config, buckets=None
):
  """(predictions, metrics) of `state` on one eval split; `put` shards a host batch;
  `buckets` the sequence lengths to cut batches to (None: every row at full length)."""
  merged = _outputs(predict_fn, state, eval_set, batch_size, put, task, buckets, lead=0)
  return _postprocess(task, eval_set, merged, config)


def evaluate_replicas(
  predict_fn, state, eval_set: EvalSet, batch_size: int, put, task, config, buckets=None
) -> list[tuple[Any, dict[str, float]]]:
  """`evaluate` of every replica of a stacked state in one pass: `predict_fn` returns outputs
  with a leading replica axis. A list of (predictions, metrics), one per replica."""
  merged = _outputs(predict_fn, state, eval_set, batch_size, put, task, buckets, lead=1)
  replicas = len(next(iter(merged.values())))
  return [
    _postprocess(task, eval_set, {k: v[r] for k, v in merged.items()}, config)
    for r in range(replicas)
  ]


def postprocess_kwargs(config) -> dict[str, Any]:
  """The task options `tasks.postprocess` takes from the run config."""
  return {k: config[k] for k in _POSTPROCESS_KEYS if k in config}


def _outputs(predict_fn, state, eval_set, batch_size, put, task, buckets, lead):
  arrays = eval_set.features.arrays
  if buckets is None:
    return _predict_all(predict_fn, state, arrays, batch_size, put, lead)
  return _predict_bucketed(predict_fn, state, arrays, batch_size, put, buckets, task.head, lead)


def _postprocess(task, eval_set, merged, config):
  predictions, metrics = tasks.postprocess(
    task, eval_set.examples, eval_set.features, merged, **postprocess_kwargs(config)
  )
  return predictions, {k: float(v) for k, v in metrics.items()}
