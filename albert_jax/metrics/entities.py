"""Entity-level scores of tag sequences (NER, chunking), as seqeval computes them by default.

Tags are `O` or `<prefix>-<type>` with prefix B (begin), I (inside), E (end), S (single); a
bare prefix has type `_`. Decoding is lenient, as conlleval and seqeval's default mode: it
reads IOB2 (every entity opens with B-), IOB1 (I- opens an entity; B- only separates two
adjacent entities of one type), IOE and IOBES alike. Walking the tags with the previous one:

  an entity ENDS before position i when the previous tag is E or S; or it is B or I and the
  current tag is B, S or O; or the previous tag is not O and the type changes;
  an entity STARTS at position i when the tag is B or S; or it is E or I after E, S or O; or
  it is not O and the type changes.

Sentences are scored together: entities are (type, start, end) over the concatenation of the
sentences with an O between them, so an entity never spans two sentences. Precision =
correct / predicted, recall = correct / gold, F1 their harmonic mean; a 0/0 gives 0 (seqeval's
`zero_division` default, without its warning). `micro` pools every type; each type is
scored on its own entities.
"""

from __future__ import annotations

from collections.abc import Sequence

_ENDS_AFTER = {"E", "S"}  # a chunk never continues past these
_CONTINUABLE = {"B", "I"}  # these end at a following B, S or O
_OPENS = {"B", "S"}


def _split(tag: str) -> tuple[str, str]:
  """(prefix, type): the first character, and what follows the first "-" after it (or the
  rest, when there is no "-"): "B-PER" -> ("B", "PER"); "O" -> ("O", "_"); "I" -> ("I", "_")."""
  return tag[:1], tag[1:].split("-", 1)[-1] or "_"


def _ends(prev: str, prev_type: str, tag: str, entity_type: str) -> bool:
  if prev in _ENDS_AFTER:
    return True
  if prev in _CONTINUABLE and tag in ("B", "S", "O"):
    return True
  return prev not in ("O", ".") and prev_type != entity_type


def _starts(prev: str, prev_type: str, tag: str, entity_type: str) -> bool:
  if tag in _OPENS:
    return True
  if tag in ("E", "I") and prev in ("E", "S", "O"):
    return True
  return tag not in ("O", ".") and prev_type != entity_type


def get_entities(sentences: Sequence[Sequence[str]]) -> list[tuple[str, int, int]]:
  """(type, first, last) of every entity, positions counted over the sentences joined with an
  O after each (so sentence k's positions are shifted by the lengths before it, plus k)."""
  flat: list[str] = []
  for sentence in sentences:
    flat.extend(sentence)
    flat.append("O")
  entities = []
  prev, prev_type, begin = "O", "", 0
  for i, raw in enumerate([*flat, "O"]):
    tag, entity_type = _split(raw)
    if _ends(prev, prev_type, tag, entity_type):
      entities.append((prev_type, begin, i - 1))
    if _starts(prev, prev_type, tag, entity_type):
      begin = i
    prev, prev_type = tag, entity_type
  return entities


def _prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
  precision = correct / predicted if predicted else 0.0
  recall = correct / gold if gold else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": precision, "recall": recall, "f1": f1, "support": gold}


def entity_scores(
  gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
) -> dict[str, dict[str, float]]:
  """{"micro": {precision, recall, f1, support}, "<TYPE>": {...}, ...} (fractions; support =
  the number of gold entities). `gold` and `predicted`: one tag list per sentence, equal
  lengths."""
  if len(gold) != len(predicted):
    raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted ones.")
  for k, (g, p) in enumerate(zip(gold, predicted, strict=True)):
    if len(g) != len(p):
      raise ValueError(f"Sentence {k}: {len(g)} gold tags but {len(p)} predicted ones.")
  gold_set = set(get_entities(gold))
  pred_set = set(get_entities(predicted))
  scores = {"micro": _prf(len(gold_set & pred_set), len(pred_set), len(gold_set))}
  for entity_type in sorted({e[0] for e in gold_set | pred_set}):
    g = {e for e in gold_set if e[0] == entity_type}
    p = {e for e in pred_set if e[0] == entity_type}
    scores[entity_type] = _prf(len(g & p), len(p), len(g))
  return scores


def token_accuracy(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
  """Share of tags predicted exactly (every token, O included)."""
  pairs = [
    (g, p) for gs, ps in zip(gold, predicted, strict=True) for g, p in zip(gs, ps, strict=True)
  ]
  if not pairs:
    raise ValueError("No tags to score.")
  return sum(g == p for g, p in pairs) / len(pairs)
