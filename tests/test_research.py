"""The research surface: hidden states, attentions, inputs_embeds, head_mask, any depth, and
the examples/ scripts, against HF transformers' PyTorch ALBERT where it has the feature."""

import dataclasses
import importlib.util
import pathlib
import struct

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from albert_jax import AlbertConfig, AlbertModel, attention, attention_maps
from albert_jax.errors import UserError
from albert_jax.heads import abstract_params, create_module
from albert_jax.model import AlbertEmbeddings, AlbertLayerGroup
from albert_jax.weights.hf import params_from_hf_state_dict
from tests.reference import hf_model, padded_batch
from tests.test_model import SMALL, TOL, assert_close_to_scale

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"
K = SMALL["num_hidden_layers"] * SMALL["inner_group_num"]  # applied layers: 8
EPS = np.finfo(np.float32).eps


def _hf_and_params():
  # "eager": HF's sdpa attention does not return probabilities.
  ref = hf_model("base", **SMALL, attn_implementation="eager")
  return ref, params_from_hf_state_dict(ref.state_dict(), AlbertConfig(**SMALL), "base")


def _hf_run(ref, **inputs):
  import torch

  with torch.no_grad():
    out = ref(
      **{k: torch.as_tensor(np.asarray(v)) for k, v in inputs.items()},
      output_hidden_states=True,
      output_attentions=True,
    )
  return (
    out.last_hidden_state.numpy(),
    np.stack([h.numpy() for h in out.hidden_states]),
    np.stack([a.numpy() for a in out.attentions]),
  )


def _max_diffs(ours, hidden_SBLH, attentions_KBNLL, mask):
  """Max abs differences on real positions: per hidden state entry, per attention layer."""
  real = mask.astype(bool)
  hidden = [
    float(np.abs(np.asarray(a)[real] - b[real]).max())
    for a, b in zip(ours.hidden_states, hidden_SBLH, strict=True)
  ]
  # Attention rows of real query positions (all keys: padded keys are 0 in both).
  rows = [
    float(np.abs(np.moveaxis(np.asarray(a), 1, 2)[real] - np.moveaxis(b, 1, 2)[real]).max())
    for a, b in zip(ours.attentions, attentions_KBNLL, strict=True)
  ]
  return hidden, rows


@pytest.mark.parametrize("scan_layers", [True, False])
def test_hidden_states_and_attentions_match_hf(scan_layers):
  """Transformers 5.x records one entry per applied (inner) layer, as we do: with
  num_hidden_groups=2 and inner_group_num=2 over 4 layers, 9 hidden states and 8 maps."""
  ref, params = _hf_and_params()
  ids, mask, types = padded_batch(4, 12, SMALL["vocab_size"])
  module = create_module(AlbertConfig(**SMALL), "base", scan_layers=scan_layers)
  ours = module.apply(
    {"params": params}, ids, mask, types, output_hidden_states=True, output_attentions=True
  )
  _, hidden, attn = _hf_run(ref, input_ids=ids, attention_mask=mask, token_type_ids=types)
  assert ours.hidden_states.shape == (K + 1, 4, 12, SMALL["hidden_size"]) == hidden.shape
  assert ours.attentions.shape == (K, 4, SMALL["num_attention_heads"], 12, 12) == attn.shape
  np.testing.assert_array_equal(ours.hidden_states[-1], ours.last_hidden_state)
  h, a = _max_diffs(ours, hidden, attn, mask)
  print(f"scan={scan_layers}: hidden_states max diffs {max(h):.2e}, attentions {max(a):.2e}")
  assert max(h) <= TOL and max(a) <= TOL


@pytest.mark.parametrize("scan_layers", [True, False])
def test_inputs_embeds_match_hf(scan_layers):
  ref, params = _hf_and_params()
  _, mask, types = padded_batch(4, 12, SMALL["vocab_size"])
  embeds = np.random.RandomState(1).normal(0, 0.5, (4, 12, SMALL["embedding_size"]))
  embeds = embeds.astype(np.float32)
  module = create_module(AlbertConfig(**SMALL), "base", scan_layers=scan_layers)
  ours = module.apply(
    {"params": params},
    None,
    mask,
    types,
    inputs_embeds=embeds,
    output_hidden_states=True,
    output_attentions=True,
  )
  last, hidden, attn = _hf_run(ref, inputs_embeds=embeds, attention_mask=mask, token_type_ids=types)
  real = mask.astype(bool)
  diff = float(np.abs(np.asarray(ours.last_hidden_state)[real] - last[real]).max())
  h, a = _max_diffs(ours, hidden, attn, mask)
  print(f"scan={scan_layers}: inputs_embeds last_hidden_state max diff {diff:.2e}")
  assert max(diff, *h, *a) <= TOL


def test_inputs_embeds_of_the_word_embeddings_equal_input_ids():
  ids, mask, types = padded_batch(2, 8, SMALL["vocab_size"])
  module = create_module(AlbertConfig(**SMALL), "sequence_classification")
  params = nn.unbox(module.init(jax.random.key(0), ids)["params"])
  words = params["albert"]["embeddings"]["word_embeddings"]["embedding"][ids]
  a = module.apply({"params": params}, ids, mask, types).logits
  b = module.apply({"params": params}, None, mask, types, inputs_embeds=words).logits
  np.testing.assert_array_equal(a, b)
  with pytest.raises(UserError, match="exactly one of input_ids"):
    module.apply({"params": params}, ids, mask, types, inputs_embeds=words)
  with pytest.raises(UserError, match="inputs_embeds must be"):
    module.apply({"params": params}, None, inputs_embeds=words[..., :3])


def _hf_run_with_head_mask(ref, head_mask_KN, **inputs):
  """HF (5.x has no head_mask) with head n of applied layer k scaled by head_mask_KN[k, n]:
  scaling a head's probabilities scales its context, P (m v) = (m P) v, so a hook scales the
  value projection's output instead. Hooks run in application order: one counter for all."""
  import torch

  d = SMALL["hidden_size"] // SMALL["num_attention_heads"]
  calls = [0]

  def scale_values(module, args, out):
    row = torch.as_tensor(np.asarray(head_mask_KN[calls[0]], np.float32)).repeat_interleave(d)
    calls[0] += 1
    return out * row

  handles = [
    layer.attention.value.register_forward_hook(scale_values)
    for group in ref.encoder.albert_layer_groups
    for layer in group.albert_layers
  ]
  try:
    last, hidden, attn = _hf_run(ref, **inputs)
  finally:
    for handle in handles:
      handle.remove()
  assert calls[0] == K
  # Our `attentions` are the probabilities after the head mask (HF 4.x's, too).
  return last, hidden, attn * np.asarray(head_mask_KN)[:, None, :, None, None]


@pytest.mark.parametrize("scan_layers", [True, False])
def test_head_mask_matches_hf(scan_layers):
  ref, params = _hf_and_params()
  ids, mask, types = padded_batch(4, 12, SMALL["vocab_size"])
  module = create_module(AlbertConfig(**SMALL), "base", scan_layers=scan_layers)
  n = SMALL["num_attention_heads"]
  per_layer = np.random.RandomState(2).choice([0.0, 0.5, 1.0], (K, n)).astype(np.float32)
  every_layer = np.array([1.0, 0.0, 0.5, 1.0], np.float32)
  for head_mask, rows in (
    (every_layer, np.tile(every_layer, (K, 1))),
    (per_layer, per_layer),
  ):
    ours = module.apply(
      {"params": params},
      ids,
      mask,
      types,
      head_mask=head_mask,
      output_hidden_states=True,
      output_attentions=True,
    )
    _, hidden, attn = _hf_run_with_head_mask(
      ref, rows, input_ids=ids, attention_mask=mask, token_type_ids=types
    )
    h, a = _max_diffs(ours, hidden, attn, mask)
    print(f"scan={scan_layers} head_mask {head_mask.shape}: max diffs {max(h):.2e} {max(a):.2e}")
    assert max(h) <= TOL and max(a) <= TOL
    removed = np.moveaxis(np.asarray(ours.attentions), 2, 1)[rows == 0]  # [removed, B, L, L]
    assert removed.size and np.all(removed == 0)
  plain = module.apply({"params": params}, ids, mask, types).last_hidden_state
  assert float(np.abs(np.asarray(ours.last_hidden_state) - plain).max()) > 100 * TOL
  with pytest.raises(UserError, match=r"head_mask has shape \(3, 4\)"):
    module.apply({"params": params}, ids, head_mask=np.ones((3, n)))


@pytest.mark.parametrize(
  "head",
  [
    "pretraining",
    "masked_lm",
    "sequence_classification",
    "token_classification",
    "question_answering",
    "multiple_choice",
  ],
)
def test_every_head_returns_the_encoders_research_outputs(head):
  config = AlbertConfig(**SMALL)
  ids, mask, types = padded_batch(4, 6, SMALL["vocab_size"])
  module = create_module(config, head)
  shaped = (
    [a.reshape(2, 2, 6) for a in (ids, mask, types)]
    if head == "multiple_choice"
    else [ids, mask, types]
  )
  params = nn.unbox(module.init(jax.random.key(0), shaped[0])["params"])
  out = module.apply(
    {"params": params},
    *shaped,
    output_hidden_states=True,
    output_attentions=True,
    head_mask=np.array([1.0, 0.0, 1.0, 1.0]),
  )
  base = AlbertModel(config, add_pooling_layer="pooler" in params["albert"]).apply(
    {"params": params["albert"]},
    ids,
    mask,
    types,
    output_hidden_states=True,
    output_attentions=True,
    head_mask=np.array([1.0, 0.0, 1.0, 1.0]),
  )
  np.testing.assert_array_equal(out.hidden_states, base.hidden_states)
  np.testing.assert_array_equal(out.attentions, base.attentions)
  plain = module.apply({"params": params}, *shaped)
  assert plain.hidden_states is None and plain.attentions is None


def _results(hlo: str) -> int:
  """How many results the program's entry function returns."""
  main = next(line for line in hlo.splitlines() if "func.func public @main" in line)
  return main.split("->", 1)[1].count("jax.result_info")


@pytest.mark.parametrize("scan_layers", [True, False])
def test_flags_off_compile_the_plain_forward(scan_layers):
  """With the research flags off the jitted forward is the same program as without them: the
  HLO text equals the one with every research argument at its default, returns only
  last_hidden_state and pooler_output, and holds no [B, N, L, L]-per-layer stack. (The HLO of
  every head, forward and gradient, scan/loop/xla/remat, was also compared byte for byte with
  the code before these options existed; see the README's Research section.)"""
  config = AlbertConfig(**SMALL)
  module = create_module(config, "base", scan_layers=scan_layers)
  ids, mask, types = padded_batch(2, 8, SMALL["vocab_size"])
  params = abstract_params(module)

  def hlo(**kwargs):
    f = jax.jit(lambda p: module.apply({"params": p}, ids, mask, types, **kwargs))
    return f.lower(params).as_text()

  off = hlo()
  assert off == hlo(
    inputs_embeds=None, head_mask=None, output_attentions=False, output_hidden_states=False
  )
  assert _results(off) == 2
  on = hlo(output_attentions=True, output_hidden_states=True)
  assert _results(on) == 4
  stack = f"tensor<{K}x2x{SMALL['num_attention_heads']}x8x8xf32>"
  assert stack in on and stack not in off
  assert hlo(head_mask=np.ones(SMALL["num_attention_heads"])) != off


@pytest.mark.parametrize("scan_layers", [True, False])
def test_depth_k_equals_the_block_applied_k_times(scan_layers):
  """The 4-layer model's parameters at depth 6 (2 groups: layers 0-2 use group 0, 3-5 group
  1) equal running the embeddings, the projection and the groups by hand."""
  config = AlbertConfig(**SMALL)
  deep = dataclasses.replace(config, num_hidden_layers=6)
  assert jax.tree.map(np.shape, abstract_params(AlbertModel(deep))) == jax.tree.map(
    np.shape, abstract_params(AlbertModel(config))
  )  # no parameter depends on the depth
  ids, mask, types = padded_batch(3, 10, SMALL["vocab_size"])
  params = nn.unbox(AlbertModel(config).init(jax.random.key(3), ids)["params"])
  out = AlbertModel(deep, scan_layers=scan_layers).apply({"params": params}, ids, mask, types)

  positions = np.broadcast_to(np.arange(10), (3, 10))
  x = AlbertEmbeddings(config=config).apply(
    {"params": params["embeddings"]}, ids, types, positions, True
  )
  proj = params["encoder"]["embedding_hidden_mapping_in"]
  x = x @ proj["kernel"] + proj["bias"]
  mask_B11L = jnp.asarray(mask, bool)[:, None, None, :]
  for layer in range(6):
    group = params["encoder"][f"albert_layer_groups_{layer // 3}"]
    x, _ = AlbertLayerGroup(config=config).apply({"params": group}, x, mask_B11L)
  real = mask.astype(bool)
  a, b = np.asarray(out.last_hidden_state)[real], np.asarray(x)[real]
  # The same f32 ops, fused differently: a few ulps per block at the values' scale; LayerNorm
  # renormalizes after each of the 12 blocks (6 layers x 2 inner), so differences add, not
  # multiply. Bound: 4 ulps per block at the largest |value|.
  bound = 4 * 12 * EPS * np.abs(b).max()
  print(f"depth 6 vs by hand: max diff {np.abs(a - b).max():.2e} (bound {bound:.2e})")
  assert np.abs(a - b).max() <= bound


# ---- examples/ ----------------------------------------------------------------------------------


def _example(name: str):
  spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_probe_finds_the_planted_signal_only_after_attention():
  examples = 600
  accuracies = _example("probe_layers").main(examples=examples)
  assert len(accuracies) == 4 + 1
  chance = 0.5 + 4 * np.sqrt(0.25 / (examples // 2))  # 4 sigma above a coin on the test half
  print("probe accuracies:", accuracies)
  assert accuracies[0] < chance  # the per-token projection cannot see the marker from [CLS]
  assert max(accuracies[1:]) > chance


def _png_size(path) -> tuple[int, int]:
  data = pathlib.Path(path).read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
  return struct.unpack(">II", data[16:24])


def test_attention_map_example_writes_the_png(tmp_path):
  size, maps = _example("attention_maps").main("The cat sat.", str(tmp_path / "maps.png"))
  k, n = maps.shape[:2]
  assert (k, n) == (2, 4)
  assert (
    size == attention_maps.figure_pixels(k, n) == _png_size(tmp_path / "maps.png") == (640, 320)
  )
  np.testing.assert_allclose(maps.sum(-1), 1.0, rtol=0, atol=8 * maps.shape[-1] * EPS)


def test_integrated_gradients_are_complete():
  """Midpoint rule with m steps on g(a) = f(a x): |sum of attributions - (f(x) - f(0))| <=
  max|g'''| / (24 m^2). max|g'''| is estimated by third differences of g on 33 points (x2 for
  a sampled maximum), plus f32 rounding of the L x E attribution sum."""
  ig = _example("integrated_gradients")
  steps = 32
  result = ig.main(steps=steps)
  _, params, ids, f = ig.setup()
  x = params["albert"]["embeddings"]["word_embeddings"]["embedding"][ids]
  grid = np.linspace(0.0, 1.0, 33)
  g = np.asarray(jax.jit(jax.vmap(lambda a: f(a * x)))(jnp.asarray(grid, jnp.float32)), np.float64)
  third = np.abs(np.diff(g, 3) / (grid[1] - grid[0]) ** 3).max()
  bound = 2 * third / (24 * steps**2) + 16 * x.size * EPS * np.abs(result["per_token"]).max()
  gap = abs(result["total"] - result["difference"])
  print(f"IG completeness gap {gap:.2e}, bound {bound:.2e} (max|g'''| ~ {third:.1f})")
  assert gap <= bound
  assert abs(result["difference"]) > 10 * bound  # the check is not vacuous


def test_per_example_grads_equal_one_at_a_time():
  ex = _example("per_example_grads")
  grads, norms = ex.main(batch=4)
  params, (ids, mask, labels), loss = ex.setup(batch=4)
  one = jax.jit(jax.grad(loss))
  for i in range(4):
    single = one(params, ids[i], mask[i], labels[i])
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(single), strict=True):
      assert_close_to_scale(a[i], b)
  assert norms.shape == (4,) and np.all(norms > 0)


def test_ensemble_equals_separate_inits():
  ex = _example("ensemble")
  r = ex.main(members=3)
  for m in range(3):
    params = ex.init(r["keys"][m], r["ids"])
    member = jax.tree.map(lambda leaf, m=m: leaf[m], r["params"])
    for a, b in zip(jax.tree.leaves(member), jax.tree.leaves(params), strict=True):
      # The same random bits per key, vmapped or not; the f32 bits -> normal transform is
      # compiled differently under vmap: a few ulps at the leaf's scale.
      assert np.abs(a - b).max() <= 4 * EPS * np.abs(b).max()
    assert_close_to_scale(r["logits"][m], ex.apply(params, r["ids"]))
  assert r["std_probs"].max() > 0  # the members differ


def test_depth_sweep_matches_the_hidden_states_of_the_deepest_run():
  ex = _example("depth_sweep")
  r = ex.main(max_depth=5)
  deepest = dataclasses.replace(ex.CONFIG, num_hidden_layers=5)
  hidden = (
    AlbertModel(deepest)
    .apply({"params": r["params"]}, r["ids"], output_hidden_states=True)
    .hidden_states
  )
  for depth in range(1, 6):  # one group of one layer: depth d's output is hidden_states[d]
    assert_close_to_scale(r["outputs"][depth], hidden[depth])
  assert sorted(r["change"]) == [2, 3, 4, 5]


# ---- python -m albert_jax.attention -----------------------------------------------------------


def test_attention_cli_draws_a_converted_model(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("ALBERT_JAX_CACHE", str(tmp_path / "cache"))
  ref = hf_model(
    "base",
    vocab_size=30000,
    embedding_size=8,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=16,
    max_position_embeddings=32,
  )
  ref.save_pretrained(tmp_path / "hf")
  png = tmp_path / "maps.png"
  argv = ["attention", "--model", str(tmp_path / "hf"), "--output", str(png), "--heads", "1"]
  assert attention.main([*argv, "The cat sat."]) == 0
  assert _png_size(png) == attention_maps.figure_pixels(2, 1)
  assert str(png) in capsys.readouterr().out
  with pytest.raises(UserError, match="exactly one text"):
    attention.main(argv)
  with pytest.raises(UserError, match=r"heads \[5\]"):
    attention.main([*argv[:-1], "5", "The cat sat."])
