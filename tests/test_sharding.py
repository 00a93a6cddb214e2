"""Sharded training equals one device; parameters really are split; errors at start-up.

Runs on the 8 simulated CPU devices of conftest.py, one mesh preset at a time:
data 8, fsdp 8, data 2 x tensor 4.
"""

import functools
import logging

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from albert_jax import AlbertConfig, distributed, sharding
from albert_jax.heads import create_module
from albert_jax.optim import adamw, lamb
from albert_jax.train import create_train_state, train_step
from tests.reference import padded_batch

# One layer keeps the compiles short (the shared block is scanned all the same); dropout (0.1 on
# the pooled output, ALBERT's classifier_dropout_prob) must draw the same mask sharded or not.
TINY = dict(
  vocab_size=128,
  embedding_size=16,
  hidden_size=32,
  num_hidden_layers=1,
  num_attention_heads=4,
  intermediate_size=64,
  max_position_embeddings=64,
)
B, L, P = 8, 16, 4  # global batch, sequence length, masked positions
STEPS = 2
# f32 sums in another order (sharded reductions, all-reduced gradients); never loosened.
LOSS_TOL = 1e-6  # relative
INIT_TOL = 1e-7  # absolute: init sharded over 8 devices vs on 1 (same random bits)
# Parameters after STEPS optimizer steps, per tensor: |sharded - one device| must stay within
# UPDATE_TOL of how far the steps moved that tensor, plus PARAM_ULPS float32 ulps of its values.
# Why relative to the update: Adam's direction m / (sqrt(v) + eps) amplifies a gradient's
# rounding difference by up to (1 - b1) / eps = 1e5 for components whose gradient is near eps
# (1e-6), so two reduction orders give updates that differ by up to ~1e-4 of the update's size
# (gradient entries ~1e-2 differing by a few ulps, ~1e-9); the bound keeps a 10x margin over
# that. A sharding bug (a missing or doubled shard) moves parameters by the update's own size.
UPDATE_TOL = 1e-3
PARAM_ULPS = 8
# A gradient that is zero in exact arithmetic (the key bias: it shifts all of a query's logits
# alike) is rounding noise whose sign and size depend on the reduction order; Adam turns noise
# dg into at most lr * (1 - b1) * dg / eps per step. With dg up to a few ulps of gradient
# entries ~0.1 (4 * 2^-23 * 0.1), lr 1e-3, b1 0.9, eps 1e-6: the absolute floor below (~1e-8).
NOISE_FLOOR = STEPS * 1e-3 * (1 - 0.9) * (4 * float(np.finfo(np.float32).eps) * 0.1) / 1e-6

QUERY = (
  "albert",
  "encoder",
  "albert_layer_groups_0",
  "albert_layers_0",
  "attention",
  "query",
  "kernel",
)  # [H, N, D] = [32, 4, 8]
FFN = ("albert", "encoder", "albert_layer_groups_0", "albert_layers_0", "ffn", "kernel")  # [32, 64]
WORDS = ("albert", "embeddings", "word_embeddings", "embedding")  # [V, E] = [128, 16]
# Per-device shard shapes: replicated (data), split over fsdp on H and V, split over tensor on
# heads, FFN width and V.
SHARDS = {
  "data": {QUERY: (32, 4, 8), FFN: (32, 64), WORDS: (128, 16)},
  "fsdp": {QUERY: (4, 4, 8), FFN: (4, 64), WORDS: (16, 16)},
  "data_tensor": {QUERY: (32, 1, 8), FFN: (32, 16), WORDS: (32, 16)},
}
TASKS = {  # head -> (module options, optimizer)
  "sequence_classification": (dict(num_labels=3), adamw(1e-3)),
  "pretraining": ({}, lamb(1e-3)),
}


def _batch(head: str) -> dict[str, np.ndarray]:
  ids, mask, types = padded_batch(B, L, TINY["vocab_size"])
  batch = dict(input_ids=ids, attention_mask=mask, token_type_ids=types)
  rng = np.random.RandomState(1)
  if head == "sequence_classification":
    batch["label"] = rng.randint(0, 3, (B,)).astype(np.int32)
  else:
    batch["masked_lm_positions"] = rng.randint(1, 5, (B, P)).astype(np.int32)
    batch["masked_lm_ids"] = rng.randint(5, TINY["vocab_size"], (B, P)).astype(np.int32)
    batch["masked_lm_weights"] = (rng.rand(B, P) < 0.8).astype(np.float32)
    batch["sentence_order_label"] = rng.randint(0, 2, (B,)).astype(np.int32)
  return batch


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


@functools.cache
def _single_device_run(head: str):
  """(losses, params after STEPS steps, initial params) with plain jit on one device."""
  options, tx = TASKS[head]
  module = create_module(AlbertConfig(**TINY), head, **options)
  batch = _batch(head)
  init_inputs = dict(input_ids=batch["input_ids"][:1])
  if head == "pretraining":
    init_inputs["masked_positions"] = batch["masked_lm_positions"][:1]
  params = jax.jit(lambda r: nn.unbox(module.init(r, **init_inputs)["params"]))(jax.random.key(0))
  state = create_train_state(module, params, tx, head)
  step = jax.jit(train_step)
  losses = []
  for _ in range(STEPS):
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(float(metrics["loss"]))
  return losses, jax.device_get(state.params), params


def _assert_split(state, preset: str) -> None:
  """Parameters and their optimizer moments have the per-device shapes of SHARDS[preset]."""
  for path, shard in SHARDS[preset].items():
    param = _get(state.params, path)
    assert param.addressable_shards[0].data.shape == shard, (preset, path)
    moments = [
      x
      for p, x in jax.tree_util.tree_leaves_with_path(state.opt_state)
      if tuple(getattr(k, "key", None) for k in p[-len(path) :]) == path
    ]
    assert moments and all(m.addressable_shards[0].data.shape == shard for m in moments)


def _max_diff(a, b) -> float:
  return max(
    float(np.abs(np.asarray(x) - np.asarray(y)).max())
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  )


@pytest.mark.parametrize("head", sorted(TASKS))
@pytest.mark.parametrize("preset", ["data", "fsdp", "data_tensor"])
def test_sharded_steps_equal_one_device(preset, head):
  options, tx = TASKS[head]
  module = create_module(AlbertConfig(**TINY), head, **options)
  batch = _batch(head)
  mesh = sharding.make_mesh(preset)
  sample = {k: v[:1] for k, v in batch.items()}
  abstract = sharding.abstract_train_state(module, tx, head, sample, mesh)
  ref_losses, ref_params, ref_init = _single_device_run(head)
  # The same initial values as one device, placed as a run with pretrained weights does
  # (`create_sharded_state` is tested with the checkpoints below).
  state = jax.jit(
    lambda p: create_train_state(module, p, tx, head), out_shardings=sharding.shardings_of(abstract)
  )(ref_init)
  _assert_split(state, preset)

  train = sharding.jit_train_step(sharding.shardings_of(state), mesh)
  rng = sharding.replicate(jax.random.key(1), mesh)
  losses = []
  for _ in range(STEPS):
    state, metrics = train(state, sharding.shard_batch(batch, mesh), rng)
    losses.append(float(metrics["loss"]))

  loss_diff = max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses, strict=True))
  print(f"{preset} {head}: loss rel diff {loss_diff:.2g}")
  assert loss_diff <= LOSS_TOL
  eps32 = float(np.finfo(np.float32).eps)
  for (path, got), want, init in zip(
    jax.tree_util.tree_leaves_with_path(jax.device_get(state.params)),
    jax.tree.leaves(ref_params),
    jax.tree.leaves(ref_init),
    strict=True,
  ):
    moved = float(np.abs(want - init).max())
    diff = float(np.abs(np.asarray(got) - want).max())
    bound = UPDATE_TOL * moved + PARAM_ULPS * eps32 * float(np.abs(want).max()) + NOISE_FLOOR
    assert moved > 0, jax.tree_util.keystr(path)  # the steps did change every tensor
    assert diff <= bound, (jax.tree_util.keystr(path), diff, moved, bound)
  assert int(state.step) == STEPS


def test_created_sharded_and_restored_onto_other_meshes(tmp_path):
  head = "pretraining"
  options, tx = TASKS[head]
  module = create_module(AlbertConfig(**TINY), head, **options)
  sample = {k: v[:1] for k, v in _batch(head).items()}
  fsdp = sharding.make_mesh("fsdp")
  state = sharding.create_sharded_state(module, tx, head, jax.random.key(0), sample, fsdp)
  _assert_split(state, "fsdp")
  # Same values as an unsharded init (the random bits do not depend on the sharding).
  init_diff = _max_diff(state.params, _single_device_run(head)[2])
  print(f"init sharded over fsdp 8 vs 1 device: max abs diff {init_diff:.2g}")
  assert init_diff <= INIT_TOL
  state = state.replace(step=state.step + 7)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(tmp_path / "ckpt", state)
    ckptr.wait_until_finished()
    for mesh in (
      sharding.make_mesh({"data": 2, "tensor": 4}),
      sharding.make_mesh({"data": 1}, devices=jax.devices()[:1]),
    ):
      target = sharding.abstract_train_state(module, tx, head, sample, mesh)
      restored = ckptr.restore(tmp_path / "ckpt", target)
      for got, want, spec in zip(
        jax.tree.leaves(restored), jax.tree.leaves(state), jax.tree.leaves(target), strict=True
      ):
        assert got.sharding == spec.sharding
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
      assert int(restored.step) == 7 and restored.head == head
  assert _get(restored.params, QUERY).addressable_shards[0].data.shape == (32, 4, 8)


def _abstract(mesh, rules=sharding.RULES, **config):
  module = create_module(AlbertConfig(**{**TINY, **config}), "masked_lm")
  sample = dict(
    input_ids=np.zeros((1, 4), np.int32), masked_lm_positions=np.zeros((1, 1), np.int32)
  )
  return sharding.abstract_train_state(module, adamw(1e-3), "masked_lm", sample, mesh, rules)


def test_parameter_without_rule_is_an_error():
  rules = sharding.rules_for([r for r in sharding.RULES if r[0] != "mlp"])
  with pytest.raises(ValueError, match=r"ffn/bias has logical axis 'mlp' with no rule"):
    _abstract(sharding.make_mesh("data"), rules)


def test_mesh_must_divide_heads_and_batch():
  mesh = sharding.make_mesh({"data": 2, "tensor": 4})
  with pytest.raises(ValueError, match=r"num_attention_heads=6 is not divisible by 4"):
    _abstract(mesh, hidden_size=48, num_attention_heads=6)
  data = sharding.make_mesh("data")
  with pytest.raises(ValueError, match=r"Global batch size 12 is not divisible by 8"):
    sharding.check_batch_size(12, data)
  with pytest.raises(ValueError, match=r"6 rows on this process, not divisible by its 8"):
    sharding.shard_batch({"input_ids": np.zeros((6, 4), np.int32)}, data)
  with pytest.raises(ValueError, match=r"not divisible by 8"):
    distributed.process_batch_slice(12, data)


def test_indivisible_dimension_is_replicated(caplog):
  with caplog.at_level(logging.WARNING):
    state = _abstract(sharding.make_mesh("fsdp"), vocab_size=100)
  words = _get(state.params, WORDS)
  assert words.sharding.spec == jax.sharding.PartitionSpec(None, None)
  assert "word_embeddings/embedding vocab=100" in caplog.text
  assert _get(state.params, FFN).sharding.spec[0] == "fsdp"


def test_make_mesh_shapes_and_errors():
  assert dict(sharding.make_mesh({"data": -1, "tensor": 4}).shape) == dict(data=2, fsdp=1, tensor=4)
  assert dict(sharding.make_mesh("fsdp").shape) == dict(data=1, fsdp=8, tensor=1)
  with pytest.raises(ValueError, match=r"needs 3 devices but there are 8"):
    sharding.make_mesh({"data": 3})
  with pytest.raises(ValueError, match=r"Unknown mesh axes \['model'\]"):
    sharding.make_mesh({"model": 8})
  with pytest.raises(ValueError, match=r"Unknown mesh preset 'zero3'"):
    sharding.make_mesh("zero3")
  with pytest.raises(ValueError, match=r"names mesh axis 'model'"):
    sharding.rules_for([("batch", "model")])
  assert sharding.rules_for([["batch", ["data", "fsdp"]], *map(list, sharding.RULES[1:])]) == (
    sharding.RULES
  )


def test_process_data_helpers_single_process():
  mesh = sharding.make_mesh({"data": 2, "tensor": 4})
  assert distributed.process_batch_slice(16, mesh) == slice(0, 16)
  assert distributed.process_batch_slice(16) == slice(0, 16)
  assert sharding.process_batch_shards(mesh) == [0, 1]
  assert distributed.is_main_process()


def test_initialize_needs_every_setting(monkeypatch):
  monkeypatch.setenv("ALBERT_JAX_NUM_PROCESSES", "2")
  monkeypatch.delenv("ALBERT_JAX_COORDINATOR", raising=False)
  monkeypatch.delenv("ALBERT_JAX_PROCESS_ID", raising=False)
  with pytest.raises(
    ValueError, match=r"coordinator_address=None, num_processes=2, process_id=None"
  ):
    distributed.initialize()
  monkeypatch.setenv("ALBERT_JAX_NUM_PROCESSES", "1")
  distributed.initialize()  # one process: nothing to join
  assert jax.process_count() == 1


def test_mesh_from_a_run_config_takes_a_preset_and_a_rule_list():
  from albert_jax.trainer.config import base_config

  mesh_config = base_config().mesh  # what --config.mesh.shape=fsdp and a rule list give
  mesh_config.shape = "fsdp"
  mesh_config.rules = [list(rule) for rule in sharding.RULES]
  mesh, rules = sharding.mesh_from_config(mesh_config)
  assert dict(mesh.shape) == {"data": 1, "fsdp": jax.device_count(), "tensor": 1}
  assert rules == sharding.RULES
  mesh_config.shape = "ring"
  with pytest.raises(ValueError, match=r"Unknown mesh preset 'ring'"):
    sharding.mesh_from_config(mesh_config)
