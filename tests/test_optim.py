"""Tests for albert_jax.optim: schedule values, decay mask, LAMB/AdamW vs numpy, accumulation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from albert_jax import optim

# ------------------------------------------------------------------------------------------
# Schedule
# ------------------------------------------------------------------------------------------


def _google_lr(t, init_lr, total, warmup):
  """Google's optimization.py, transcribed: polynomial_decay(init_lr, t, T, 0, power=1) from
  step 0, replaced by init_lr * t / W while t < W."""
  decayed = init_lr * (1.0 - min(t, total) / total)
  return init_lr * t / warmup if t < warmup else decayed


def _hf_lr(t, init_lr, total, warmup):
  """HF transformers' get_linear_schedule_with_warmup, transcribed."""
  if t < warmup:
    return init_lr * t / max(1, warmup)
  return init_lr * max(0.0, (total - t) / max(1, total - warmup))


@pytest.mark.parametrize(
  "init_lr, total, warmup",
  [(1e-3, 100, 10), (3e-5, 800, 200), (0.00176, 125_000, 3_125), (2.0, 4, 0)],
)
@pytest.mark.parametrize("form", ["google", "hf"])
def test_warmup_linear_decay_matches_transcription(form, init_lr, total, warmup):
  """Both forms against their literal formulas at every step of short runs and at the
  interesting steps of long ones. The schedule runs in float32 as peak + (end - peak) * frac:
  its rounding is a few ulps of the PEAK rate (2^-23 * init_lr each), whatever the value."""
  s = optim.warmup_linear_decay(init_lr, total, warmup, form=form)
  want = _google_lr if form == "google" else _hf_lr
  steps = (
    range(total + 3)
    if total <= 1000
    else [0, 1, warmup - 1, warmup, warmup + 1, total // 2, total - 1, total, total + 5]
  )
  for t in steps:
    tol = 4 * float(np.finfo(np.float32).eps) * init_lr
    assert float(s(t)) == pytest.approx(want(t, init_lr, total, warmup), rel=0, abs=tol), t


def test_google_schedule_drops_at_the_end_of_warmup():
  """Google's rate falls from init_lr to init_lr*(1 - W/T) at step W; HF's stays at the peak.
  RTE's recipe (800 steps, 200 warm-up): HF's rate is higher by up to T/(T-W) = 4/3."""
  google = optim.warmup_linear_decay(3e-5, 800, 200)  # the default form
  hf = optim.warmup_linear_decay(3e-5, 800, 200, form="hf")
  assert float(google(200)) == pytest.approx(3e-5 * 0.75)
  assert float(hf(200)) == pytest.approx(3e-5)
  ratios = [float(hf(t)) / float(google(t)) for t in range(200, 800)]
  assert max(ratios) == pytest.approx(800 / 600, rel=1e-5) and min(ratios) >= 1.0


def test_warmup_linear_decay_values():
  s = optim.warmup_linear_decay(1e-3, total_steps=100, warmup_steps=10, form="hf")
  assert float(s(0)) == 0.0
  assert float(s(5)) == pytest.approx(5e-4)
  assert float(s(10)) == pytest.approx(1e-3)  # end of warm-up: peak
  assert float(s(55)) == pytest.approx(5e-4)  # half-way through the decay
  assert float(s(50)) == pytest.approx(1e-3 * (1 - 40 / 90))  # midpoint of the run
  assert float(s(100)) == pytest.approx(0.0, abs=1e-12)
  assert float(s(150)) == pytest.approx(0.0, abs=1e-12)  # stays at end_lr


def test_warmup_linear_decay_end_lr_and_edges():
  s = optim.warmup_linear_decay(1e-3, total_steps=100, warmup_steps=10, end_lr=1e-4, form="hf")
  assert float(s(55)) == pytest.approx(5.5e-4)
  assert float(s(100)) == pytest.approx(1e-4)
  assert float(s(1000)) == pytest.approx(1e-4)
  s = optim.warmup_linear_decay(1e-3, total_steps=100, warmup_steps=10, end_lr=1e-4)
  assert float(s(50)) == pytest.approx(1e-4 + 9e-4 * 0.5)  # google: counted from step 0
  assert float(s(1000)) == pytest.approx(1e-4)
  for form in optim.SCHEDULE_FORMS:
    s = optim.warmup_linear_decay(2.0, total_steps=4, warmup_steps=0, form=form)
    assert [float(s(t)) for t in range(5)] == pytest.approx([2.0, 1.5, 1.0, 0.5, 0.0])
  s = optim.warmup_linear_decay(2.0, total_steps=4, warmup_steps=4, end_lr=0.5, form="hf")
  assert [float(s(t)) for t in range(5)] == pytest.approx([0.0, 0.5, 1.0, 1.5, 0.5])
  # usable under jit with a traced step
  assert float(jax.jit(s)(jnp.asarray(2))) == pytest.approx(1.0)


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(peak_lr=1e-3, total_steps=10, warmup_steps=20), "20.*10"),
    (dict(peak_lr=-1.0, total_steps=10, warmup_steps=2), "-1.0"),
    (dict(peak_lr=1.0, total_steps=10, warmup_steps=-2), "-2"),
    (dict(peak_lr=1.0, total_steps=10, warmup_steps=2, end_lr=-0.5), "-0.5"),
    (dict(peak_lr=1.0, total_steps=0, warmup_steps=0), "total_steps"),
    (dict(peak_lr=1.0, total_steps=10, warmup_steps=2, form="cosine"), "cosine"),
  ],
)
def test_warmup_linear_decay_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    optim.warmup_linear_decay(**kwargs)


# ------------------------------------------------------------------------------------------
# Decay mask
# ------------------------------------------------------------------------------------------


def _param_names():
  return {
    "embeddings": {
      "word_embeddings": {"embedding": 1.0},
      "LayerNorm": {"scale": 1.0, "bias": 1.0},
    },
    "encoder": {
      "dense": {"kernel": 1.0, "bias": 1.0},
      "full_layer_layer_norm": {"scale": 1.0, "bias": 1.0},
    },
    "pooler": {"kernel": 1.0},
  }


_EXPECTED_MASK = {
  "embeddings": {
    "word_embeddings": {"embedding": True},
    "LayerNorm": {"scale": False, "bias": False},
  },
  "encoder": {
    "dense": {"kernel": True, "bias": False},
    "full_layer_layer_norm": {"scale": False, "bias": False},
  },
  "pooler": {"kernel": True},
}


def test_decay_mask_nested_dict():
  assert optim.decay_mask(_param_names()) == _EXPECTED_MASK


def test_decay_mask_frozen_dict():
  flax_core = pytest.importorskip("flax.core")
  mask = optim.decay_mask(flax_core.freeze(_param_names()))
  assert isinstance(mask, flax_core.FrozenDict)
  assert flax_core.unfreeze(mask) == _EXPECTED_MASK


# ------------------------------------------------------------------------------------------
# LAMB / AdamW against numpy
# ------------------------------------------------------------------------------------------

B1, B2, EPS, WD, LR = 0.9, 0.999, 1e-6, 0.01, 0.1


def _tree(rng, scale=1.0):
  return {
    "dense": {"kernel": rng.normal(size=(2, 3)) * scale, "bias": rng.normal(size=(3,)) * scale},
    "LayerNorm": {"scale": 1.0 + rng.normal(size=(3,)) * scale, "bias": rng.normal(size=(3,))},
  }


def _f32(tree):
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


_DECAYED = {("dense", "kernel")}  # the only leaf that gets decay (and trust ratio)


def _numpy_reference(params, grads_seq, kind, corrected=False):
  """Clip by global norm 1, Adam moments, then AdamW or LAMB, transcribed from Google's
  `optimization.py` (AdamWeightDecayOptimizer) and `lamb_optimizer.py`: neither bias-corrects
  the moments; `corrected=True` gives the optax / PyTorch AdamW form.
  """
  w = {k: {n: np.array(v, np.float64) for n, v in d.items()} for k, d in params.items()}
  m = {k: {n: np.zeros_like(v) for n, v in d.items()} for k, d in w.items()}
  v = {k: {n: np.zeros_like(x) for n, x in d.items()} for k, d in w.items()}
  for t, grads in enumerate(grads_seq, start=1):
    gnorm = np.sqrt(sum(np.sum(np.square(g)) for d in grads.values() for g in d.values()))
    clip = min(1.0, 1.0 / gnorm)
    for k in w:
      for n in w[k]:
        g = grads[k][n] * clip
        m[k][n] = B1 * m[k][n] + (1 - B1) * g
        v[k][n] = B2 * v[k][n] + (1 - B2) * g * g
        m_hat = m[k][n] / (1 - B1**t) if corrected else m[k][n]
        v_hat = v[k][n] / (1 - B2**t) if corrected else v[k][n]
        u = m_hat / (np.sqrt(v_hat) + EPS)
        if (k, n) in _DECAYED:
          u = u + WD * w[k][n]
          if kind == "lamb":
            u = u * (np.linalg.norm(w[k][n]) / np.linalg.norm(u))
        w[k][n] = w[k][n] - LR * u
  return w


def _run(tx, params, grads_seq):
  params = _f32(params)
  state = tx.init(params)
  for grads in grads_seq:
    updates, state = tx.update(_f32(grads), state, params)
    params = optax.apply_updates(params, updates)
  return params


def _assert_trees_close(actual, expected, rtol=2e-5, atol=1e-6):
  for k in expected:
    for n in expected[k]:
      np.testing.assert_allclose(
        np.asarray(actual[k][n]), expected[k][n], rtol=rtol, atol=atol, err_msg=f"{k}/{n}"
      )


@pytest.mark.parametrize("corrected", [False, True])
@pytest.mark.parametrize("kind", ["lamb", "adamw"])
def test_one_and_two_steps_match_numpy(kind, corrected):
  """float32 optimizer vs the float64 transcription: rtol 2e-5 covers a few float32 roundings
  of each of ~10 operations per step (2^-23 each) on values of order 1, with margin."""
  rng = np.random.default_rng(0)
  params = _tree(rng)
  params["dense"]["kernel"] *= 5.0  # ||w|| far from ||u||: the trust ratio matters
  grads_seq = [_tree(rng, scale=3.0), _tree(rng, scale=0.1)]  # norm > 1 (clipped), then < 1
  tx = optim.make_optimizer(kind, LR, weight_decay=WD, bias_correction=corrected)
  for n_steps in (1, 2):
    got = _run(tx, params, grads_seq[:n_steps])
    _assert_trees_close(got, _numpy_reference(params, grads_seq[:n_steps], kind, corrected))


def test_adamw_default_is_googles_uncorrected_first_step():
  """Google's first AdamW step moves a (non-decayed) parameter by lr * 0.1 g / (sqrt(0.001 g^2)
  + eps) ~ lr * 3.162; the bias-corrected one by lr * g / (|g| + eps) ~ lr. float32: rel 1e-5."""
  params = {"bias": jnp.zeros((1,))}
  grads = {"bias": jnp.full((1,), 0.5)}
  google = _run(optim.adamw(LR, clip_norm=None), params, [grads])
  hf = _run(optim.adamw(LR, clip_norm=None, bias_correction=True), params, [grads])
  g = 0.5
  assert float(google["bias"][0]) == pytest.approx(
    -LR * (1 - B1) * g / (np.sqrt((1 - B2) * g * g) + EPS), rel=1e-5
  )
  assert float(hf["bias"][0]) == pytest.approx(-LR * g / (g + EPS), rel=1e-5)
  # and equals optax.adamw when bias-corrected
  ref = _run(optax.adamw(LR, b1=B1, b2=B2, eps=EPS, weight_decay=WD), params, [grads])
  np.testing.assert_allclose(hf["bias"], ref["bias"], rtol=1e-6)


def test_lamb_skips_trust_ratio_for_layer_norm_unlike_optax_lamb():
  rng = np.random.default_rng(1)
  params = _tree(rng)
  grads = [_tree(rng, scale=0.5)]
  ours = _run(optim.lamb(LR, bias_correction=True), params, grads)  # optax.lamb corrects
  theirs = _run(
    optax.chain(
      optax.clip_by_global_norm(1.0),
      optax.lamb(LR, eps=EPS, weight_decay=WD, mask=optim.decay_mask),
    ),
    params,
    grads,
  )
  # same kernel update (decayed + trust ratio in both) ...
  np.testing.assert_allclose(ours["dense"]["kernel"], theirs["dense"]["kernel"], rtol=1e-5)
  # ... but optax.lamb rescales the LayerNorm scale by ||w||/||u||, ours does not
  assert not np.allclose(ours["LayerNorm"]["scale"], theirs["LayerNorm"]["scale"], rtol=1e-3)


def test_lamb_jits_on_frozen_dict():
  flax_core = pytest.importorskip("flax.core")
  rng = np.random.default_rng(2)
  params = flax_core.freeze(_f32(_tree(rng)))
  grads = flax_core.freeze(_f32(_tree(rng)))
  tx = optim.lamb(optim.warmup_linear_decay(1e-2, 10, 2))
  state = tx.init(params)
  updates, _ = jax.jit(tx.update)(grads, state, params)
  assert isinstance(updates, flax_core.FrozenDict)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(updates))


def test_make_optimizer_errors():
  with pytest.raises(ValueError, match="'sgd'.*adamw.*lamb"):
    optim.make_optimizer("sgd", 1e-3)
  with pytest.raises(ValueError, match="-0.1"):
    optim.adamw(1e-3, weight_decay=-0.1)
  assert optim.make_optimizer("LAMB", 1e-3) is not None


# ------------------------------------------------------------------------------------------
# Gradient accumulation
# ------------------------------------------------------------------------------------------


def test_accumulate_sgd_applies_the_mean_not_the_sum():
  # Plain SGD is scale-sensitive: w - lr * (g1 + g2) / 2, by hand.
  params = {"w": jnp.array([1.0, -2.0])}
  g1, g2 = {"w": jnp.array([0.5, 1.0])}, {"w": jnp.array([1.5, -3.0])}
  acc = optim.accumulate(optax.sgd(0.1), every_k=2)
  state = acc.init(params)
  upd, state = acc.update(g1, state, params)
  p = optax.apply_updates(params, upd)
  np.testing.assert_allclose(p["w"], [1.0, -2.0])
  upd, state = acc.update(g2, state, p)
  p = optax.apply_updates(p, upd)
  # mean gradient [1.0, -1.0] -> [1 - 0.1, -2 + 0.1]
  np.testing.assert_allclose(p["w"], [0.9, -1.9], rtol=1e-6)


def test_accumulate_two_micro_steps_equals_one_step_on_mean():
  rng = np.random.default_rng(3)
  params = _f32(_tree(rng))
  g1, g2 = _f32(_tree(rng, scale=2.0)), _f32(_tree(rng, scale=0.7))
  g_mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)

  base = optim.lamb(LR)
  expected = _run(base, params, [g_mean])

  acc = optim.accumulate(optim.lamb(LR), every_k=2)
  state = acc.init(params)
  upd, state = acc.update(g1, state, params)
  assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(upd))  # first micro-step
  p = optax.apply_updates(params, upd)
  upd, state = acc.update(g2, state, p)
  p = optax.apply_updates(p, upd)
  _assert_trees_close(p, jax.tree.map(np.asarray, expected), rtol=1e-6, atol=1e-7)
  # and the result differs from stepping on g2 alone
  alone = _run(base, params, [g2])
  assert not np.allclose(p["dense"]["kernel"], alone["dense"]["kernel"])


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_accumulate_rejects_bad_k(k):
  with pytest.raises(ValueError, match="every_k"):
    optim.accumulate(optim.adamw(1e-3), k)
