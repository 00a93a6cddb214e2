"""`pipeline("text-classification", model=DIR)`: labels and scores of a sequence classifier,
with HF transformers' arguments and output fields.

    classify = albert_jax.pipeline("text-classification", model="WORKDIR/export")
    classify("a gripping film")                    # {"label": "positive", "score": 0.97}
    classify("A man sleeps.", text_pair="A person rests.", top_k=None)
    classify({"text": "A man sleeps.", "text_pair": "A person rests."}, top_k=None)  # the same

Inputs, as `transformers.pipeline`'s: a text, or `{"text", "text_pair"}` for sentence pairs; a
list of them gives a list of results (also of one). `text_pair=` pairs every text given with
that one text. `top_k`: 1 (default) gives the best `{"label", "score"}`; k > 1 or None (all labels)
gives a list sorted by score (transformers wraps one text's best label in a list when no `top_k`
is given; we do not). `function_to_apply`: "softmax" (default with several labels),
"sigmoid" or "none"; a regression head (one label) returns its raw score unless told
otherwise. Labels are the model's stored names (`id2label`), else `LABEL_<i>`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from albert_jax.errors import UserError
from albert_jax.pipelines import base

FUNCTIONS = ("softmax", "sigmoid", "none")


def _single(x: Any) -> bool:
  return isinstance(x, (str, dict))


class TextClassificationPipeline:
  task = "text-classification"
  head = "sequence_classification"

  def __init__(
    self,
    model,
    *,
    top_k: int | None = 1,
    function_to_apply: str | None = None,
    batch_size: int = 32,
    max_tokens: int | str | None = "auto",
    dtype: str | None = None,
    progress: bool = False,
  ):
    self.model, self.runner = base.model_and_runner(
      self, model, dtype, batch_size=batch_size, max_tokens=max_tokens, progress=progress
    )
    self.labels = base.label_names(self.model)
    self.top_k, self.function_to_apply = top_k, function_to_apply

  def encode(self, item: Any) -> dict[str, list[int]]:
    if isinstance(item, dict):
      if not isinstance(item.get("text"), str):
        raise UserError(f"Input {str(item)[:80]!r} has no 'text' string.")
      text, pair = item["text"], item.get("text_pair")
    elif isinstance(item, str):
      text, pair = item, None
    else:
      raise UserError(f"Input {str(item)[:80]!r}: give a text or {{'text', 'text_pair'}}.")
    limit = self.model.config.max_position_embeddings
    encoded = self.model.tokenizer(text, pair, truncation=True, max_length=limit)
    return {k: encoded[k] for k in ("input_ids", "token_type_ids")}

  def __call__(self, inputs: Any, text_pair: str | None = None, **options: Any) -> Any:
    unknown = sorted(set(options) - {"top_k", "function_to_apply"})
    if unknown:
      raise UserError(
        f"Unknown text-classification options {unknown}; the options are top_k, "
        "function_to_apply and text_pair."
      )
    items, single = base.as_list(inputs, _single)
    if text_pair is not None:
      if not isinstance(text_pair, str) or not all(isinstance(i, str) for i in items):
        raise UserError(
          f"text_pair={repr(text_pair)[:60]}: give one text, with texts as the inputs; for a "
          "pair per input give {'text', 'text_pair'} dicts."
        )
      items = [{"text": text, "text_pair": text_pair} for text in items]
    results = [
      self.postprocess(o["logits"], **options)
      for o in self.runner([self.encode(item) for item in items])
    ]
    return results[0] if single else results

  def postprocess(
    self, logits: np.ndarray, top_k: Any = "default", function_to_apply: str | None = None
  ) -> Any:
    top_k = self.top_k if top_k == "default" else top_k
    function = function_to_apply or self.function_to_apply
    if function is None:
      function = "none" if len(self.labels) == 1 else "softmax"
    if function not in FUNCTIONS:
      raise UserError(f"function_to_apply={function!r}: choose one of {', '.join(FUNCTIONS)}.")
    scores = _apply(function, logits.astype(np.float64))
    order = np.argsort(-scores, kind="stable")
    ranked = [{"label": self.labels[i], "score": float(scores[i])} for i in order]
    if top_k == 1:
      return ranked[0]
    return ranked if top_k is None else ranked[:top_k]


def _apply(function: str, logits: np.ndarray) -> np.ndarray:
  if function == "softmax":
    e = np.exp(logits - logits.max())
    return e / e.sum()
  if function == "sigmoid":
    return 1.0 / (1.0 + np.exp(-logits))
  return logits
