"""Entity-level scores (albert_jax.metrics.entities) against seqeval's default mode."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from albert_jax import metrics

seqeval_metrics = pytest.importorskip("seqeval.metrics")
TOL = 1e-9  # the same counts divided the same way; only float64 rounding may differ

CRAFTED = {
  "entity at sentence end": ([["O", "B-PER", "I-PER"]], [["O", "B-PER", "I-PER"]]),
  "I- without B- (IOB1 start)": ([["I-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]]),
  "adjacent entities of one type": ([["B-LOC", "B-LOC", "I-LOC"]], [["B-LOC", "I-LOC", "I-LOC"]]),
  "type change inside": ([["B-PER", "I-ORG", "O"]], [["B-PER", "I-PER", "O"]]),
  "all O": ([["O", "O"], ["O"]], [["O", "O"], ["O"]]),
  "gold all O, predictions not": ([["O", "O"]], [["B-MISC", "O"]]),
  "IOB1 adjacent split by B-": (
    [["I-ORG", "I-ORG", "B-ORG", "O"]],
    [["I-ORG", "B-ORG", "I-ORG", "O"]],
  ),
  "entity across sentence boundary": (
    [["O", "B-PER"], ["I-PER", "O"]],
    [["O", "B-PER"], ["B-PER", "O"]],
  ),
  "IOBES": ([["S-PER", "B-LOC", "E-LOC", "O"]], [["S-PER", "B-LOC", "I-LOC", "E-LOC"]]),
  "bare prefixes": ([["B", "I", "O"]], [["B", "O", "O"]]),
}


def _seqeval(gold, predicted):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # seqeval warns on 0/0 (it also returns 0 there)
    report = seqeval_metrics.classification_report(gold, predicted, output_dict=True, digits=9)
    micro = {
      "precision": seqeval_metrics.precision_score(gold, predicted),
      "recall": seqeval_metrics.recall_score(gold, predicted),
      "f1": seqeval_metrics.f1_score(gold, predicted),
    }
  per_type = {k: v for k, v in report.items() if not k.endswith(" avg")}
  return micro, per_type


def _assert_same(gold, predicted):
  ours = metrics.entity_scores(gold, predicted)
  micro, per_type = _seqeval(gold, predicted)
  for key in ("precision", "recall", "f1"):
    assert ours["micro"][key] == pytest.approx(micro[key], abs=TOL), key
  # seqeval's report lists the types that occur in the gold or the predicted tags
  assert set(per_type) == set(ours) - {"micro"}
  for entity_type, theirs in per_type.items():
    for key, their_key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
      want = theirs[their_key]
      assert ours[entity_type][key] == pytest.approx(want, abs=TOL), (entity_type, key)
    assert ours[entity_type]["support"] == theirs["support"]


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_cases_equal_seqeval(case):
  gold, predicted = CRAFTED[case]
  _assert_same(gold, predicted)


def test_crafted_values_by_hand():
  # I- without B- opens an entity (IOB1): both sides hold PER(0..1) -> perfect scores
  scores = metrics.entity_scores(*CRAFTED["I- without B- (IOB1 start)"])
  assert scores["micro"]["f1"] == 1.0
  # B-LOC B-LOC I-LOC = two entities; the prediction is one 3-token entity: nothing correct
  scores = metrics.entity_scores(*CRAFTED["adjacent entities of one type"])
  assert (scores["LOC"]["support"], scores["micro"]["f1"]) == (2, 0.0)
  assert metrics.entity_scores(*CRAFTED["all O"])["micro"]["f1"] == 0.0


@pytest.mark.parametrize("scheme", ["IOB2", "IOB1", "IOBES", "noise"])
def test_random_sequences_equal_seqeval(scheme):
  """Many random tag sequences in each scheme (and arbitrary prefix mixtures), gold vs a
  corrupted copy, sentence by sentence and pooled."""
  rng = np.random.default_rng({"IOB2": 0, "IOB1": 1, "IOBES": 2, "noise": 3}[scheme])
  types = ["PER", "ORG", "LOC", "MISC"]
  prefixes = {"IOB2": "BI", "IOB1": "BI", "IOBES": "BIES", "noise": "BIESO"}[scheme]

  def sentence(n):
    tags = []
    for _ in range(n):
      if rng.random() < 0.4:
        tags.append("O")
      else:
        p = "I" if scheme == "IOB1" and rng.random() < 0.8 else rng.choice(list(prefixes))
        tags.append("O" if p == "O" else f"{p}-{rng.choice(types)}")
    return tags

  gold = [sentence(int(rng.integers(1, 15))) for _ in range(200)]
  predicted = [[t if rng.random() < 0.8 else rng.choice(g or ["O"]) for t in g] for g in gold]
  predicted = [[t if rng.random() < 0.9 else sentence(1)[0] for t in p] for p in predicted]
  _assert_same(gold, predicted)
  for g, p in zip(gold[:50], predicted[:50], strict=True):
    _assert_same([g], [p])


def test_token_accuracy_and_errors():
  assert metrics.token_accuracy([["O", "B-PER"], ["O"]], [["O", "O"], ["O"]]) == pytest.approx(
    2 / 3
  )
  with pytest.raises(ValueError, match="Sentence 0: 2 gold tags but 1"):
    metrics.entity_scores([["O", "O"]], [["O"]])
  with pytest.raises(ValueError, match="2 gold sentences but 1"):
    metrics.entity_scores([["O"], ["O"]], [["O"]])
