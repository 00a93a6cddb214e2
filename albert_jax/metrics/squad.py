"""SQuAD metrics following the official v1.1/v2.0 evaluation scripts, in plain Python.

`normalize_answer`, `exact_match_score` and `f1_score` follow the official scripts (each
version's rule for answers that normalize to ""); `squad_evaluate` scores v1.1 data as
`evaluate-v1.1.py` and v2.0 data as `evaluate-v2.0.py`, with the v2.0 script's output
dictionary, including the best no-answer threshold search. Scores are in percent.
"""

from __future__ import annotations

import collections
import re
import string
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

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
