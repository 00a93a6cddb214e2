"""`pipeline("fill-mask")` and `pipeline("feature-extraction")`: `pipelines.fill_mask.FillMask`
and `pipelines.features.extract_features` behind the pipeline interface.

fill-mask: a text with `[MASK]` -> HF's `[{"score", "token", "token_str", "sequence"}, ...]`
(`top_k` candidates; one such list per mask when there are several).
feature-extraction: a text -> the last hidden states `[1, L, H]` as nested lists (HF's shape),
or with `pooled=True` the pooler output `[H]`.
"""

from __future__ import annotations

from typing import Any

from albert_jax.pipelines import base
from albert_jax.pipelines.features import extract_features
from albert_jax.pipelines.fill_mask import FillMask
from albert_jax.weights.pretrained import Pretrained, from_pretrained


class FillMaskPipeline:
  task = "fill-mask"

  def __init__(
    self,
    model,
    *,
    top_k: int = 5,
    batch_size: int = 8,
    dtype: str | None = None,
    progress: bool = False,
  ):
    if not isinstance(model, Pretrained):
      options = {} if dtype is None else {"dtype": base.dtype_of(dtype)}
      model = from_pretrained(model, head="masked_lm", strict=True, **options)
    self.fill = FillMask(model, top_k=top_k, batch_size=batch_size)
    self.model = self.fill.model

  def __call__(self, inputs: str | list[str], top_k: int | None = None) -> Any:
    return self.fill(inputs, top_k=top_k)


class FeatureExtractionPipeline:
  task = "feature-extraction"

  def __init__(
    self,
    model,
    *,
    batch_size: int = 32,
    pooled: bool = False,
    dtype: str | None = None,
    progress: bool = False,
  ):
    if not isinstance(model, Pretrained):
      options = {} if dtype is None else {"dtype": base.dtype_of(dtype)}
      model = from_pretrained(model, head="base", **options)
    self.model, self.batch_size, self.pooled, self.progress = model, batch_size, pooled, progress

  def __call__(self, inputs: str | list[str]) -> Any:
    texts, single = base.as_list(inputs, lambda x: isinstance(x, str))
    out = extract_features(
      self.model, texts, batch_size=self.batch_size, pooled=self.pooled, progress=self.progress
    )
    if self.pooled:
      results = [row.tolist() for row in out.pooler_output]
    else:
      results = [[h.tolist()] for h in out.last_hidden_state]
    return results[0] if single else results
