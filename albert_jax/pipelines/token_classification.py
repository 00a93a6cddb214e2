"""`pipeline("token-classification", model=DIR)`: a tag per piece, or entities grouped from them,
with HF transformers' arguments and output fields.

    tag = albert_jax.pipeline("token-classification", model=DIR, aggregation_strategy="simple")
    tag("Ada Lovelace lived in London.")
    # [{"entity_group": "PER", "score": ..., "word": "ada lovelace", "start": 0, "end": 12}, ...]

`aggregation_strategy` as HF defines it: "none" gives every piece whose best label is not
ignored (`entity`, `score`, `index` in the sequence, `word` the piece, `start`, `end`);
"simple" groups adjacent pieces of the same entity (B-/I- prefixes: a B- starts a new group)
into `entity_group`s scored by their mean; "first", "average" and "max" first give every word
one label (a word: pieces with no whitespace between them in the text; its first piece's label,
the label of the averaged scores, or the label of its most confident piece) and then group.
`start`/`end` are character offsets into the text as given (`tokenize_with_offsets`), so
`text[start:end]` is the original span. `ignore_labels` (default ["O"]) are left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from albert_jax.errors import UserError
from albert_jax.pipelines import base

STRATEGIES = ("none", "simple", "first", "average", "max")


class TokenClassificationPipeline:
  task = "token-classification"
  head = "token_classification"

  def __init__(
    self,
    model,
    *,
    aggregation_strategy: str = "none",
    ignore_labels: list[str] | None = None,
    batch_size: int = 32,
    max_tokens: int | str | None = "auto",
    pack: bool = True,
    dtype: str | None = None,
    progress: bool = False,
  ):
    if aggregation_strategy not in STRATEGIES:
      raise UserError(
        f"aggregation_strategy={aggregation_strategy!r}: choose one of {', '.join(STRATEGIES)}."
      )
    self.model, self.runner = base.model_and_runner(
      self, model, dtype, batch_size=batch_size, max_tokens=max_tokens, pack=pack, progress=progress
    )
    self.labels = base.label_names(self.model)
    self.strategy = aggregation_strategy
    self.ignore = ["O"] if ignore_labels is None else list(ignore_labels)

  def __call__(self, inputs: str | list[str]) -> Any:
    texts, single = base.as_list(inputs, lambda x: isinstance(x, str))
    tokenizer, limit = self.model.tokenizer, self.model.config.max_position_embeddings
    encoded = []
    for i, text in enumerate(texts):
      pieces, offsets = tokenizer.tokenize_with_offsets(text)
      if len(pieces) + 2 > limit:
        raise UserError(
          f"Input {i} is {len(pieces) + 2} tokens long; the model takes at most {limit}."
        )
      encoded.append((pieces, offsets))
    rows = [
      {
        "input_ids": [
          tokenizer.cls_token_id,
          *tokenizer.convert_tokens_to_ids(p),
          tokenizer.sep_token_id,
        ]
      }
      for p, _ in encoded
    ]
    results = [
      self.entities(text, pieces, offsets, out["logits"][1 : len(pieces) + 1])
      for text, (pieces, offsets), out in zip(texts, encoded, self.runner(rows), strict=True)
    ]
    return results[0] if single else results

  def entities(self, text: str, pieces: list[str], offsets: np.ndarray, logits: np.ndarray):
    scores = _softmax(logits.astype(np.float64))
    spans = _fill_spans(offsets)
    unk = self.model.tokenizer.unk_token_id
    tokens = []
    for k, piece in enumerate(pieces):
      start, end = int(spans[k, 0]), int(spans[k, 1])
      is_unk = self.model.tokenizer.convert_tokens_to_ids(piece) == unk
      tokens.append(
        {
          "word": text[start:end] if is_unk else piece,  # HF: an unknown piece shows its text
          "scores": scores[k],
          "index": k + 1,  # in the sequence, after [CLS]
          "start": start,
          "end": end,
          # HF's rule for tokenizers without word ids: no whitespace before the piece's text
          "is_subword": start > 0
          and not is_unk
          and not text[start - 1 : start + 1].isspace()
          and " " not in text[start - 1 : start + 1],
        }
      )
    if self.strategy in ("none", "simple"):
      entities = [
        {
          "entity": self.labels[int(t["scores"].argmax())],
          "score": float(t["scores"].max()),
          "index": t["index"],
          "word": t["word"],
          "start": t["start"],
          "end": t["end"],
        }
        for t in tokens
      ]
    else:
      entities = self._words(tokens)
    if self.strategy != "none":
      entities = self._group(entities)
    key = "entity" if self.strategy == "none" else "entity_group"
    return [e for e in entities if e[key] not in self.ignore]

  def _words(self, tokens: list[dict]) -> list[dict]:
    words: list[list[dict]] = []
    for t in tokens:
      if words and t["is_subword"]:
        words[-1].append(t)
      else:
        words.append([t])
    out = []
    for word in words:
      if self.strategy == "first":
        scores = word[0]["scores"]
      elif self.strategy == "max":
        scores = max(word, key=lambda t: t["scores"].max())["scores"]
      else:
        scores = np.mean([t["scores"] for t in word], axis=0)
      label = int(scores.argmax())
      out.append(
        {
          "entity": self.labels[label],
          "score": float(scores[label]),
          "word": self.model.tokenizer.convert_tokens_to_string([t["word"] for t in word]),
          "start": word[0]["start"],
          "end": word[-1]["end"],
        }
      )
    return out

  def _group(self, entities: list[dict]) -> list[dict]:
    groups: list[list[dict]] = []
    for e in entities:
      bi, tag = _tag(e["entity"])
      if groups and bi != "B" and tag == _tag(groups[-1][-1]["entity"])[1]:
        groups[-1].append(e)
      else:
        groups.append([e])
    tokenizer = self.model.tokenizer
    return [
      {
        "entity_group": _tag(g[0]["entity"])[1],
        "score": float(np.mean([e["score"] for e in g])),
        "word": tokenizer.convert_tokens_to_string([e["word"] for e in g]),
        "start": g[0]["start"],
        "end": g[-1]["end"],
      }
      for g in groups
    ]


def _tag(label: str) -> tuple[str, str]:
  """("B" | "I", the entity type) of a label; a label without B-/I- continues ("I")."""
  if label.startswith(("B-", "I-")):
    return label[0], label[2:]
  return "I", label


def _softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _fill_spans(offsets: np.ndarray) -> np.ndarray:
  """Offsets with each character-less piece (`▁` alone) given the empty span where the next
  piece starts (at the end of the text if none follows)."""
  spans = np.array(offsets, np.int64).reshape(-1, 2)
  following = int(spans[:, 1].max(initial=0))
  for k in range(len(spans) - 1, -1, -1):
    if spans[k, 0] < 0:
      spans[k] = following, following
    else:
      following = spans[k, 0]
  return spans
