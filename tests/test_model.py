"""The model against HF transformers' PyTorch ALBERT, and its structure."""

import dataclasses
import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from albert_jax import AlbertConfig, AlbertForPreTraining, AlbertModel, axes
from albert_jax.errors import UserError
from albert_jax.heads import abstract_params, create_module
from albert_jax.layers import ModelOptions
from albert_jax.weights.hf import params_from_hf_state_dict
from tests.reference import OUTPUT_FIELDS, hf_model, hf_outputs, padded_batch

GOLDEN = pathlib.Path(__file__).parent / "golden"
# Two groups of two inner layers, applied over 4 layers: every sharing path of HF's ALBERT.
SMALL = dict(
  vocab_size=99,
  embedding_size=16,
  hidden_size=32,
  num_hidden_layers=4,
  num_hidden_groups=2,
  inner_group_num=2,
  num_attention_heads=4,
  intermediate_size=37,
  max_position_embeddings=64,
  hidden_act="gelu_new",
)
TOL = 1e-4  # max abs difference on logits and hidden states (f32), never loosened


def _compare(ours, theirs: dict, mask: np.ndarray, head: str) -> float:
  worst = 0.0
  for field in OUTPUT_FIELDS[head]:
    a, b = np.asarray(getattr(ours, field)), theirs[field]
    assert a.shape == b.shape, (field, a.shape, b.shape)
    if a.ndim >= 2 and a.shape[:2] == mask.shape:  # per-token outputs: real positions only
      a, b = a[mask.astype(bool)], b[mask.astype(bool)]
    worst = max(worst, float(np.abs(a - b).max()))
  return worst


@pytest.mark.parametrize("scan_layers", [True, False])
@pytest.mark.parametrize("head", sorted(OUTPUT_FIELDS))
def test_parity_with_hf_small(head, scan_layers):
  num_labels = {"sequence_classification": 3, "token_classification": 5}.get(head)
  ref = hf_model(head, **SMALL, **({"num_labels": num_labels} if num_labels else {}))
  config = AlbertConfig(**SMALL)
  params = params_from_hf_state_dict(ref.state_dict(), config, head)
  module = create_module(config, head, num_labels=num_labels, scan_layers=scan_layers)
  ids, mask, types = padded_batch(4, 12, SMALL["vocab_size"])
  if head == "multiple_choice":  # [B, C, L]: 2 questions x 2 choices
    ids, mask, types = (a.reshape(2, 2, 12) for a in (ids, mask, types))
  ours = module.apply({"params": params}, ids, mask, types)
  theirs = hf_outputs(ref, input_ids=ids, attention_mask=mask, token_type_ids=types)
  flat_mask = mask if head != "multiple_choice" else mask[:, 0]
  assert _compare(ours, theirs, flat_mask, head) <= TOL


@pytest.mark.slow
def test_parity_pretraining_at_albert_large_dimensions():
  dims = dict(AlbertConfig.from_name("albert-large-v2").to_dict())
  ref = hf_model("pretraining", **dims)
  config = AlbertConfig.from_name("albert-large-v2")
  params = params_from_hf_state_dict(ref.state_dict(), config, "pretraining")
  ids, mask, types = padded_batch(2, 48, config.vocab_size, seed=1)
  ours = jax.jit(create_module(config, "pretraining").apply)({"params": params}, ids, mask, types)
  theirs = hf_outputs(ref, input_ids=ids, attention_mask=mask, token_type_ids=types)
  worst = _compare(ours, theirs, mask, "pretraining")
  print(f"albert-large-v2 AlbertForPreTraining max abs diff: {worst:.3g}")
  assert worst <= TOL
  base = create_module(config, "base").apply({"params": params["albert"]}, ids, mask, types)
  assert base.last_hidden_state.shape == (2, 48, 1024)


def assert_close_to_scale(a, b, rel=1e-5, atol=1e-8):
  """f32 results summed in another order: differences within `rel` of the tensor's scale.

  `atol` covers gradients that are zero in exact arithmetic (the key bias cannot change a
  softmax) and come out as ~1e-11 noise.
  """
  a, b = np.asarray(a), np.asarray(b)
  assert np.abs(a - b).max() <= rel * np.abs(b).max() + atol, np.abs(a - b).max()


def _init(module, ids):
  return nn.unbox(module.init(jax.random.key(0), ids)["params"])


def test_scan_equals_loop_with_gradients():
  config = AlbertConfig(**SMALL)
  ids, mask, types = padded_batch(3, 10, SMALL["vocab_size"])
  scan, loop = (create_module(config, "pretraining", scan_layers=s) for s in (True, False))
  params = _init(scan, ids)
  assert jax.tree.structure(params) == jax.tree.structure(_init(loop, ids))

  def loss(module):
    def f(p):
      out = module.apply({"params": p}, ids, mask, types)
      return jnp.sum(out.prediction_logits**2) + jnp.sum(out.sop_logits)

    return jax.value_and_grad(f)(params)

  (ls, gs), (ll, gl) = loss(scan), loss(loop)
  np.testing.assert_allclose(ls, ll, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(gs), jax.tree.leaves(gl), strict=True):
    assert_close_to_scale(a, b)


def _param_tree(params) -> dict:
  return {
    "/".join(str(k.key) for k in path): list(x.shape)
    for path, x in jax.tree_util.tree_leaves_with_path(params)
  }


def test_golden_param_tree_has_one_copy_of_the_block():
  config = AlbertConfig.from_name("albert-base-v2")
  tree = _param_tree(abstract_params(create_module(config, "pretraining")))
  golden = json.loads((GOLDEN / "albert-base-v2_pretraining_params.json").read_text())
  assert tree == golden
  block = [k for k in tree if "/albert_layer_groups_" in k]
  assert all("/albert_layer_groups_0/albert_layers_0/" in k for k in block)
  assert tree["albert/encoder/albert_layer_groups_0/albert_layers_0/attention/query/kernel"] == [
    768,
    12,
    64,
  ]  # no layer axis: the block's weights appear once


@pytest.mark.parametrize(
  "name,count",
  [
    ("albert-base-v2", 11_683_584),
    ("albert-large-v2", 17_683_968),
    ("albert-xlarge-v2", 58_724_864),
    ("albert-xxlarge-v2", 222_595_584),
  ],
)
def test_parameter_count(name, count):
  params = abstract_params(AlbertModel(AlbertConfig.from_name(name)))
  assert sum(x.size for x in jax.tree.leaves(params)) == count


def test_groups_get_their_own_weights():
  params = abstract_params(create_module(AlbertConfig(**SMALL), "base"))
  enc = params["encoder"]
  assert sorted(enc) == [
    "albert_layer_groups_0",
    "albert_layer_groups_1",
    "embedding_hidden_mapping_in",
  ]
  assert sorted(enc["albert_layer_groups_1"]) == ["albert_layers_0", "albert_layers_1"]


def test_dropout_differs_per_layer():
  config = AlbertConfig(
    **{**SMALL, "num_hidden_groups": 1, "inner_group_num": 1}, hidden_dropout_prob=0.5
  )
  module = create_module(config, "base")
  ids, mask, types = padded_batch(2, 10, SMALL["vocab_size"])
  params = _init(module, ids)
  _, state = module.apply(
    {"params": params},
    ids,
    mask,
    types,
    deterministic=False,
    rngs={"dropout": jax.random.key(1)},
    capture_intermediates=lambda m, _: isinstance(m, nn.Dropout) and "ffn" not in m.name,
    mutable=["intermediates"],
  )
  layer = state["intermediates"]["encoder"]["albert_layer_groups_0"]["albert_layers_0"]
  dropped = [np.asarray(v["__call__"][0]) == 0 for k, v in layer.items() if "Dropout" in k]
  assert dropped and dropped[0].shape[0] == config.num_hidden_layers
  for kept_LBTH in dropped:
    assert 0.3 < kept_LBTH.mean() < 0.7  # rate 0.5 really drops
    for i in range(1, config.num_hidden_layers):
      assert (kept_LBTH[i] != kept_LBTH[0]).mean() > 0.3  # a fresh mask in every layer


def test_masked_positions_gather_equals_full_logits():
  config = AlbertConfig(**SMALL)
  module = create_module(config, "pretraining")
  ids, mask, types = padded_batch(2, 12, SMALL["vocab_size"])
  params = _init(module, ids)
  positions = np.array([[1, 3, 0], [2, 2, 5]])
  full = module.apply({"params": params}, ids, mask, types).prediction_logits
  some = module.apply(
    {"params": params}, ids, mask, types, masked_positions=positions
  ).prediction_logits
  assert some.shape == (2, 3, SMALL["vocab_size"])
  np.testing.assert_allclose(
    some, np.take_along_axis(np.asarray(full), positions[..., None], 1), rtol=1e-6, atol=1e-6
  )


@pytest.mark.parametrize("policy", ["nothing_saveable", "dots_with_no_batch_dims_saveable"])
def test_remat_policy_keeps_numbers(policy):
  config = AlbertConfig(**SMALL)
  ids, mask, types = padded_batch(2, 8, SMALL["vocab_size"])
  plain = create_module(config, "sequence_classification")
  remat = create_module(config, "sequence_classification", remat_policy=policy)
  params = _init(plain, ids)

  def grads(module):
    return jax.grad(lambda p: module.apply({"params": p}, ids, mask, types).logits.sum())(params)

  for a, b in zip(jax.tree.leaves(grads(plain)), jax.tree.leaves(grads(remat)), strict=True):
    assert_close_to_scale(a, b)


@pytest.mark.parametrize(
  "option, value",
  [
    ("remat_policy", "save_everything_pls"),
    ("attention_implementation", "flash"),
    ("dtype", "float8"),
    ("param_dtype", jnp.int32),
    ("dtype", None),
    ("scan_layers", "yes"),
    ("remat_policy", "__doc__"),
  ],
)
def test_bad_model_option_is_named_when_the_module_is_built(option, value):
  """A bad option is one UserError naming it and its value when the module is built, before
  any tracing; the same through the options object."""
  config = AlbertConfig(**SMALL)
  for build in (
    lambda: create_module(config, "base", **{option: value}),
    lambda: AlbertModel(config, options=ModelOptions(**{option: value})),
  ):
    with pytest.raises(UserError, match=f"{option}={value!r}"):
      build()


def test_model_options_are_one_object():
  """The keyword form folds into `options`; names and dtypes, "none" and None are the same
  options, so modules built either way are equal (and share cached parameter shapes)."""
  config = AlbertConfig(**SMALL)
  a = AlbertForPreTraining(config, dtype="bfloat16", remat_policy="none", scan_layers=False)
  b = AlbertForPreTraining(
    config, options=ModelOptions(dtype=jnp.bfloat16, remat_policy=None, scan_layers=False)
  )
  assert a == b and hash(a) == hash(b)
  assert a.options.dtype == jnp.bfloat16 and a.options.remat_policy is None
  c = AlbertForPreTraining(config, options=b.options, scan_layers=True)  # a keyword overrides
  assert c.options == dataclasses.replace(b.options, scan_layers=True)
  assert c.clone().options == c.options


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_attention_implementations_agree(dtype):
  """The default heads-major einsum path and jax.nn.dot_product_attention ("xla") agree; in
  f32 both match HF (padded batch: the mask matters)."""
  ref = hf_model("base", **SMALL)
  config = AlbertConfig(**SMALL)
  params = params_from_hf_state_dict(ref.state_dict(), config, "base")
  ids, mask, types = padded_batch(4, 12, SMALL["vocab_size"])
  outs = {
    impl: create_module(config, "base", dtype=dtype, attention_implementation=impl).apply(
      {"params": params}, ids, mask, types
    )
    for impl in (None, "einsum", "xla")
  }
  real = mask.astype(bool)
  h = {k: np.asarray(o.last_hidden_state, np.float32)[real] for k, o in outs.items()}
  np.testing.assert_array_equal(h[None], h["einsum"])
  if dtype == jnp.float32:
    # Two reduction orders (einsum vs dot_product_attention's softmax and sums) differ by a
    # few float32 ulps per block; LayerNorm renormalizes after each of the 8 blocks (4 layers
    # x 2 inner) so the difference does not compound. Bound: 16 ulps (2^-23 relative) at the
    # largest |value| (about 2.8 here: ~5.3e-6). Seen: 1.19e-6 = 3.6 ulps on a loaded machine.
    bound = 16 * np.finfo(np.float32).eps * np.abs(h["xla"]).max()
    assert np.abs(h[None] - h["xla"]).max() <= bound, (np.abs(h[None] - h["xla"]).max(), bound)
    theirs = hf_outputs(ref, input_ids=ids, attention_mask=mask, token_type_ids=types)
    assert np.abs(h[None] - theirs["last_hidden_state"][real]).max() <= TOL
  else:  # both round through bf16; the einsum path keeps logits and softmax in float32
    assert np.abs(h[None] - h["xla"]).max() < BF16_BOUND


# Measured on this machine: max |bf16 - f32| = 0.035 on last_hidden_state (LayerNorm'd, values
# O(1)) of the 4-layer model with HF-style random weights; the bound is about 3x that.
BF16_BOUND = 0.1


def test_bf16_compute_stays_close_to_f32():
  ref = hf_model("base", **SMALL)
  config = AlbertConfig(**SMALL)
  params = params_from_hf_state_dict(ref.state_dict(), config, "base")
  ids, mask, types = padded_batch(4, 12, SMALL["vocab_size"])
  a = create_module(config, "base").apply({"params": params}, ids, mask, types)
  b = create_module(config, "base", dtype=jnp.bfloat16).apply({"params": params}, ids, mask, types)
  assert b.last_hidden_state.dtype == jnp.bfloat16
  diff = np.abs(np.asarray(a.last_hidden_state) - np.asarray(b.last_hidden_state, np.float32))
  diff = diff[mask.astype(bool)].max()
  print(f"bf16 vs f32 max abs diff on last_hidden_state: {diff:.4f}")
  assert diff < BF16_BOUND


def test_sequence_longer_than_max_positions_is_an_error():
  config = AlbertConfig(**SMALL)
  module = create_module(config, "base")
  with pytest.raises(ValueError, match=r"Sequence length 65 .*max_position_embeddings=64"):
    module.init(jax.random.key(0), np.ones((1, 65), np.int32))


def test_state_dict_errors_name_the_tensor():
  ref = hf_model("base", **SMALL)
  config = AlbertConfig(**SMALL)
  state = dict(ref.state_dict())
  del state["encoder.albert_layer_groups.1.albert_layers.0.ffn.weight"]
  with pytest.raises(ValueError, match="albert_layer_groups.1.albert_layers.0.ffn.weight"):
    params_from_hf_state_dict(state, config, "base")
  state = dict(ref.state_dict())
  state["pooler.weight"] = state["pooler.weight"][:, :7]
  with pytest.raises(ValueError, match=r"'pooler.weight' has shape \(32, 7\).*\(32, 32\)"):
    params_from_hf_state_dict(state, config, "base")
  with pytest.raises(ValueError, match="missing 64 tensor.*albert_layer_groups.2"):
    params_from_hf_state_dict(
      ref.state_dict(), AlbertConfig(**{**SMALL, "num_hidden_groups": 4}), "base"
    )
  with pytest.raises(ValueError, match="'pretrain'"):
    params_from_hf_state_dict(ref.state_dict(), config, "pretrain")


def test_every_parameter_has_one_logical_name_per_axis():
  module = create_module(AlbertConfig(**SMALL), "pretraining")
  boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), np.ones((1, 4), np.int32)))
  specs = nn.get_partition_spec(boxed)["params"]
  shapes = nn.unbox(boxed)["params"]
  flat_specs = jax.tree_util.tree_leaves_with_path(
    specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
  )
  assert len(flat_specs) == len(jax.tree.leaves(shapes))
  for (path, spec), shape in zip(flat_specs, jax.tree.leaves(shapes), strict=True):
    assert len(spec) == len(shape.shape), (jax.tree_util.keystr(path), spec, shape.shape)
  attn = specs["albert"]["encoder"]["albert_layer_groups_0"]["albert_layers_0"]["attention"]
  assert tuple(attn["query"]["kernel"]) == (axes.HIDDEN, axes.HEADS, axes.HEAD_DIM)
  assert tuple(attn["dense"]["kernel"]) == (axes.HEADS, axes.HEAD_DIM, axes.HIDDEN)


def test_each_activation_name_computes_hfs_function():
  """The one activation table (albert_jax.config.ACTIVATIONS, used by the config's validation
  and by the model) against transformers' ACT2FN, within f32 rounding at |x| <= 6."""
  import torch
  from transformers.activations import ACT2FN

  from albert_jax.config import ACTIVATIONS
  from albert_jax.layers import activation

  x = np.linspace(-6, 6, 241, dtype=np.float32)
  for name in ACTIVATIONS:
    assert AlbertConfig(hidden_act=name).hidden_act == name
    ours = np.asarray(activation(name)(jnp.asarray(x)))
    theirs = ACT2FN[name](torch.as_tensor(x)).numpy()
    assert np.abs(ours - theirs).max() <= 8 * np.finfo(np.float32).eps * 6, name
  with pytest.raises(ValueError, match="gelu_new"):
    AlbertConfig(hidden_act="gelu2")
