"""Tests for albert_jax.metrics against hand-computed values."""

from __future__ import annotations

import collections
import math
import re
import string
import warnings

import numpy as np
import pytest

from albert_jax import metrics as M

# ------------------------------------------------------------------------------------------
# GLUE metrics
# ------------------------------------------------------------------------------------------


def test_accuracy():
  assert M.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
  assert M.accuracy(np.array([2, 2]), np.array([2, 2])) == 1.0


def test_shape_errors_name_the_shapes():
  with pytest.raises(ValueError, match=r"3 vs 2"):
    M.accuracy([1, 0, 1], [1, 0])
  with pytest.raises(ValueError, match=r"\(2, 2\)"):
    M.accuracy([[1, 0], [0, 1]], [1, 0])
  with pytest.raises(ValueError, match="empty"):
    M.f1_binary([], [])


def test_f1_binary():
  # preds  1 1 0 0 1 ; labels 1 0 0 1 1 -> TP=2 (0,4), FP=1 (1), FN=1 (3): F1 = 4 / 6
  assert M.f1_binary([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(2 / 3)
  # no positive anywhere: 0/0 -> 0.0 (sklearn)
  assert M.f1_binary([0, 0, 0], [0, 0, 0]) == 0.0
  # no positive predicted but positives exist: TP=0 -> 0
  assert M.f1_binary([0, 0], [1, 0]) == 0.0


def test_matthews_binary_hand_computed():
  # TP=2, FP=1, FN=1, TN=2: (2*2 - 1*1) / sqrt(3*3*3*3) = 3/9
  assert M.matthews_corrcoef([1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0]) == pytest.approx(1 / 3)
  assert M.matthews_corrcoef([1, 0, 1], [1, 0, 1]) == pytest.approx(1.0)
  assert M.matthews_corrcoef([0, 1, 0], [1, 0, 1]) == pytest.approx(-1.0)


def test_matthews_degenerate_is_zero():
  # all predictions the same class -> denominator 0 -> 0.0, as sklearn
  assert M.matthews_corrcoef([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0
  assert M.matthews_corrcoef([0, 0, 0], [0, 0, 0]) == 0.0
  # labels constant, predictions not
  assert M.matthews_corrcoef([0, 1, 0], [1, 1, 1]) == 0.0


def test_matthews_multiclass():
  # labels 0 1 2 0, preds 0 2 2 0: s=4, c=3, t=[2,1,1], p=[2,0,2]
  # (3*4 - (4+0+2)) / sqrt((16 - 8) * (16 - 6)) = 6 / sqrt(80)
  assert M.matthews_corrcoef([0, 2, 2, 0], [0, 1, 2, 0]) == pytest.approx(6 / math.sqrt(80))


def test_rankdata_average_ties():
  np.testing.assert_allclose(M.rankdata([10, 20, 20, 20, 5]), [2, 4, 4, 4, 1])
  np.testing.assert_allclose(M.rankdata([3.0, 1.0, 3.0]), [2.5, 1, 2.5])


def test_pearson_spearman_with_ties():
  preds = [1, 2, 2, 3]
  labels = [1, 3, 2, 10]
  # Pearson: preds dev [-1,0,0,1], labels mean 4 dev [-3,-1,-2,6]: 9 / sqrt(2 * 50) = 0.9
  # Spearman: ranks [1,2.5,2.5,4] vs [1,3,2,4]; devs [-1.5,0,0,1.5] and [-1.5,.5,-.5,1.5]:
  #   4.5 / sqrt(4.5 * 5) = 3 / sqrt(10)
  out = M.pearson_spearman(preds, labels)
  assert out["pearson"] == pytest.approx(0.9)
  assert out["spearman"] == pytest.approx(3 / math.sqrt(10))
  assert out["corr"] == pytest.approx((0.9 + 3 / math.sqrt(10)) / 2)


def test_spearman_matches_scipy_if_available():
  stats = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(0)
  a = rng.integers(0, 5, size=30).astype(float)  # many ties
  b = a + rng.integers(-2, 3, size=30)
  out = M.pearson_spearman(a, b)
  assert out["spearman"] == pytest.approx(stats.spearmanr(a, b)[0])
  assert out["pearson"] == pytest.approx(stats.pearsonr(a, b)[0])


def test_glue_metrics_keys_and_values():
  assert M.glue_metrics("cola", [1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0]) == pytest.approx(
    {"mcc": 1 / 3}
  )
  for task in ("sst2", "SST-2", "mnli", "mnli-mm", "qnli", "rte", "wnli"):
    assert M.glue_metrics(task, [1, 0, 1, 1], [1, 1, 1, 0]) == {"accuracy": 0.5}
  out = M.glue_metrics("mrpc", [1, 1, 0, 0, 1], [1, 0, 0, 1, 1])
  assert out == pytest.approx({"accuracy": 0.6, "f1": 2 / 3})
  assert set(M.glue_metrics("qqp", [1, 0], [1, 0])) == {"accuracy", "f1"}
  out = M.glue_metrics("sts-b", np.array([[1.0], [2.0], [2.0], [3.0]]), [1, 3, 2, 10])
  assert set(out) == {"pearson", "spearman", "corr"}
  assert out["pearson"] == pytest.approx(0.9)


def test_glue_metrics_argmaxes_logits():
  logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 1.0]])  # -> 1, 0, 1
  assert M.glue_metrics("rte", logits, [1, 0, 0]) == pytest.approx({"accuracy": 2 / 3})


def test_glue_metrics_unknown_task():
  with pytest.raises(ValueError, match=r"'squad'.*cola.*stsb"):
    M.glue_metrics("squad", [1], [1])


# ------------------------------------------------------------------------------------------
# SQuAD
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "text, expected",
  [
    ("The  Quick, brown fox!", "quick brown fox"),
    ("an apple a day", "apple day"),
    ("Theatre and Another", "theatre and another"),  # articles only as whole words
    ("A.B.C.", "abc"),  # punctuation goes first, "abc" is no article
    ("the.", ""),
    ("  Levi's\tStadium \n", "levis stadium"),
    ("THE end-to-end", "endtoend"),
    # an article is replaced by a space, which splits tokens the en dash (not ASCII) would join
    ("rock\u2013the\u2013boat", "rock\u2013 \u2013boat"),
  ],
)
def test_normalize_answer(text, expected):
  assert M.normalize_answer(text) == expected


def test_exact_and_f1():
  assert M.exact_match_score("The Cat", "cat.") == 1
  assert M.exact_match_score("cats", "cat") == 0
  # pred tokens [cat, sat, on, mat], gold [cat, sat, on, red, mat]: P=1, R=4/5 -> F1 = 8/9
  assert M.f1_score("the cat sat on mat", "a cat sat on the red mat") == pytest.approx(8 / 9)
  # multiplicity: common = 1, P = 1/3, R = 1 -> 0.5
  assert M.f1_score("cat cat cat", "cat") == pytest.approx(0.5)
  assert M.f1_score("dog", "cat") == 0.0


def test_empty_answers_v2_rule():
  assert M.f1_score("", "") == 1.0
  assert M.f1_score("", "cat") == 0.0
  assert M.f1_score("cat", "") == 0.0
  assert M.f1_score("the", "") == 1.0  # "the" normalizes to nothing
  assert M.exact_match_score("", "") == 1


def _qa(qid, answers):
  return {"id": qid, "question": "?", "answers": [{"text": t, "answer_start": 0} for t in answers]}


def _dataset():
  qas = [
    _qa("q1", ["Denver Broncos", "the Broncos"]),
    _qa("q2", ["Santa Clara, California"]),
    dict(_qa("q3", []), is_impossible=True),
    _qa("q4", []),
    _qa("q5", ["1960"]),
  ]
  return [{"title": "t", "paragraphs": [{"context": "c", "qas": qas}]}]


_PREDS = {
  "q1": "Broncos",  # EM 1 (vs "the Broncos"), F1 1
  "q2": "California",  # EM 0, F1 = 2 * 1 * (1/3) / (4/3) = 0.5
  "q3": "",  # no answer, correctly: EM 1, F1 1
  "q4": "Levi's Stadium",  # answered an unanswerable question: 0, 0
  "q5": "",  # abstained on an answerable question: 0, 0
}
_NA = {"q1": 0.1, "q2": 0.6, "q3": 0.9, "q4": 0.7, "q5": 0.3}


def test_squad_evaluate_raw():
  out = M.squad_evaluate(_dataset(), _PREDS)
  expected = {
    "exact": 100 * 2 / 5,
    "f1": 100 * 2.5 / 5,
    "total": 5,
    "HasAns_exact": 100 * 1 / 3,  # q1, q2, q5
    "HasAns_f1": 100 * 1.5 / 3,
    "HasAns_total": 3,
    "NoAns_exact": 50.0,  # q3, q4
    "NoAns_f1": 50.0,
    "NoAns_total": 2,
  }
  assert out == pytest.approx(expected)
  assert list(out) == list(expected)  # official key order
  # the whole JSON dict is accepted too
  assert M.squad_evaluate({"version": "v2.0", "data": _dataset()}, _PREDS) == out


def test_squad_evaluate_threshold_and_best_thresh():
  out = M.squad_evaluate(_dataset(), _PREDS, na_probs=_NA, na_prob_thresh=0.5)
  # Threshold 0.5: q2 (0.6), q4 (0.7), q3 (0.9) become "no answer":
  #   q2 answerable -> 0; q4, q3 unanswerable -> 1. q1 = 1, q5 = 0 as before.
  #   exact = f1 = 3/5.
  assert out["exact"] == pytest.approx(60.0)
  assert out["f1"] == pytest.approx(60.0)
  assert out["HasAns_exact"] == pytest.approx(100 / 3)
  assert out["HasAns_f1"] == pytest.approx(100 / 3)
  assert out["NoAns_exact"] == pytest.approx(100.0)
  # Best threshold (raw scores). Start: all "no answer" -> score = #unanswerable = 2.
  # Sweep by na_prob: q1 (0.1) +1 -> 3, q5 (0.3) +0 -> 3, q2 (0.6) +EM 0 / +F1 0.5,
  # q4 (0.7) non-empty pred on unanswerable -> -1, q3 (0.9) empty pred -> 0.
  #   exact: 2, 3*, 3, 3, 2, 2    -> best 3/5 at 0.1
  #   f1:    2, 3*, 3, 3.5*, 2.5, 2.5 -> best 3.5/5 at 0.6
  assert out["best_exact"] == pytest.approx(60.0)
  assert out["best_exact_thresh"] == pytest.approx(0.1)
  assert out["best_f1"] == pytest.approx(70.0)
  assert out["best_f1_thresh"] == pytest.approx(0.6)


def test_squad_default_threshold_changes_nothing():
  out = M.squad_evaluate(_dataset(), _PREDS, na_probs=_NA)
  raw = M.squad_evaluate(_dataset(), _PREDS)
  for k, v in raw.items():
    assert out[k] == pytest.approx(v)
  assert "best_f1" in out and "best_f1" not in raw


def test_best_thresh_no_switch_helps():
  # Only unanswerable questions, both answered wrongly: best is to abstain on all, thresh 0.0.
  qas = [_qa("a", []), _qa("b", [])]
  data = [{"paragraphs": [{"qas": qas}]}]
  out = M.squad_evaluate(data, {"a": "x", "b": "y"}, na_probs={"a": 0.2, "b": 0.4})
  assert out["exact"] == 0.0
  assert out["best_exact"] == 100.0 and out["best_exact_thresh"] == 0.0
  assert "HasAns_total" not in out and out["NoAns_total"] == 2


def test_best_thresh_wrong_no_answer_costs_one():
  # "u" unanswerable answered "x" at na 0.2, "h" answerable answered right at na 0.4.
  # Start 1 (u abstains); switch u -> 0; switch h -> 1, not > 1: best 1/2 at thresh 0.0.
  qas = [_qa("u", []), _qa("h", ["Paris"])]
  data = [{"paragraphs": [{"qas": qas}]}]
  na = {"u": 0.2, "h": 0.4}
  out = M.squad_evaluate(data, {"u": "x", "h": "paris"}, na_probs=na)
  assert out["best_exact"] == 50.0 and out["best_exact_thresh"] == 0.0
  # As the official script, a no-answer question counts as answered when the raw prediction
  # string is non-empty, even one that normalizes to "" ("The"): the same -1 then +1.
  out = M.squad_evaluate(data, {"u": "The", "h": "paris"}, na_probs=na)
  assert out["NoAns_exact"] == 100.0  # raw score: "The" == "" after normalization
  assert out["best_exact"] == 50.0 and out["best_exact_thresh"] == 0.0
  # With an empty prediction for u, the switch costs nothing: 1, 1, 2 -> best 100 at 0.4.
  out = M.squad_evaluate(data, {"u": "", "h": "paris"}, na_probs=na)
  assert out["best_exact"] == 100.0 and out["best_exact_thresh"] == pytest.approx(0.4)


def test_squad_missing_answerable_prediction_scores_zero():
  preds = {k: v for k, v in _PREDS.items() if k != "q1"}
  with pytest.warns(UserWarning, match="q1"):
    out = M.squad_evaluate(_dataset(), preds)
  # q1 now 0: exact (0+0+1+0+0)/5, f1 (0+0.5+1+0+0)/5
  assert out["total"] == 5
  assert out["exact"] == pytest.approx(20.0)
  assert out["f1"] == pytest.approx(30.0)
  assert out["HasAns_total"] == 3
  assert out["HasAns_exact"] == 0.0
  assert out["HasAns_f1"] == pytest.approx(100 * 0.5 / 3)


def test_squad_missing_unanswerable_prediction_is_not_credited():
  preds = {k: v for k, v in _PREDS.items() if k != "q3"}
  na = {k: v for k, v in _NA.items() if k != "q3"}
  with pytest.warns(UserWarning, match="1 of 5"):
    out = M.squad_evaluate(_dataset(), preds, na_probs=na)
  assert out["exact"] == pytest.approx(20.0)  # only q1
  assert out["NoAns_exact"] == 0.0
  # Best exact: start = 1 (q4 only; missing q3 stays wrong); q1 +1 -> 2 at 0.1, q5 0, q2 0,
  # q4 -1 -> 1. Best 2/5 at 0.1.
  assert out["best_exact"] == pytest.approx(40.0)
  assert out["best_exact_thresh"] == pytest.approx(0.1)


def test_squad_gold_answers_normalizing_to_empty_are_dropped():
  data = [{"paragraphs": [{"qas": [_qa("q", ["The", "Paris"])]}]}]
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no missing-prediction warning here
    out = M.squad_evaluate(data, {"q": ""})
  # gold is just "Paris" (the "The" answer is dropped), so an empty prediction scores 0
  assert out["exact"] == 0.0 and out["f1"] == 0.0
  assert out["HasAns_total"] == 1 and "NoAns_total" not in out


def test_squad_v1_style_max_over_golds():
  data = [{"paragraphs": [{"qas": [_qa("q", ["big red dog", "red dog house"])]}]}]
  # pred [red, dog]: vs [big, red, dog] P=1 R=2/3 -> 0.8; vs [red, dog, house] the same
  out = M.squad_evaluate(data, {"q": "a red dog"})
  assert out["f1"] == pytest.approx(80.0)
  out = M.squad_evaluate(data, {"q": "Red dog house."})
  assert out["exact"] == 100.0


def test_squad_errors():
  with pytest.raises(ValueError, match="'data'"):
    M.squad_evaluate({"version": "x"}, {})
  with pytest.raises(ValueError, match="no questions"):
    M.squad_evaluate([], {})
  with pytest.raises(ValueError, match="q2"):
    M.squad_evaluate(_dataset(), _PREDS, na_probs={"q1": 0.0})


# ---- SQuAD v1.1 scoring: the official v1.1 script's rules, transcribed here ------------------


def _v11_normalize(s):
  s = s.lower()
  s = "".join(ch for ch in s if ch not in set(string.punctuation))
  s = re.sub(r"\b(a|an|the)\b", " ", s)
  return " ".join(s.split())


def _v11_f1(pred, gold):
  p, g = _v11_normalize(pred).split(), _v11_normalize(gold).split()
  same = sum((collections.Counter(p) & collections.Counter(g)).values())
  if same == 0:  # v1.1 has no special case for empty answers
    return 0.0
  precision, recall = same / len(p), same / len(g)
  return 2 * precision * recall / (precision + recall)


def _v11_evaluate(dataset, predictions):
  em = f1 = total = 0
  for article in dataset:
    for paragraph in article["paragraphs"]:
      for qa in paragraph["qas"]:
        total += 1
        if qa["id"] not in predictions:
          continue
        golds = [a["text"] for a in qa["answers"]]  # every gold, as given
        pred = predictions[qa["id"]]
        em += max(float(_v11_normalize(pred) == _v11_normalize(g)) for g in golds)
        f1 += max(_v11_f1(pred, g) for g in golds)
  return 100.0 * em / total, 100.0 * f1 / total


def test_squad_v11_empty_normalized_answer_scores_f1_zero():
  """Gold "The", prediction "the": both normalize to "" — v1.1 gives EM 100, F1 0; v2.0's
  rule gives F1 100 (and drops such golds)."""
  data = [{"paragraphs": [{"qas": [_qa("q", ["The"])]}]}]
  v11 = M.squad_evaluate(data, {"q": "the"}, version="1.1")
  assert (v11["exact"], v11["f1"]) == (100.0, 0.0)
  assert (v11["exact"], v11["f1"]) == _v11_evaluate(data, {"q": "the"})
  v20 = M.squad_evaluate(data, {"q": "the"})
  assert v20["f1"] == 100.0
  assert M.f1_score("the", "The", version="1.1") == 0.0
  assert M.f1_score("the", "The") == 1.0


def test_squad_v11_matches_transcription_on_random_cases():
  rng = np.random.default_rng(0)
  words = ["the", "a", "Paris", "red", "dog", "An", "house", ".", ",", "1,000", "big", "The."]
  qas, preds = [], {}
  for i in range(300):
    golds = [" ".join(rng.choice(words, rng.integers(1, 4))) for _ in range(rng.integers(1, 4))]
    qas.append(_qa(f"q{i}", golds))
    if rng.random() < 0.95:  # a few questions without a prediction
      preds[f"q{i}"] = " ".join(rng.choice(words, rng.integers(0, 4)))
  data = [{"paragraphs": [{"qas": qas}]}]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the missing-prediction warning
    out = M.squad_evaluate(data, preds, version="1.1")
  em, f1 = _v11_evaluate(data, preds)
  # Same operations on the same float64 numbers, summed in the same order: equal to 1e-9.
  assert out["exact"] == pytest.approx(em, abs=1e-9) and out["f1"] == pytest.approx(f1, abs=1e-9)
  assert out["total"] == 300


def test_squad_version_errors():
  with pytest.raises(ValueError, match="'3.0'"):
    M.squad_evaluate(_dataset(), _PREDS, version="3.0")
  with pytest.raises(ValueError, match="na_probs"):
    M.squad_evaluate(_dataset(), _PREDS, na_probs=_NA, version="1.1")


def test_spearman_of_nan_is_nan():
  """scipy gives NaN for [nan, 1, 2] vs [1, 2, 3]; ranking NaN last would give -0.5."""
  out = M.pearson_spearman([np.nan, 1.0, 2.0], [1.0, 2.0, 3.0])
  assert math.isnan(out["spearman"]) and math.isnan(out["pearson"]) and math.isnan(out["corr"])
  assert np.isnan(M.rankdata([1.0, np.nan])).all()
  out = M.pearson_spearman([1.0, 2.0, 3.0], [1.0, np.nan, 3.0])
  assert math.isnan(out["spearman"])
