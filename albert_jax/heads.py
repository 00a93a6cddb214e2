"""The task heads HF transformers has for ALBERT, on top of `AlbertModel`.

Each head owns an `AlbertModel` named `albert` (HF's prefix), so a parameter tree reads like
the HF state dict: `albert/encoder/...`, `predictions/...`, `sop_classifier/...`,
`classifier/...`, `qa_outputs/...`. Outputs carry HF's field names.

`HEADS` at the bottom is the one registry of heads (module, HF class, HF parameter groups,
loss, extra inputs), followed by the factory that builds a head's module and parameters.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from albert_jax import axes, losses
from albert_jax.config import AlbertConfig
from albert_jax.errors import UserError
from albert_jax.model import AlbertModel, activation, dense, layer_norm

Array = jax.Array
Dtype = Any
Loss = Callable[[Any, dict[str, Array]], tuple[Array, dict[str, Array]]]


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


# ---- the head registry ----------------------------------------------------------------------

# Batch keys every head takes as model inputs ([B, L]; [B, C, L] for multiple choice).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Pretraining data's masked positions, as the MLM heads take them.
_MASKED_POSITIONS = {"masked_positions": "masked_lm_positions"}


@dataclasses.dataclass(frozen=True)
class HeadSpec:
  """One head as training, sharding and conversion see it; `HEADS` holds one per head."""

  module: type[nn.Module]  # the flax module (its tree mirrors `hf_class`'s state dict)
  hf_class: str  # HF transformers' class with the same parameters (config.json `architectures`)
  hf_parts: tuple[str, ...]  # parameter groups beside the encoder (`albert_jax.weights.hf.PARTS`)
  loss: Loss | None = None  # (outputs, batch) -> (loss, metrics); None: not trainable
  # Model arguments beyond MODEL_INPUTS, and the batch key each is read from.
  extra_inputs: Mapping[str, str] = dataclasses.field(default_factory=dict)


HEADS: dict[str, HeadSpec] = {
  "base": HeadSpec(AlbertModel, "AlbertModel", ("pooler",)),
  "pretraining": HeadSpec(
    AlbertForPreTraining,
    "AlbertForPreTraining",
    ("pooler", "predictions", "sop_classifier"),
    losses.pretraining,
    _MASKED_POSITIONS,
  ),
  "masked_lm": HeadSpec(
    AlbertForMaskedLM, "AlbertForMaskedLM", ("predictions",), losses.masked_lm, _MASKED_POSITIONS
  ),
  "sequence_classification": HeadSpec(
    AlbertForSequenceClassification,
    "AlbertForSequenceClassification",
    ("pooler", "classifier"),
    losses.classification,
  ),
  "token_classification": HeadSpec(
    AlbertForTokenClassification,
    "AlbertForTokenClassification",
    ("classifier",),
    losses.token_classification,
  ),
  "question_answering": HeadSpec(
    AlbertForQuestionAnswering,
    "AlbertForQuestionAnswering",
    ("qa_outputs",),
    losses.question_answering,
  ),
  "multiple_choice": HeadSpec(
    AlbertForMultipleChoice,
    "AlbertForMultipleChoice",
    ("pooler", "classifier"),
    losses.classification,
  ),
}


def head_spec(head: str) -> HeadSpec:
  """`HEADS[head]`; an unknown name is a UserError listing the known ones."""
  if head not in HEADS:
    raise UserError(f"Unknown head {head!r}; choose one of {sorted(HEADS)}.")
  return HEADS[head]


def has_num_labels(head: str) -> bool:
  """Whether `head`'s module takes `num_labels` (its classifier's width)."""
  return "num_labels" in {f.name for f in dataclasses.fields(head_spec(head).module)}


# ---- building a head's module and parameters --------------------------------------------------

Params = dict[str, Any]


def create_module(
  config: AlbertConfig, head: str = "base", num_labels: int | None = None, **options: Any
) -> nn.Module:
  """The flax module for `head`; `options` are model options (dtype, scan_layers, ...)."""
  if num_labels is not None:
    options["num_labels"] = num_labels
  return head_spec(head).module(config, **options)


def init_params(module: nn.Module, rng: jax.Array) -> Params:
  """Freshly initialized parameters of `module` (plain arrays; jit it to place them)."""
  ids = jnp.zeros((1, 1, 4) if isinstance(module, AlbertForMultipleChoice) else (1, 4), jnp.int32)
  return nn.unbox(module.init(rng, ids)["params"])


def abstract_params(module: nn.Module) -> Params:
  """Shapes and dtypes of `module`'s parameters (no memory allocated)."""
  return jax.tree.map(lambda leaf: leaf, _abstract_params(module))  # a fresh tree each call


@functools.lru_cache(maxsize=32)
def _abstract_params(module: nn.Module) -> Params:  # tracing a model costs ~0.1-1 s
  return jax.eval_shape(lambda: init_params(module, jax.random.key(0)))
