"""The training loss of every trainable head: `loss(outputs, batch) -> (loss, metrics)`.

Each function reads the head's outputs (HF's field names) and the batch keys its data
pipeline produces (see `albert_jax.train`); `albert_jax.heads.HEADS` says which head uses
which. An optional `example_weight` [B] (0 for padding examples in the last eval batch)
weights every per-example loss and metric.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
Batch = dict[str, Array]
Metrics = dict[str, Array]


def _weights(batch: Batch, n: int) -> Array:
  w = batch.get("example_weight")
  return jnp.ones((n,), jnp.float32) if w is None else w.astype(jnp.float32)


def _wmean(x: Array, w: Array) -> Array:
  return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1e-9)


def _xent(logits: Array, labels: Array) -> Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def classification(out, batch: Batch) -> tuple[Array, Metrics]:
  """Sequence classification and multiple choice: `label` [B]; one logit is regression."""
  logits_BC = out.logits.astype(jnp.float32)
  w_B = _weights(batch, logits_BC.shape[0])
  if logits_BC.shape[-1] == 1:  # regression (STS-B)
    err_B = jnp.square(logits_BC[:, 0] - batch["label"].astype(jnp.float32))
    return _wmean(err_B, w_B), {"loss": _wmean(err_B, w_B)}
  labels_B = batch["label"].astype(jnp.int32)
  loss = _wmean(_xent(logits_BC, labels_B), w_B)
  acc = _wmean((jnp.argmax(logits_BC, -1) == labels_B).astype(jnp.float32), w_B)
  return loss, {"loss": loss, "accuracy": acc}


def token_classification(out, batch: Batch) -> tuple[Array, Metrics]:
  """`labels` [B, L]; negative labels (-100) are ignored."""
  logits_BLC = out.logits.astype(jnp.float32)
  labels_BL = batch["labels"].astype(jnp.int32)
  valid_BL = (labels_BL >= 0).astype(jnp.float32) * _weights(batch, labels_BL.shape[0])[:, None]
  loss = _wmean(_xent(logits_BLC, jnp.maximum(labels_BL, 0)), valid_BL)
  acc = _wmean((jnp.argmax(logits_BLC, -1) == labels_BL).astype(jnp.float32), valid_BL)
  return loss, {"loss": loss, "accuracy": acc}


def question_answering(out, batch: Batch) -> tuple[Array, Metrics]:
  """`start_positions`, `end_positions` [B]: the mean of the two cross-entropies."""
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


def masked_lm(out, batch: Batch) -> tuple[Array, Metrics]:
  """`masked_lm_ids`, `masked_lm_weights` [B, P] at the logits' masked positions."""
  loss, metrics = _masked_lm(out.logits, batch)
  return loss, {"loss": loss, **metrics}


def pretraining(out, batch: Batch) -> tuple[Array, Metrics]:
  """Masked LM plus sentence-order prediction (`sentence_order_label` [B])."""
  mlm, metrics = _masked_lm(out.prediction_logits, batch)
  labels_B = batch["sentence_order_label"].astype(jnp.int32)
  w_B = _weights(batch, labels_B.shape[0])
  sop = _wmean(_xent(out.sop_logits, labels_B), w_B)
  sop_acc = _wmean((jnp.argmax(out.sop_logits, -1) == labels_B).astype(jnp.float32), w_B)
  loss = mlm + sop
  return loss, {"loss": loss, **metrics, "sop_loss": sop, "sop_accuracy": sop_acc}
