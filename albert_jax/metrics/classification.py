"""Classification and regression metrics (GLUE), in numpy: accuracy, binary F1, Matthews
correlation, Pearson/Spearman, and `glue_metrics` (what each GLUE task reports)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _as_1d_pair(preds: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
  p = np.asarray(preds)
  y = np.asarray(labels)
  if p.ndim != 1 or y.ndim != 1:
    raise ValueError(
      f"expected 1-D preds and labels, got shapes preds={p.shape} and labels={y.shape}"
    )
  if p.shape != y.shape:
    raise ValueError(f"preds and labels differ in length: {p.shape[0]} vs {y.shape[0]}")
  if p.size == 0:
    raise ValueError("preds and labels are empty; a metric needs at least one example")
  return p, y


def accuracy(preds: Any, labels: Any) -> float:
  """Fraction of positions where `preds == labels` (in [0, 1])."""
  p, y = _as_1d_pair(preds, labels)
  return float(np.mean(p == y))


def f1_binary(preds: Any, labels: Any) -> float:
  """F1 of the positive class 1 (GLUE MRPC/QQP), in [0, 1].

  F1 = 2 TP / (2 TP + FP + FN); 0.0 when there is neither a positive prediction nor a positive
  label (sklearn's value for that case).
  """
  p, y = _as_1d_pair(preds, labels)
  pos_p = p == 1
  pos_y = y == 1
  tp = int(np.sum(pos_p & pos_y))
  fp = int(np.sum(pos_p & ~pos_y))
  fn = int(np.sum(~pos_p & pos_y))
  denom = 2 * tp + fp + fn
  return 0.0 if denom == 0 else 2.0 * tp / denom


def matthews_corrcoef(preds: Any, labels: Any) -> float:
  """Matthews correlation coefficient (GLUE CoLA), in [-1, 1]; multi-class (R_K) form.

  With c correct predictions out of s, t_k true and p_k predicted examples of class k:
  MCC = (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2)).
  For two classes this is the usual (TP TN - FP FN) / sqrt(...). When the denominator is 0
  (e.g. every prediction is the same class) the result is 0.0, as in sklearn.
  """
  p, y = _as_1d_pair(preds, labels)
  classes, inverse = np.unique(np.concatenate([y, p]), return_inverse=True)
  n = y.shape[0]
  y_idx, p_idx = inverse[:n], inverse[n:]
  t_k = np.bincount(y_idx, minlength=len(classes)).astype(np.float64)
  p_k = np.bincount(p_idx, minlength=len(classes)).astype(np.float64)
  c = float(np.sum(y_idx == p_idx))
  s = float(n)
  cov_yp = c * s - float(np.dot(p_k, t_k))
  cov_pp = s * s - float(np.dot(p_k, p_k))
  cov_yy = s * s - float(np.dot(t_k, t_k))
  denom = cov_pp * cov_yy
  if denom == 0.0:
    return 0.0
  return float(cov_yp / np.sqrt(denom))


def rankdata(x: Any) -> np.ndarray:
  """Ranks 1..n of a 1-D array; tied values all get the mean of the ranks they span.

  A NaN anywhere makes every rank NaN (as scipy's `rankdata(nan_policy="propagate")`): NaN has
  no place in an order, and ranking it last would turn a broken prediction into a number.
  """
  a = np.asarray(x, dtype=np.float64)
  if a.ndim != 1:
    raise ValueError(f"rankdata expects a 1-D array, got shape {a.shape}")
  if np.isnan(a).any():
    return np.full(a.shape, np.nan)
  order = np.argsort(a, kind="mergesort")
  sorted_a = a[order]
  ranks = np.empty(a.shape[0], dtype=np.float64)
  start = 0
  n = a.shape[0]
  while start < n:
    end = start + 1
    while end < n and sorted_a[end] == sorted_a[start]:
      end += 1
    # positions start..end-1 (0-based) hold ranks start+1..end; their mean is (start+1+end)/2
    ranks[order[start:end]] = 0.5 * (start + 1 + end)
    start = end
  return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
  xc = x - x.mean()
  yc = y - y.mean()
  denom = np.sqrt(np.dot(xc, xc) * np.dot(yc, yc))
  if denom == 0.0:
    return float("nan")  # undefined for a constant input (scipy also gives nan)
  return float(np.dot(xc, yc) / denom)


def pearson_spearman(preds: Any, labels: Any) -> dict[str, float]:
  """Pearson and Spearman correlations (GLUE STS-B) and their mean `corr`.

  Spearman is the Pearson correlation of the ranks, with average ranks for ties. Either is nan
  when one input is constant (the correlation is undefined) or holds a NaN (as scipy).
  """
  p, y = _as_1d_pair(preds, labels)
  p = p.astype(np.float64)
  y = y.astype(np.float64)
  pearson = _pearson(p, y)
  spearman = _pearson(rankdata(p), rankdata(y))
  return {"pearson": pearson, "spearman": spearman, "corr": 0.5 * (pearson + spearman)}


# Which metrics each GLUE task reports. "ax" is the diagnostic set (scored with MCC).
_GLUE_TASK_METRICS = {
  "cola": "mcc",
  "sst2": "accuracy",
  "mrpc": "accuracy_f1",
  "qqp": "accuracy_f1",
  "stsb": "correlation",
  "mnli": "accuracy",
  "mnli-m": "accuracy",
  "mnli-mm": "accuracy",
  "qnli": "accuracy",
  "rte": "accuracy",
  "wnli": "accuracy",
  "ax": "mcc",
}
_GLUE_ALIASES = {
  "sst-2": "sst2",
  "sts-b": "stsb",
  "mnli-matched": "mnli-m",
  "mnli-mismatched": "mnli-mm",
}


def glue_metrics(task: str, preds: Any, labels: Any) -> dict[str, float]:
  """The metrics a GLUE task reports, as a dict of floats (fractions, not percent).

  cola: {mcc}; sst2, mnli(-m/-mm), qnli, rte, wnli: {accuracy}; mrpc, qqp: {accuracy, f1};
  stsb: {pearson, spearman, corr}. Task names are case-insensitive, "_" and "-" are equivalent,
  and "sst-2"/"sts-b" are accepted. For classification tasks `preds` may be class ids (n,) or
  logits (n, num_classes), which are arg-maxed; for stsb, scores (n,) or (n, 1).
  """
  key = task.strip().lower().replace("_", "-")
  key = _GLUE_ALIASES.get(key, key)
  if key not in _GLUE_TASK_METRICS:
    raise ValueError(f"unknown GLUE task {task!r}; known tasks: {', '.join(_GLUE_TASK_METRICS)}")
  kind = _GLUE_TASK_METRICS[key]
  p = np.asarray(preds)
  if kind == "correlation":
    if p.ndim == 2 and p.shape[1] == 1:
      p = p[:, 0]
    return pearson_spearman(p, labels)
  if p.ndim == 2:
    p = np.argmax(p, axis=-1)
  if kind == "mcc":
    return {"mcc": matthews_corrcoef(p, labels)}
  if kind == "accuracy":
    return {"accuracy": accuracy(p, labels)}
  return {"accuracy": accuracy(p, labels), "f1": f1_binary(p, labels)}
