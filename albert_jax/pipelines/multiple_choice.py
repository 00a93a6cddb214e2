"""`pipeline("multiple-choice", model=DIR)`: which of several answers fits a question.

    choose = albert_jax.pipeline("multiple-choice", model=DIR)
    choose({"question": "The sky is", "choices": ["blue.", "a fish."]})
    # {"label": 0, "scores": [0.91, 0.09]}

Each choice is encoded as RACE's features are: `[CLS] context question [SEP] choice [SEP]` (the
optional `context` before the question, one space between them), truncated longest-first to
the model's length; `scores` is the softmax over the choices' logits and `label` the index of
the best one. (HF transformers has no multiple-choice pipeline; `AlbertForMultipleChoice` on the
same ids gives the same logits.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from albert_jax.errors import UserError
from albert_jax.pipelines import base


class MultipleChoicePipeline:
  task = "multiple-choice"
  head = "multiple_choice"

  def __init__(
    self,
    model,
    *,
    batch_size: int = 8,
    max_tokens: int | str | None = "auto",
    dtype: str | None = None,
    progress: bool = False,
  ):
    self.model, self.runner = base.model_and_runner(
      self, model, dtype, batch_size=batch_size, max_tokens=max_tokens, progress=progress
    )

  def encode(self, i: int, item: Any) -> dict[str, np.ndarray]:
    if not isinstance(item, dict) or not isinstance(item.get("question"), str):
      raise UserError(f"Input {i} has no 'question' text: {str(item)[:80]!r}.")
    choices = item.get("choices")
    if (
      not isinstance(choices, list)
      or len(choices) < 2
      or not all(isinstance(c, str) for c in choices)
    ):
      raise UserError(f"Input {i}: 'choices' must be a list of at least two texts.")
    first = " ".join(t for t in (item.get("context"), item["question"]) if t)
    limit = self.model.config.max_position_embeddings
    enc = self.model.tokenizer(
      [first] * len(choices),
      choices,
      truncation=True,
      max_length=limit,
      padding="longest",
      return_tensors="np",
    )
    return {
      "input_ids": enc["input_ids"],
      "token_type_ids": enc["token_type_ids"],
      "attention_mask": enc["attention_mask"],
    }

  def __call__(self, inputs: Any) -> Any:
    items, single = base.as_list(inputs, lambda x: isinstance(x, dict))
    rows = [self.encode(i, item) for i, item in enumerate(items)]
    results: list[Any] = [None] * len(rows)
    by_choices: dict[int, list[int]] = {}  # one batch shape per number of choices
    for i, row in enumerate(rows):
      by_choices.setdefault(len(row["input_ids"]), []).append(i)
    for indices in by_choices.values():
      for i, out in zip(indices, self.runner([rows[i] for i in indices]), strict=True):
        logits = out["logits"].astype(np.float64)
        e = np.exp(logits - logits.max())
        scores = e / e.sum()
        results[i] = {"label": int(scores.argmax()), "scores": scores.tolist()}
    return results[0] if single else results
