"""The task heads HF transformers has for ALBERT, on top of `AlbertModel`.

Each head owns an `AlbertModel` named `albert` (HF's prefix), so a parameter tree reads like
the HF state dict: `albert/encoder/...`, `predictions/...`, `sop_classifier/...`,
`classifier/...`, `qa_outputs/...`. Outputs carry HF's field names.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from albert_jax import axes
from albert_jax.config import AlbertConfig
from albert_jax.model import AlbertModel, activation, dense, layer_norm

Array = jax.Array
Dtype = Any


# ---- outputs ----------------------------------------------------------------------------------


@flax.struct.dataclass
class AlbertForPreTrainingOutput:
  prediction_logits: Array  # [B, L, V], or [B, P, V] at masked_positions
  sop_logits: Array  # [B, 2]


@flax.struct.dataclass
class MaskedLMOutput:
  logits: Array  # [B, L, V], or [B, P, V] at masked_positions


@flax.struct.dataclass
class SequenceClassifierOutput:
  logits: Array  # [B, num_labels]; num_labels == 1 is regression


@flax.struct.dataclass
class TokenClassifierOutput:
  logits: Array  # [B, L, num_labels]


@flax.struct.dataclass
class QuestionAnsweringOutput:
  start_logits: Array  # [B, L]
  end_logits: Array  # [B, L]


@flax.struct.dataclass
class MultipleChoiceOutput:
  logits: Array  # [B, C]


# ---- shared base ------------------------------------------------------------------------------


class AlbertHeadBase(nn.Module):
  """Fields every head shares: the ALBERT config and the model options of `AlbertModel`."""

  config: AlbertConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  scan_layers: bool = True
  remat_policy: str | None = None
  attention_implementation: str | None = None

  def encoder(self, add_pooling_layer: bool = True) -> AlbertModel:
    return AlbertModel(
      self.config,
      self.dtype,
      self.param_dtype,
      self.scan_layers,
      self.remat_policy,
      self.attention_implementation,
      add_pooling_layer=add_pooling_layer,
      name="albert",
    )

  def _dense(self, features: int, name: str) -> nn.Module:
    return dense(features, self.config, (axes.HIDDEN, None), self.dtype, self.param_dtype, name)


def gather_positions(x_BLH: Array, positions_BP: Array) -> Array:
  """x[b, positions[b, p]] for every b, p: [B, L, H], [B, P] -> [B, P, H]."""
  return jnp.take_along_axis(x_BLH, positions_BP[..., None].astype(jnp.int32), axis=1)


class AlbertMLMHead(nn.Module):
  """Dense(H -> E) -> activation -> LayerNorm -> logits against the tied word embeddings."""

  config: AlbertConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h_BPH: Array, decoder) -> Array:
    c = self.config
    x_BPE = dense(
      c.embedding_size,
      c,
      (axes.HIDDEN, axes.EMBEDDING_WIDTH),
      self.dtype,
      self.param_dtype,
      name="dense",
    )(h_BPH)
    x_BPE = activation(c.hidden_act)(x_BPE)
    x_BPE = layer_norm(
      c.layer_norm_eps, axes.EMBEDDING_WIDTH, self.dtype, self.param_dtype, name="LayerNorm"
    )(x_BPE)
    bias_V = self.param(
      "bias",
      nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes.VOCAB,)),
      (c.vocab_size,),
      self.param_dtype,
    )
    logits_BPV = decoder(x_BPE) + bias_V.astype(self.dtype)
    return nn.with_logical_constraint(logits_BPV, (axes.BATCH, axes.LENGTH, axes.ACT_VOCAB))


def _mlm_logits(module, albert: AlbertModel, h_BLH, masked_positions):
  if masked_positions is not None:
    h_BLH = gather_positions(h_BLH, masked_positions)
  head = AlbertMLMHead(module.config, module.dtype, module.param_dtype, name="predictions")
  return head(h_BLH, albert.attend)


# ---- heads ------------------------------------------------------------------------------------


class AlbertForPreTraining(AlbertHeadBase):
  """MLM + sentence-order prediction. `masked_positions` [B, P] computes MLM logits only there."""

  @nn.compact
  def __call__(
    self,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    masked_positions=None,
    deterministic: bool = True,
  ) -> AlbertForPreTrainingOutput:
    albert = self.encoder()
    out = albert(input_ids, attention_mask, token_type_ids, position_ids, deterministic)
    logits = _mlm_logits(self, albert, out.last_hidden_state, masked_positions)
    pooled_BH = nn.Dropout(self.config.classifier_dropout_prob)(
      out.pooler_output, deterministic=deterministic
    )
    sop_B2 = self._dense(2, "sop_classifier")(pooled_BH)
    return AlbertForPreTrainingOutput(prediction_logits=logits, sop_logits=sop_B2)


class AlbertForMaskedLM(AlbertHeadBase):
  """Masked LM (HF builds its encoder without the pooler here, and so do we)."""

  @nn.compact
  def __call__(
    self,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    masked_positions=None,
    deterministic: bool = True,
  ) -> MaskedLMOutput:
    albert = self.encoder(add_pooling_layer=False)
    out = albert(input_ids, attention_mask, token_type_ids, position_ids, deterministic)
    return MaskedLMOutput(logits=_mlm_logits(self, albert, out.last_hidden_state, masked_positions))


class AlbertForSequenceClassification(AlbertHeadBase):
  """Classifier on the pooled output; `num_labels == 1` is regression (e.g. STS-B)."""

  num_labels: int = 2

  @nn.compact
  def __call__(
    self,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    deterministic: bool = True,
  ) -> SequenceClassifierOutput:
    out = self.encoder()(input_ids, attention_mask, token_type_ids, position_ids, deterministic)
    pooled_BH = nn.Dropout(self.config.classifier_dropout_prob)(
      out.pooler_output, deterministic=deterministic
    )
    return SequenceClassifierOutput(logits=self._dense(self.num_labels, "classifier")(pooled_BH))


class AlbertForTokenClassification(AlbertHeadBase):
  """Per-token classifier on the last hidden state."""

  num_labels: int = 2

  @nn.compact
  def __call__(
    self,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    deterministic: bool = True,
  ) -> TokenClassifierOutput:
    c = self.config
    out = self.encoder(add_pooling_layer=False)(
      input_ids, attention_mask, token_type_ids, position_ids, deterministic
    )
    rate = (
      c.classifier_dropout_prob if c.classifier_dropout_prob is not None else c.hidden_dropout_prob
    )
    h_BLH = nn.Dropout(rate)(out.last_hidden_state, deterministic=deterministic)
    return TokenClassifierOutput(logits=self._dense(self.num_labels, "classifier")(h_BLH))


class AlbertForQuestionAnswering(AlbertHeadBase):
  """Span extraction: start and end logits per token."""

  @nn.compact
  def __call__(
    self,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    deterministic: bool = True,
  ) -> QuestionAnsweringOutput:
    out = self.encoder(add_pooling_layer=False)(
      input_ids, attention_mask, token_type_ids, position_ids, deterministic
    )
    logits_BL2 = self._dense(2, "qa_outputs")(out.last_hidden_state)
    return QuestionAnsweringOutput(start_logits=logits_BL2[..., 0], end_logits=logits_BL2[..., 1])


class AlbertForMultipleChoice(AlbertHeadBase):
  """One logit per choice from the pooled output; inputs are [B, C, L]."""

  @nn.compact
  def __call__(
    self,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    deterministic: bool = True,
  ) -> MultipleChoiceOutput:
    input_ids = jnp.asarray(input_ids)
    if input_ids.ndim != 3:
      raise ValueError(f"input_ids must be [batch, choices, seq_len]; got {input_ids.shape}.")
    batch, choices, length = input_ids.shape

    def flat(a):
      return None if a is None else jnp.asarray(a).reshape(batch * choices, length)

    out = self.encoder()(
      flat(input_ids), flat(attention_mask), flat(token_type_ids), flat(position_ids), deterministic
    )
    pooled_XH = nn.Dropout(self.config.classifier_dropout_prob)(
      out.pooler_output, deterministic=deterministic
    )
    logits_X1 = self._dense(1, "classifier")(pooled_XH)
    return MultipleChoiceOutput(logits=logits_X1.reshape(batch, choices))


HEADS = {
  "base": AlbertModel,
  "pretraining": AlbertForPreTraining,
  "masked_lm": AlbertForMaskedLM,
  "sequence_classification": AlbertForSequenceClassification,
  "token_classification": AlbertForTokenClassification,
  "question_answering": AlbertForQuestionAnswering,
  "multiple_choice": AlbertForMultipleChoice,
}
