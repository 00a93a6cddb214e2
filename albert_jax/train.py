"""Pure training and evaluation steps for every ALBERT head.

`train_step(state, batch, rng) -> (state, metrics)` and `eval_step(state, batch) -> metrics`
are plain functions: the caller applies `jax.jit` with the shardings it wants. The task a step
trains is the state's `head` (a static field), which picks the loss (`albert_jax.losses`) and
the extra model inputs from the head registry, `albert_jax.heads.HEADS`.

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

from albert_jax.heads import HEADS, MODEL_INPUTS

Array = jax.Array
Batch = dict[str, Array]
Metrics = dict[str, Array]

# The trainable heads: those the registry gives a loss.
LOSSES = {name: spec.loss for name, spec in HEADS.items() if spec.loss is not None}


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


def forward(apply_fn, head: str, params, batch: Batch, rng: Array | None):
  """Runs the model on a batch; dropout is on when `rng` is given."""
  kwargs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
  kwargs.update({arg: batch[key] for arg, key in HEADS[head].extra_inputs.items()})
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
