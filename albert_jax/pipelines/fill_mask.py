"""Fill-mask: the likeliest tokens for each `[MASK]`, as HF transformers' `fill-mask` pipeline
(behind `pipeline("fill-mask")` and `python -m albert_jax.fill_mask`).

    fill = FillMask(albert_jax.from_pretrained(DIR, head="masked_lm"))
    fill("Hello I'm a [MASK] model.")  # [{"score", "token", "token_str", "sequence"}, ...]

Results have HF's fields: `score` (softmax probability over the vocabulary), `token` (id),
`token_str` (the token decoded) and `sequence` (the text with that token in the mask's place).
For a text with one mask the result is a list of `top_k` candidates; with several masks, one
such list per mask, in order, whose `sequence`s keep the special tokens and the other masks
(as HF does). A list of texts gives a list of results. Texts are batched by length, each batch
cut to its bucket (`pipelines.features.length_batches`: one compilation per length), and only the
masked positions go through the vocabulary projection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from albert_jax.errors import UserError
from albert_jax.pipelines.features import length_batches, pad
from albert_jax.tokenizer import MASK, check_token_ids
from albert_jax.weights.pretrained import Pretrained, from_pretrained

Candidate = dict[str, Any]


class FillMask:
  """The fill-mask pipeline over a model with an MLM head (`masked_lm` or `pretraining`)."""

  def __init__(self, model: Pretrained | str, top_k: int = 5, batch_size: int = 8):
    if not isinstance(model, Pretrained):
      model = from_pretrained(model, head="masked_lm", strict=True)
    if model.head not in ("masked_lm", "pretraining"):
      raise UserError(
        f"fill-mask needs an MLM head, got head {model.head!r}; load a "
        "pretraining or masked_lm checkpoint with head='masked_lm'."
      )
    self.model, self.top_k, self.batch_size = model, top_k, batch_size
    self._top_k = jax.jit(self._scores, static_argnames="top_k")

  def _scores(self, params, ids_BL, mask_BL, positions_BP, *, top_k):
    out = self.model.module.apply(
      {"params": params}, ids_BL, mask_BL, masked_positions=positions_BP
    )
    logits_BPV = getattr(out, "logits", None)
    if logits_BPV is None:
      logits_BPV = out.prediction_logits
    probs_BPV = jax.nn.softmax(logits_BPV.astype(jnp.float32), axis=-1)
    return jax.lax.top_k(probs_BPV, top_k)

  def __call__(self, texts: str | Sequence[str], top_k: int | None = None) -> list[Any]:
    """Candidates for `texts` (a text or a list of them); see the module docstring."""
    single = isinstance(texts, str)
    texts = [texts] if single else list(texts)
    top_k = min(top_k or self.top_k, self.model.config.vocab_size)
    tokenizer = self.model.tokenizer
    limit = self.model.config.max_position_embeddings
    encoded = [tokenizer(text)["input_ids"] for text in texts]
    check_token_ids(encoded, self.model.config.vocab_size, "fill_mask")
    masks = [[p for p, i in enumerate(ids) if i == tokenizer.mask_token_id] for ids in encoded]
    for text, ids, where in zip(texts, encoded, masks, strict=True):
      if not where:
        raise UserError(
          f"No {MASK} in text {text!r}; fill-mask needs at least one {MASK} token in every text."
        )
      if len(ids) > limit:
        raise UserError(
          f"Text {text[:60]!r}... is {len(ids)} tokens long; the model takes at "
          f"most {limit}. Shorten it around the {MASK}."
        )

    results: list[Any] = [None] * len(texts)
    for batch in length_batches([len(ids) for ids in encoded], self.batch_size, limit):
      rows = batch.indices
      ids_BL, mask_BL = pad([encoded[i] for i in rows], batch.length, len(rows))
      most = max(len(masks[i]) for i in rows)
      positions_BP, _ = pad([masks[i] for i in rows], 1 << (most - 1).bit_length(), len(rows))
      scores_BPK, tokens_BPK = jax.device_get(
        self._top_k(self.model.params, ids_BL, mask_BL, positions_BP, top_k=top_k)
      )
      for b, i in enumerate(rows[batch.weights > 0]):  # the filler rows' outputs are dropped
        results[i] = self._candidates(encoded[i], masks[i], scores_BPK[b], tokens_BPK[b])
    return results[0] if single else results

  def _candidates(
    self, ids: list[int], masks: list[int], scores_PK: np.ndarray, tokens_PK: np.ndarray
  ) -> list[Any]:
    tokenizer, one_mask = self.model.tokenizer, len(masks) == 1
    per_mask = []
    for p, position in enumerate(masks):
      row = []
      for score, token in zip(scores_PK[p], tokens_PK[p], strict=True):
        filled = list(ids)
        filled[position] = int(token)
        row.append(
          {
            "score": float(score),
            "token": int(token),
            "token_str": tokenizer.decode([int(token)]),
            # As HF: special tokens are dropped for one mask; kept (other masks too) for several.
            "sequence": tokenizer.decode(filled, skip_special_tokens=one_mask),
          }
        )
      per_mask.append(row)
    return per_mask[0] if one_mask else per_mask
