"""Evaluation metrics for GLUE and SQuAD, in numpy and plain Python (no JAX).

GLUE: `accuracy`, `f1_binary`, `matthews_corrcoef`, `pearson_spearman`, and `glue_metrics`, which
returns what each GLUE task reports.

SQuAD: `normalize_answer`, `exact_match_score` and `f1_score` follow the official v1.1/v2.0
evaluation scripts (each version's rule for answers that normalize to ""), and `squad_evaluate`
scores v1.1 data as `evaluate-v1.1.py` and v2.0 data as `evaluate-v2.0.py`, with the v2.0
script's output dictionary, including the best no-answer threshold search. Scores in percent.
"""

from __future__ import annotations

import collections
import re
import string
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------
# Classification / regression metrics
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# SQuAD (official v1.1 / v2.0 evaluation semantics)
# ---------------------------------------------------------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
  """Lowercase, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace.

  The steps run in that order, as in the official scripts (so "The." -> "").
  """
  text = s.lower()
  text = "".join(ch for ch in text if ch not in _PUNCTUATION)
  text = _ARTICLES.sub(" ", text)
  return " ".join(text.split())


def _tokens(s: str) -> list[str]:
  return normalize_answer(s).split() if s else []


def exact_match_score(prediction: str, ground_truth: str) -> int:
  """1 if the normalized strings are equal, else 0."""
  return int(normalize_answer(prediction) == normalize_answer(ground_truth))


SQUAD_VERSIONS = ("1.1", "2.0")


def f1_score(prediction: str, ground_truth: str, version: str = "2.0") -> float:
  """Token-level F1 of the normalized answers (bag of tokens, counted with multiplicity).

  When either side normalizes to no tokens: v2.0's script scores 1.0 if both are empty, else
  0.0; v1.1's scores 0.0 (it has no special case: no common tokens).
  """
  pred_toks = _tokens(prediction)
  gold_toks = _tokens(ground_truth)
  if version == "2.0" and (not pred_toks or not gold_toks):
    return float(pred_toks == gold_toks)
  common = collections.Counter(pred_toks) & collections.Counter(gold_toks)
  num_same = sum(common.values())
  if num_same == 0:
    return 0.0
  precision = num_same / len(pred_toks)
  recall = num_same / len(gold_toks)
  return 2.0 * precision * recall / (precision + recall)


def metric_max_over_ground_truths(
  metric: Callable[[str, str], float], prediction: str, ground_truths: Iterable[str]
) -> float:
  """max(metric(prediction, g) for g in ground_truths)."""
  return max(metric(prediction, g) for g in ground_truths)


def _iter_questions(dataset: Any) -> Iterable[Mapping[str, Any]]:
  if isinstance(dataset, Mapping):
    if "data" not in dataset:
      raise ValueError(
        f"dataset dict must have a 'data' key (SQuAD JSON); got keys {sorted(dataset)}"
      )
    dataset = dataset["data"]
  for article in dataset:
    for paragraph in article["paragraphs"]:
      yield from paragraph["qas"]


def _gold_answers(qa: Mapping[str, Any], version: str) -> list[str]:
  """v2.0: gold texts with a non-empty normalization, [""] for an unanswerable question;
  v1.1: every gold text as given."""
  if version == "1.1":
    return [a["text"] for a in qa.get("answers", [])] or [""]
  if qa.get("is_impossible", False):
    return [""]
  golds = [a["text"] for a in qa.get("answers", []) if normalize_answer(a["text"])]
  return golds or [""]


def _find_best_thresh(
  preds: Mapping[str, str],
  scores: Mapping[str, float],
  na_probs: Mapping[str, float],
  qid_to_has_ans: Mapping[str, bool],
  total: int,
) -> tuple[float, float]:
  """The official `find_best_thresh`: sweep the threshold up through the sorted na_probs.

  Start with every question answered "no answer" (score = number of unanswerable questions),
  then, in increasing na_prob order, switch each question to its predicted answer: an
  answerable one gains its score, an unanswerable one loses 1 if the raw prediction string is
  non-empty. The best running score wins (first occurrence on ties), and its threshold is the
  na_prob of the question that reached it (0.0 if no switch helps).
  """
  # Only questions that have a prediction can be right; a missing one stays wrong throughout.
  cur = sum(1 for qid in scores if not qid_to_has_ans[qid])
  best, best_thresh = cur, 0.0
  for qid in sorted(na_probs, key=lambda k: na_probs[k]):
    if qid not in scores:
      continue
    if qid_to_has_ans[qid]:
      diff = scores[qid]
    else:
      diff = -1 if preds[qid] else 0  # as official: the raw string, not its normalization
    cur += diff
    if cur > best:
      best, best_thresh = cur, na_probs[qid]
  return 100.0 * best / total, float(best_thresh)


def squad_evaluate(
  dataset: Any,
  predictions: Mapping[str, str],
  na_probs: Mapping[str, float] | None = None,
  na_prob_thresh: float = 1.0,
  version: str = "2.0",
) -> dict[str, float]:
  """SQuAD v1.1/v2.0 evaluation with the official v2.0 script's output keys (percent scores).

  `version` picks the official script whose rules apply: "2.0" (`evaluate-v2.0.py`: gold
  answers that normalize to "" are dropped; F1 of an empty side is 1 iff both are empty) or
  "1.1" (`evaluate-v1.1.py`: every gold answer counts; F1 with no common token is 0, also when
  both normalize to ""). Score v1.1 data with "1.1"; `na_probs` needs "2.0".

  Args:
    dataset: the SQuAD JSON `data` list (articles -> paragraphs -> qas with `id`, `answers`,
      optional `is_impossible`) or the whole JSON dict holding it under `data`. A question with
      no answers (or `is_impossible`) has the single gold answer "".
    predictions: question id -> predicted text ("" = no answer).
    na_probs: optional question id -> probability of no answer. When given, a prediction with
      na_prob > `na_prob_thresh` counts as the empty answer, and the best-threshold search is
      added (`best_exact`, `best_exact_thresh`, `best_f1`, `best_f1_thresh`).
    na_prob_thresh: the threshold above.

  Returns:
    `exact`, `f1`, `total`, plus `HasAns_*` / `NoAns_*` (exact, f1, total) for the subsets
    that are present, and the `best_*` keys when `na_probs` is given.

  Questions without a prediction score 0 and still count in the totals (a warning lists them),
  as in the official v1.1 script.
  """
  if version not in SQUAD_VERSIONS:
    raise ValueError(f"Unknown SQuAD version {version!r}; use one of {SQUAD_VERSIONS}.")
  if na_probs is not None and version != "2.0":
    raise ValueError("na_probs (no-answer probabilities) need version='2.0'.")
  exact_raw: dict[str, float] = {}
  f1_raw: dict[str, float] = {}
  qid_to_has_ans: dict[str, bool] = {}
  missing: list[str] = []
  for qa in _iter_questions(dataset):
    qid = qa["id"]
    golds = _gold_answers(qa, version)
    # As official: answerable iff it lists answers (even ones that normalize to "").
    qid_to_has_ans[qid] = bool(qa.get("answers")) and not qa.get("is_impossible", False)
    if qid not in predictions:
      missing.append(qid)
      continue
    pred = predictions[qid]
    exact_raw[qid] = metric_max_over_ground_truths(exact_match_score, pred, golds)
    f1_raw[qid] = max(f1_score(pred, gold, version) for gold in golds)
  total = len(qid_to_has_ans)
  if total == 0:
    raise ValueError("the SQuAD dataset has no questions")
  if missing:
    shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
    warnings.warn(
      f"{len(missing)} of {total} questions have no prediction and score 0: {shown}",
      stacklevel=2,
    )

  if na_probs is not None:
    lacking = [qid for qid in exact_raw if qid not in na_probs]
    if lacking:
      raise ValueError(f"na_probs has no entry for predicted question ids {lacking[:10]}")
    exact_thr: dict[str, float] = {}
    f1_thr: dict[str, float] = {}
    for qid in exact_raw:
      if na_probs[qid] > na_prob_thresh:
        exact_thr[qid] = f1_thr[qid] = float(not qid_to_has_ans[qid])
      else:
        exact_thr[qid], f1_thr[qid] = exact_raw[qid], f1_raw[qid]
  else:
    exact_thr, f1_thr = exact_raw, f1_raw

  def subset(qids: Sequence[str]) -> tuple[float, float, int]:
    n = len(qids)
    ex = sum(exact_thr.get(q, 0.0) for q in qids)
    f1 = sum(f1_thr.get(q, 0.0) for q in qids)
    return 100.0 * ex / n, 100.0 * f1 / n, n

  out: dict[str, float] = {}
  out["exact"], out["f1"], out["total"] = subset(list(qid_to_has_ans))
  has_ans = [q for q, h in qid_to_has_ans.items() if h]
  no_ans = [q for q, h in qid_to_has_ans.items() if not h]
  if has_ans:
    out["HasAns_exact"], out["HasAns_f1"], out["HasAns_total"] = subset(has_ans)
  if no_ans:
    out["NoAns_exact"], out["NoAns_f1"], out["NoAns_total"] = subset(no_ans)
  if na_probs is not None:
    out["best_exact"], out["best_exact_thresh"] = _find_best_thresh(
      predictions, exact_raw, na_probs, qid_to_has_ans, total
    )
    out["best_f1"], out["best_f1_thresh"] = _find_best_thresh(
      predictions, f1_raw, na_probs, qid_to_has_ans, total
    )
  return out
