"""Pure training and evaluation steps for every ALBERT head.

`train_step(state, batch, rng) -> (state, metrics)` and `eval_step(state, batch) -> metrics`
are plain functions: the caller applies `jax.jit` with the shardings it wants. The task a step
trains is the state's `head` (a static field), which picks the loss from `LOSSES`.

Batches are dicts of arrays with these keys (what the data pipelines produce):
  all heads: input_ids, attention_mask, token_type_ids  [B, L]  ([B, C, L] multiple choice)
  pretraining / masked_lm: masked_lm_positions, masked_lm_ids, masked_lm_weights [B, P]
  pretraining: sentence_order_label [B]
  sequence_classification / multiple_choice: label [B] (float for regression)
  token_classification: labels [B, L] (-100 = ignored)
  question_answering: start_positions, end_positions [B]
An optional `example_weight` [B] (0 for padding examples in the last eval batch) weights
every per-example loss and metric.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

Array = jax.Array
Batch = dict[str, Array]
Metrics = dict[str, Array]


class TrainState(flax.struct.PyTreeNode):
  step: Array
  params: Any
  opt_state: Any
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  head: str = flax.struct.field(pytree_node=False, default="base")


def create_train_state(module, params, tx: optax.GradientTransformation, head: str) -> TrainState:
  """A fresh state; under `jax.jit(..., out_shardings=...)` it is created sharded."""
  if head not in LOSSES:
    raise ValueError(f"No training loss for head {head!r}; trainable heads: {sorted(LOSSES)}.")
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=tx.init(params),
    apply_fn=module.apply,
    tx=tx,
    head=head,
  )


# ---- losses -----------------------------------------------------------------------------------


def _weights(batch: Batch, n: int) -> Array:
  w = batch.get("example_weight")
  return jnp.ones((n,), jnp.float32) if w is None else w.astype(jnp.float32)


def _wmean(x: Array, w: Array) -> Array:
  return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1e-9)


def _xent(logits: Array, labels: Array) -> Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def _classification(out, batch: Batch):
  logits_BC = out.logits.astype(jnp.float32)
  w_B = _weights(batch, logits_BC.shape[0])
  if logits_BC.shape[-1] == 1:  # regression (STS-B)
    err_B = jnp.square(logits_BC[:, 0] - batch["label"].astype(jnp.float32))
    return _wmean(err_B, w_B), {"loss": _wmean(err_B, w_B)}
  labels_B = batch["label"].astype(jnp.int32)
  loss = _wmean(_xent(logits_BC, labels_B), w_B)
  acc = _wmean((jnp.argmax(logits_BC, -1) == labels_B).astype(jnp.float32), w_B)
  return loss, {"loss": loss, "accuracy": acc}


def _token_classification(out, batch: Batch):
  logits_BLC = out.logits.astype(jnp.float32)
  labels_BL = batch["labels"].astype(jnp.int32)
  valid_BL = (labels_BL >= 0).astype(jnp.float32) * _weights(batch, labels_BL.shape[0])[:, None]
  loss = _wmean(_xent(logits_BLC, jnp.maximum(labels_BL, 0)), valid_BL)
  acc = _wmean((jnp.argmax(logits_BLC, -1) == labels_BL).astype(jnp.float32), valid_BL)
  return loss, {"loss": loss, "accuracy": acc}


def _question_answering(out, batch: Batch):
  w_B = _weights(batch, out.start_logits.shape[0])
  start = _xent(out.start_logits, batch["start_positions"].astype(jnp.int32))
  end = _xent(out.end_logits, batch["end_positions"].astype(jnp.int32))
  loss = _wmean((start + end) / 2, w_B)
  return loss, {"loss": loss}


def _masked_lm(out_logits_BPV: Array, batch: Batch) -> tuple[Array, Metrics]:
  ids_BP = batch["masked_lm_ids"].astype(jnp.int32)
  w_BP = batch["masked_lm_weights"].astype(jnp.float32)
  w_BP = w_BP * _weights(batch, ids_BP.shape[0])[:, None]
  loss = _wmean(_xent(out_logits_BPV, ids_BP), w_BP)
  acc = _wmean((jnp.argmax(out_logits_BPV, -1) == ids_BP).astype(jnp.float32), w_BP)
  return loss, {"mlm_loss": loss, "mlm_accuracy": acc}


def _mlm_only(out, batch: Batch):
  loss, metrics = _masked_lm(out.logits, batch)
  return loss, {"loss": loss, **metrics}


def _pretraining(out, batch: Batch):
  mlm, metrics = _masked_lm(out.prediction_logits, batch)
  labels_B = batch["sentence_order_label"].astype(jnp.int32)
  w_B = _weights(batch, labels_B.shape[0])
  sop = _wmean(_xent(out.sop_logits, labels_B), w_B)
  sop_acc = _wmean((jnp.argmax(out.sop_logits, -1) == labels_B).astype(jnp.float32), w_B)
  loss = mlm + sop
  return loss, {"loss": loss, **metrics, "sop_loss": sop, "sop_accuracy": sop_acc}


LOSSES = {
  "pretraining": _pretraining,
  "masked_lm": _mlm_only,
  "sequence_classification": _classification,
  "multiple_choice": _classification,
  "token_classification": _token_classification,
  "question_answering": _question_answering,
}
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def forward(apply_fn, head: str, params, batch: Batch, rng: Array | None):
  """Runs the model on a batch; dropout is on when `rng` is given."""
  kwargs = {k: batch[k] for k in _MODEL_INPUTS if k in batch}
  if head in ("pretraining", "masked_lm"):
    kwargs["masked_positions"] = batch["masked_lm_positions"]
  if rng is None:
    return apply_fn({"params": params}, **kwargs, deterministic=True)
  return apply_fn({"params": params}, **kwargs, deterministic=False, rngs={"dropout": rng})


def loss_fn(params, state: TrainState, batch: Batch, rng: Array | None):
  out = forward(state.apply_fn, state.head, params, batch, rng)
  return LOSSES[state.head](out, batch)


def train_step(state: TrainState, batch: Batch, rng: Array) -> tuple[TrainState, Metrics]:
  """One optimizer step. Dropout uses `fold_in(rng, step)`, so a resumed run repeats it."""
  step_rng = jax.random.fold_in(rng, state.step)
  grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, state, batch, step_rng)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {**metrics, "grad_norm": optax.global_norm(grads)}
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(state: TrainState, batch: Batch) -> Metrics:
  """Loss and metrics without dropout."""
  _, metrics = loss_fn(state.params, state, batch, None)
  return metrics


def predict_step(state: TrainState, batch: Batch):
  """The model's outputs (logits) without dropout, for prediction files."""
  return forward(state.apply_fn, state.head, state.params, batch, None)
