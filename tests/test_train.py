"""Pure train/eval steps: losses equal HF's, and a step really learns."""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from albert_jax import AlbertConfig
from albert_jax.heads import create_module
from albert_jax.train import LOSSES, create_train_state, eval_step, train_step
from albert_jax.weights.hf import params_from_hf_state_dict
from tests.reference import hf_model, hf_outputs, padded_batch
from tests.test_model import SMALL


def _hf_loss(head, batch, **hf_labels):
  ref = hf_model(head, **SMALL)
  params = params_from_hf_state_dict(ref.state_dict(), AlbertConfig(**SMALL), head)
  inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
  return params, float(hf_outputs(ref, **inputs, **hf_labels)["loss"])


def test_pretraining_loss_equals_hf():
  ids, mask, types = padded_batch(3, 12, SMALL["vocab_size"])
  positions = np.array([[1, 4, 0], [2, 3, 5], [1, 2, 0]])
  weights = np.array([[1, 1, 0], [1, 1, 1], [1, 1, 0]], np.float32)
  targets = np.array([[7, 9, 0], [11, 12, 13], [20, 21, 0]])
  sop = np.array([0, 1, 1], np.int64)
  labels = np.full(ids.shape, -100, np.int64)
  for b in range(3):
    for p, t, w in zip(positions[b], targets[b], weights[b], strict=True):
      if w:
        labels[b, p] = t
  batch = dict(
    input_ids=ids,
    attention_mask=mask,
    token_type_ids=types,
    masked_lm_positions=positions,
    masked_lm_ids=targets,
    masked_lm_weights=weights,
    sentence_order_label=sop,
  )
  params, expected = _hf_loss("pretraining", batch, labels=labels, sentence_order_label=sop)
  module = create_module(AlbertConfig(**SMALL), "pretraining")
  state = create_train_state(module, params, optax.sgd(0.0), "pretraining")
  metrics = eval_step(state, batch)
  assert abs(float(metrics["loss"]) - expected) < 1e-5
  assert 0.0 <= float(metrics["mlm_accuracy"]) <= 1.0


@pytest.mark.parametrize("num_labels", [1, 3])
def test_sequence_classification_loss_equals_hf(num_labels):
  ids, mask, types = padded_batch(4, 10, SMALL["vocab_size"])
  label = np.array([0.5, 1.0, 2.5, 4.0], np.float32) if num_labels == 1 else np.array([0, 2, 1, 2])
  batch = dict(input_ids=ids, attention_mask=mask, token_type_ids=types, label=label)
  ref = hf_model("sequence_classification", **SMALL, num_labels=num_labels)
  params = params_from_hf_state_dict(
    ref.state_dict(), AlbertConfig(**SMALL), "sequence_classification"
  )
  inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
  expected = float(hf_outputs(ref, **inputs, labels=label)["loss"])
  module = create_module(AlbertConfig(**SMALL), "sequence_classification", num_labels=num_labels)
  state = create_train_state(module, params, optax.sgd(0.0), "sequence_classification")
  assert abs(float(eval_step(state, batch)["loss"]) - expected) < 1e-5


def test_train_step_learns_and_is_deterministic():
  config = AlbertConfig(**SMALL, hidden_dropout_prob=0.1)
  module = create_module(config, "sequence_classification", num_labels=2)
  ids, mask, types = padded_batch(8, 10, SMALL["vocab_size"])
  batch = dict(
    input_ids=ids, attention_mask=mask, token_type_ids=types, label=(ids[:, 1] % 2).astype(np.int32)
  )
  params = nn.unbox(module.init(jax.random.key(0), ids)["params"])
  state = create_train_state(module, params, optax.adam(1e-3), "sequence_classification")
  step = jax.jit(train_step)
  rng = jax.random.key(42)
  first = float(eval_step(state, batch)["loss"])
  runs = []
  for _ in range(2):
    s = state
    for _ in range(60):
      s, m = step(s, batch, rng)
    runs.append(s)
  last = float(eval_step(runs[0], batch)["loss"])
  assert last < 0.2 * first, (first, last)
  for a, b in zip(jax.tree.leaves(runs[0].params), jax.tree.leaves(runs[1].params), strict=True):
    np.testing.assert_array_equal(a, b)
  assert int(runs[0].step) == 60 and "grad_norm" in m


def test_unknown_head_is_an_error():
  module = create_module(AlbertConfig(**SMALL), "base")
  with pytest.raises(ValueError, match="'base'.*trainable heads"):
    create_train_state(module, {}, optax.sgd(0.1), "base")
  assert "question_answering" in LOSSES
