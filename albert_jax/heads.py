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
from typing import Any, ClassVar

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from albert_jax import axes, losses
from albert_jax.config import AlbertConfig
from albert_jax.errors import UserError
from albert_jax.layers import AlbertModule, activation
from albert_jax.model import AlbertModel

Array = jax.Array
Loss = Callable[[Any, dict[str, Array]], tuple[Array, dict[str, Array]]]


# ---- outputs ----------------------------------------------------------------------------------
# Every output also has HF's research fields, None unless asked for: `hidden_states`
# [S, B, L, H] (output_hidden_states) and `attentions` [K, B, N, L, L] (output_attentions);
# see `AlbertModel`. For multiple choice, B is batch x choices.


@flax.struct.dataclass
class AlbertForPreTrainingOutput:
  prediction_logits: Array  # [B, L, V], or [B, P, V] at masked_positions
  sop_logits: Array  # [B, 2]
  hidden_states: Array | None = None
  attentions: Array | None = None


@flax.struct.dataclass
class MaskedLMOutput:
  logits: Array  # [B, L, V], or [B, P, V] at masked_positions
  hidden_states: Array | None = None
  attentions: Array | None = None


@flax.struct.dataclass
class SequenceClassifierOutput:
  logits: Array  # [B, num_labels]; num_labels == 1 is regression
  hidden_states: Array | None = None
  attentions: Array | None = None


@flax.struct.dataclass
class TokenClassifierOutput:
  logits: Array  # [B, L, num_labels]
  hidden_states: Array | None = None
  attentions: Array | None = None


@flax.struct.dataclass
class QuestionAnsweringOutput:
  start_logits: Array  # [B, L]
  end_logits: Array  # [B, L]
  hidden_states: Array | None = None
  attentions: Array | None = None


@flax.struct.dataclass
class MultipleChoiceOutput:
  logits: Array  # [B, C]
  hidden_states: Array | None = None
  attentions: Array | None = None


# ---- shared base ------------------------------------------------------------------------------

# The encoder's keyword-only research options, which every head passes on (see `AlbertModel`).
RESEARCH_OPTIONS = ("inputs_embeds", "head_mask", "output_attentions", "output_hidden_states")


class AlbertHead(AlbertModule):
  """A task head over `AlbertModel`: the encoder, named `albert` as in HF's state dict, then
  `head`, what the task computes from the encoder's output.

  Every head is called the same way: `(input_ids, attention_mask=None, token_type_ids=None,
  position_ids=None, deterministic=True, **kwargs)`, where `kwargs` are the encoder's research
  options (`RESEARCH_OPTIONS`, returned as `hidden_states` and `attentions` in the head's
  output) and the head's own inputs (`masked_positions` for the MLM heads).
  """

  pooled: ClassVar[bool] = True  # the encoder has its pooler (HF's `add_pooling_layer`)

  @nn.compact
  def __call__(
    self,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    deterministic: bool = True,
    **kwargs,
  ):
    research = {k: kwargs.pop(k) for k in RESEARCH_OPTIONS if k in kwargs}
    inputs = dict(
      input_ids=input_ids,
      attention_mask=attention_mask,
      token_type_ids=token_type_ids,
      position_ids=position_ids,
      **research,
    )
    albert = AlbertModel(self.config, self.options, self.pooled, name="albert")
    out = albert(**self.encoder_inputs(inputs), deterministic=deterministic)
    return self.head(albert, out, inputs, deterministic, **kwargs)

  def encoder_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
    """The encoder's arguments from the call's (multiple choice flattens its choices)."""
    return inputs

  def head(
    self, albert: AlbertModel, out, inputs: dict[str, Any], deterministic: bool, **head_inputs
  ):
    """The head's output (HF's field names) from the encoder's `out` (`AlbertModelOutput`);
    `inputs` are the call's arguments (before `encoder_inputs`)."""
    raise NotImplementedError

  def dropout(self, x: Array, deterministic: bool) -> Array:
    """Dropout before a classifier (`classifier_dropout_prob`; HF's token classifier falls back
    to `hidden_dropout_prob` where it is None)."""
    c = self.config
    rate = c.hidden_dropout_prob if c.classifier_dropout_prob is None else c.classifier_dropout_prob
    return nn.Dropout(rate)(x, deterministic=deterministic)

  def classifier(self, features: int, name: str) -> nn.Module:
    return self.dense(features, (axes.HIDDEN, None), name)


def gather_positions(x_BLH: Array, positions_BP: Array) -> Array:
  """x[b, positions[b, p]] for every b, p: [B, L, H], [B, P] -> [B, P, H]."""
  return jnp.take_along_axis(x_BLH, positions_BP[..., None].astype(jnp.int32), axis=1)


class AlbertMLMHead(AlbertModule):
  """Dense(H -> E) -> activation -> LayerNorm -> logits against the tied word embeddings."""

  @nn.compact
  def __call__(self, h_BPH: Array, decoder) -> Array:
    c = self.config
    x_BPE = self.dense(c.embedding_size, (axes.HIDDEN, axes.EMBEDDING_WIDTH), "dense")(h_BPH)
    x_BPE = activation(c.hidden_act)(x_BPE)
    x_BPE = self.layer_norm(axes.EMBEDDING_WIDTH, name="LayerNorm")(x_BPE)
    bias_V = self.param(
      "bias",
      nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes.VOCAB,)),
      (c.vocab_size,),
      self.options.param_dtype,
    )
    logits_BPV = decoder(x_BPE) + bias_V.astype(self.options.dtype)
    return nn.with_logical_constraint(logits_BPV, (axes.BATCH, axes.LENGTH, axes.ACT_VOCAB))


def _mlm_logits(module, albert: AlbertModel, h_BLH, masked_positions):
  if masked_positions is not None:
    h_BLH = gather_positions(h_BLH, masked_positions)
  head = AlbertMLMHead(config=module.config, options=module.options, name="predictions")
  return head(h_BLH, albert.attend)


def _research(out) -> dict[str, Any]:
  """The research fields of an `AlbertModelOutput`, to pass on into a head's output."""
  return dict(hidden_states=out.hidden_states, attentions=out.attentions)


# ---- heads ------------------------------------------------------------------------------------


class AlbertForPreTraining(AlbertHead):
  """MLM + sentence-order prediction. `masked_positions` [B, P] computes MLM logits only there."""

  def head(
    self, albert, out, inputs, deterministic, masked_positions=None
  ) -> AlbertForPreTrainingOutput:
    logits = _mlm_logits(self, albert, out.last_hidden_state, masked_positions)
    pooled_BH = self.dropout(out.pooler_output, deterministic)
    sop_B2 = self.classifier(2, "sop_classifier")(pooled_BH)
    return AlbertForPreTrainingOutput(prediction_logits=logits, sop_logits=sop_B2, **_research(out))


class AlbertForMaskedLM(AlbertHead):
  """Masked LM (HF builds its encoder without the pooler here, and so do we);
  `masked_positions` [B, P] computes the logits only there."""

  pooled = False

  def head(self, albert, out, inputs, deterministic, masked_positions=None) -> MaskedLMOutput:
    logits = _mlm_logits(self, albert, out.last_hidden_state, masked_positions)
    return MaskedLMOutput(logits=logits, **_research(out))


class AlbertForSequenceClassification(AlbertHead):
  """Classifier on the pooled output; `num_labels == 1` is regression (e.g. STS-B)."""

  num_labels: int = 2

  def head(self, albert, out, inputs, deterministic) -> SequenceClassifierOutput:
    pooled_BH = self.dropout(out.pooler_output, deterministic)
    logits = self.classifier(self.num_labels, "classifier")(pooled_BH)
    return SequenceClassifierOutput(logits=logits, **_research(out))


class AlbertForTokenClassification(AlbertHead):
  """Per-token classifier on the last hidden state."""

  num_labels: int = 2
  pooled = False

  def head(self, albert, out, inputs, deterministic) -> TokenClassifierOutput:
    h_BLH = self.dropout(out.last_hidden_state, deterministic)
    logits = self.classifier(self.num_labels, "classifier")(h_BLH)
    return TokenClassifierOutput(logits=logits, **_research(out))


class AlbertForQuestionAnswering(AlbertHead):
  """Span extraction: start and end logits per token."""

  pooled = False

  def head(self, albert, out, inputs, deterministic) -> QuestionAnsweringOutput:
    logits_BL2 = self.classifier(2, "qa_outputs")(out.last_hidden_state)
    return QuestionAnsweringOutput(
      start_logits=logits_BL2[..., 0], end_logits=logits_BL2[..., 1], **_research(out)
    )


class AlbertForMultipleChoice(AlbertHead):
  """One logit per choice from the pooled output; inputs are [B, C, L] (inputs_embeds
  [B, C, L, E]); `hidden_states` and `attentions` have B x C rows, as in HF."""

  def encoder_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
    """Each input [B, C, L, ...] -> [B x C, L, ...]; the others unchanged."""
    batch, choices, length = _choices(inputs)

    def flat(a):  # [B, C, L, ...] -> [B x C, L, ...]
      a = jnp.asarray(a)
      return a.reshape(batch * choices, length, *a.shape[3:])

    per_choice = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds")
    return {k: flat(a) if k in per_choice and a is not None else a for k, a in inputs.items()}

  def head(self, albert, out, inputs, deterministic) -> MultipleChoiceOutput:
    pooled_XH = self.dropout(out.pooler_output, deterministic)
    logits_X1 = self.classifier(1, "classifier")(pooled_XH)
    return MultipleChoiceOutput(logits=logits_X1.reshape(_choices(inputs)[:2]), **_research(out))


def _choices(inputs: dict[str, Any]) -> tuple[int, int, int]:
  """(batch, choices, length) of multiple-choice inputs, checked to be [B, C, L] (input_ids)
  or [B, C, L, E] (inputs_embeds)."""
  embeds = inputs.get("inputs_embeds")
  given = jnp.asarray(inputs["input_ids"] if embeds is None else embeds)
  if given.ndim != (3 if embeds is None else 4):
    what = "input_ids must be [batch, choices, seq_len]"
    if embeds is not None:
      what = "inputs_embeds must be [batch, choices, seq_len, embedding_size]"
    raise UserError(f"{what}; got {given.shape}.")
  return given.shape[:3]


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
