"""Where albert-large-v2 spends its time on CPU: forward, train step and compile.

Sections (pick with --sections, comma separated):
  forward    the model's forward, then isolated pieces (each scanned 24x like the encoder):
             projection/FFN dots, attention, LayerNorm, elementwise, embeddings.
  train      the pretraining train step split into: gradient (forward+backward), optimizer
             update, MLM head + loss (fwd+bwd), embedding gather + scatter-add.
  variants   a pure-JAX copy of the encoder (same math as albert_jax.model) with candidate
             changes: attention layout, fused QKV kernel; forward time and % of matmul rate.
  steps      real train_step candidates: donate, optax.flatten(adamw), remat policies.
  compile    lower/compile seconds of: forward, grad without optimizer, + AdamW, + flatten,
             MLM head at masked positions vs none, scanned 2/24 layers vs unrolled.
  flags      compile of the scanned train step in subprocesses with different XLA_FLAGS.

Usage: python benchmarks/profile_albert.py --sections forward,train --reps 2
Nothing here is imported by the library; the numbers feed the performance notes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

import numpy as np

B, L, P = 8, 128, 20  # batch, sequence, masked positions per example


def _time(fn, reps: int) -> float:
  fn()
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t0)
  return min(ts)  # min, not median: the 2 cores are shared, contention only adds time


def matmul_rate(reps: int) -> float:
  import jax

  n = 2048
  a = jax.random.normal(jax.random.key(0), (n, n))
  f = jax.jit(lambda x: x @ x)
  return 2 * n**3 / _time(lambda: f(a).block_until_ready(), max(reps, 5))


def _config(layers: int | None = None):
  from albert_jax import AlbertConfig

  c = AlbertConfig.from_name("albert-large-v2")
  return c if layers is None else dataclasses.replace(c, num_hidden_layers=layers)


def _params(module):
  import jax

  from albert_jax.heads import abstract_params

  rng = np.random.default_rng(0)
  return jax.tree.map(
    lambda s: rng.normal(0, 0.02, s.shape).astype(s.dtype), abstract_params(module)
  )


def _batch(vocab: int) -> dict:
  rng = np.random.default_rng(0)
  pos = np.sort(rng.choice(np.arange(1, L), (B, P)), axis=1).astype(np.int32)
  return {
    "input_ids": rng.integers(5, vocab, (B, L)).astype(np.int32),
    "attention_mask": np.ones((B, L), np.int32),
    "token_type_ids": np.zeros((B, L), np.int32),
    "masked_lm_positions": pos,
    "masked_lm_ids": rng.integers(5, vocab, (B, P)).astype(np.int32),
    "masked_lm_weights": np.ones((B, P), np.float32),
    "sentence_order_label": rng.integers(0, 2, (B,)).astype(np.int32),
  }


def _table(title: str, rows: list[tuple], total: float | None = None) -> None:
  print(f"\n## {title}")
  print(f"{'piece':<46}{'ms':>9}{'%total':>8}{'GFLOP/s':>9}{'%peak':>7}")
  for name, secs, flop, peak in rows:
    pct = f"{100 * secs / total:7.1f}" if total else "       "
    rate = flop / secs / 1e9 if flop else 0.0
    pk = f"{100 * flop / secs / peak:6.0f}%" if flop else "       "
    print(f"{name:<46}{secs * 1e3:9.1f}{pct} {rate:8.0f}{pk}")


# ---- pure-JAX encoder (the math of albert_jax.model, for isolated pieces and variants) --------


def _enc_params(c, fused: bool):
  import jax.numpy as jnp

  h, n, d, f = c.hidden_size, c.num_attention_heads, c.head_dim, c.intermediate_size
  r = np.random.default_rng(1)

  def w(*s):
    return jnp.asarray(r.normal(0, 0.02, s).astype(np.float32))

  p = {
    "o": w(n, d, h),
    "bo": w(h),
    "ln1": (jnp.ones(h), jnp.zeros(h)),
    "f1": w(h, f),
    "bf1": w(f),
    "f2": w(f, h),
    "bf2": w(h),
    "ln2": (jnp.ones(h), jnp.zeros(h)),
  }
  if fused:
    p["qkv"], p["bqkv"] = w(h, 3, n, d), w(3, n, d)
  else:
    for k in "qkv":
      p[k], p["b" + k] = w(h, n, d), w(n, d)
  return p


def _ln(x, sb, eps=1e-12):
  import flax.linen as nn

  return nn.LayerNorm(epsilon=eps).apply({"params": {"scale": sb[0], "bias": sb[1]}}, x)


def _attention(q, k, v, mask_B11L, kind: str):
  import jax
  import jax.numpy as jnp

  if kind == "dpa":  # attention_implementation="xla"
    return jax.nn.dot_product_attention(q, k, v, mask=mask_B11L)
  scale = q.shape[-1] ** -0.5
  if kind == "einsum":  # einsum straight on the [B, L, N, D] projections
    s = jnp.einsum("bqnd,bknd->bnqk", q * scale, k)
    s = jnp.where(mask_B11L, s, jnp.finfo(s.dtype).min)
    return jnp.einsum("bnqk,bknd->bqnd", jax.nn.softmax(s), v)
  if kind == "bnld":  # heads-major, the model's default (albert_jax.layers.einsum_attention)
    qt, kt, vt = (jnp.transpose(t, (0, 2, 1, 3)) for t in (q, k, v))
    s = jnp.einsum("bnqd,bnkd->bnqk", qt * scale, kt)
    s = jnp.where(mask_B11L, s, jnp.finfo(s.dtype).min)
    return jnp.transpose(jnp.einsum("bnqk,bnkd->bnqd", jax.nn.softmax(s), vt), (0, 2, 1, 3))
  if kind == "bias":  # additive mask bias instead of where
    s = jnp.einsum("bqnd,bknd->bnqk", q * scale, k)
    s = s + jnp.where(mask_B11L, 0.0, -1e9)
    return jnp.einsum("bnqk,bknd->bqnd", jax.nn.softmax(s), v)
  raise ValueError(kind)


def _layer(p, x, mask, attn="dpa", fused=False):
  import jax
  import jax.numpy as jnp

  if fused:
    qkv = jnp.einsum("blh,hknd->kblnd", x, p["qkv"]) + p["bqkv"][:, None, None]
    q, k, v = qkv[0], qkv[1], qkv[2]
  else:
    q, k, v = (jnp.einsum("blh,hnd->blnd", x, p[t]) + p["b" + t] for t in "qkv")
  ctx = _attention(q, k, v, mask, attn)
  a = _ln(x + jnp.einsum("blnd,ndh->blh", ctx, p["o"]) + p["bo"], p["ln1"])
  hf = jax.nn.gelu(a @ p["f1"] + p["bf1"], approximate=True)
  return _ln(a + hf @ p["f2"] + p["bf2"], p["ln2"])


def _scan24(body, layers: int):
  """f(p, x, mask) applying body `layers` times with the same p, like the model's nn.scan."""
  import jax

  def f(p, x, mask):
    return jax.lax.scan(lambda h, _: (body(p, h, mask), None), x, None, length=layers)[0]

  return f


def _encoder_flop(c) -> float:
  h, f = c.hidden_size, c.intermediate_size
  per_layer = 2 * B * L * (4 * h * h + 2 * h * f) + 4 * B * L * L * h
  return c.num_hidden_layers * per_layer + 2 * B * L * c.embedding_size * h


# ---- sections ---------------------------------------------------------------------------------


def section_forward(reps: int, peak: float) -> None:
  import jax
  import jax.numpy as jnp

  from albert_jax.heads import create_module

  c = _config()
  n_layers, h, n, d, f = (
    c.num_hidden_layers,
    c.hidden_size,
    c.num_attention_heads,
    c.head_dim,
    c.intermediate_size,
  )
  module = create_module(c, "base")
  params = _params(module)
  data = _batch(c.vocab_size)
  ids, mask = data["input_ids"], data["attention_mask"]
  fwd = jax.jit(lambda p, i, m: module.apply({"params": p}, i, m).last_hidden_state)
  compiled = fwd.lower(params, ids, mask).compile()
  total = _time(lambda: compiled(params, ids, mask).block_until_ready(), reps)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  print(
    f"\nXLA cost_analysis of the forward: {cost.get('flops', 0) / 1e9:.1f} GFLOP, "
    f"{cost.get('bytes accessed', 0) / 1e9:.2f} GB accessed; "
    f"model FLOP {_encoder_flop(c) / 1e9:.1f} GFLOP"
  )
  hlo = compiled.as_text()
  counts = {
    k: hlo.count(k)
    for k in (
      " dot(",
      " fusion(",
      "kind=kOutput",
      "kind=kLoop",
      " while(",
      " gather(",
      " custom-call(",
      " copy(",
      " transpose(",
      "__onednn",
    )
  }
  print("ops in the optimized HLO:", counts)

  x = jnp.asarray(np.random.default_rng(0).normal(size=(B, L, h)).astype(np.float32))
  m = jnp.asarray(mask.astype(bool)[:, None, None, :])
  p = _enc_params(c, fused=False)
  tok = B * L

  def piece(body):
    g = jax.jit(_scan24(body, n_layers))
    return _time(lambda: g(p, x, m).block_until_ready(), reps)

  def dots(p, x, m):
    q = jnp.einsum("blh,hnd->blnd", x, p["q"])
    k = jnp.einsum("blh,hnd->blnd", x, p["k"])
    v = jnp.einsum("blh,hnd->blnd", x, p["v"])
    o = jnp.einsum("blnd,ndh->blh", q + k + v, p["o"])
    return ((o @ p["f1"]) @ p["f2"]) * 1e-3

  def attn(kind):
    return lambda p, x, m: _attention(
      x.reshape(B, L, n, d), x.reshape(B, L, n, d) * 0.5, x.reshape(B, L, n, d), m, kind
    ).reshape(B, L, h)

  def lns(p, x, m):
    return _ln(_ln(x, p["ln1"]) + x, p["ln2"])

  def elementwise(p, x, m):  # bias adds, residuals, GELU on [B, L, F]
    y = jnp.tile(x, (1, 1, f // h)) + p["bf1"]
    y = jax.nn.gelu(y, approximate=True)
    return x + y[..., :h] + y[..., h : 2 * h] + p["bo"] + p["bf2"]

  full_layer = piece(_layer)
  dot_flop = n_layers * 2 * tok * (4 * h * h + 2 * h * f)
  att_flop = n_layers * 4 * B * L * L * h
  rows = [
    ("model forward (albert_jax, scanned)", total, _encoder_flop(c), peak),
    ("pure-JAX copy of the 24-layer encoder", full_layer, _encoder_flop(c), peak),
    ("  dots: q,k,v,o projections + FFN", piece(dots), dot_flop, peak),
    ("  attention: jax.nn.dot_product_attention", piece(attn("dpa")), att_flop, peak),
    ("  attention: einsum BLND (where-mask)", piece(attn("einsum")), att_flop, peak),
    ("  attention: einsum BNLD (transposed)", piece(attn("bnld")), att_flop, peak),
    ("  layernorm x2 (flax nn.LayerNorm)", piece(lns), 0, peak),
    ("  elementwise: GELU[B,L,F] + bias + residual", piece(elementwise), 0, peak),
  ]
  ew = jnp.asarray(np.random.default_rng(0).normal(0, 0.02, (c.vocab_size, 128)), jnp.float32)
  pw = jnp.asarray(np.random.default_rng(1).normal(0, 0.02, (512, 128)), jnp.float32)
  wm = jnp.asarray(np.random.default_rng(2).normal(0, 0.02, (128, h)), jnp.float32)
  idsj = jnp.asarray(ids)

  @jax.jit
  def embed(ew, pw, wm, ids):
    e = ew[ids] + pw[jnp.arange(L)][None]
    e = _ln(e, (jnp.ones(128), jnp.zeros(128)))
    return e @ wm

  rows.append(
    (
      "embeddings gather + LN + E->H",
      _time(lambda: embed(ew, pw, wm, idsj).block_until_ready(), reps),
      2 * tok * 128 * h,
      peak,
    )
  )
  _table("forward albert-large-v2 8x128 (pieces run 24x in a scan)", rows, total)


def _loss_parts(c):
  """Pure-JAX MLM head + loss and embedding lookup, for their fwd+bwd cost."""
  import jax
  import jax.numpy as jnp
  import optax

  def mlm(h_BLH, w_HE, ln, emb_VE, bias_V, pos_BP, ids_BP):
    hp = jnp.take_along_axis(h_BLH, pos_BP[..., None], axis=1)
    x = _ln(jax.nn.gelu(hp @ w_HE, approximate=True), ln)
    logits = x @ emb_VE.T + bias_V
    return optax.softmax_cross_entropy_with_integer_labels(logits, ids_BP).mean()

  def embed(emb_VE, ids_BL, g_BLE):
    return jnp.sum(emb_VE[ids_BL] * g_BLE)

  return jax.jit(jax.grad(mlm, argnums=(0, 1, 2, 3, 4))), jax.jit(jax.grad(embed))


def section_train(reps: int, peak: float) -> None:
  import jax
  import jax.numpy as jnp
  import optax

  from albert_jax import optim
  from albert_jax.heads import create_module
  from albert_jax.train import create_train_state, loss_fn, train_step

  c = _config()
  module = create_module(c, "pretraining")
  params = _params(module)
  data = _batch(c.vocab_size)
  tx = optim.adamw(1e-5)
  state = create_train_state(module, params, tx, "pretraining")
  rng = jax.random.key(0)
  step = jax.jit(train_step, donate_argnums=0).lower(state, data, rng).compile()
  holder = [state]

  def run():
    holder[0], met = step(holder[0], data, rng)
    jax.block_until_ready(met)

  total = _time(run, reps)
  state = holder[0]
  grad = jax.jit(lambda s, b, r: jax.grad(loss_fn, has_aux=True)(s.params, s, b, r)[0])
  g = grad(state, data, rng)
  t_grad = _time(lambda: jax.block_until_ready(grad(state, data, rng)), reps)
  fwd = jax.jit(lambda s, b, r: loss_fn(s.params, s, b, r)[0])
  t_fwd = _time(lambda: jax.block_until_ready(fwd(state, data, rng)), reps)

  upd = jax.jit(lambda g, o, p: optax.apply_updates(p, tx.update(g, o, p)[0]))
  t_opt = _time(lambda: jax.block_until_ready(upd(g, state.opt_state, state.params)), reps)
  ftx = optax.flatten(tx)
  fo = ftx.init(state.params)
  fupd = jax.jit(lambda g, o, p: optax.apply_updates(p, ftx.update(g, o, p)[0]))
  t_fopt = _time(lambda: jax.block_until_ready(fupd(g, fo, state.params)), reps)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  n_leaves = len(jax.tree.leaves(state.params))

  mlm_g, emb_g = _loss_parts(c)
  r = np.random.default_rng(0)
  arr = lambda *s: jnp.asarray(r.normal(0, 0.02, s).astype(np.float32))  # noqa: E731
  margs = (
    arr(B, L, c.hidden_size),
    arr(c.hidden_size, 128),
    (jnp.ones(128), jnp.zeros(128)),
    arr(c.vocab_size, 128),
    arr(c.vocab_size),
    jnp.asarray(data["masked_lm_positions"]),
    jnp.asarray(data["masked_lm_ids"]),
  )
  t_mlm = _time(lambda: jax.block_until_ready(mlm_g(*margs)), reps)
  eargs = (arr(c.vocab_size, 128), jnp.asarray(data["input_ids"]), arr(B, L, 128))
  t_emb = _time(lambda: jax.block_until_ready(emb_g(*eargs)), reps)

  enc = _scan24(_layer, c.num_hidden_layers)
  p = _enc_params(c, fused=False)
  x = arr(B, L, c.hidden_size)
  m = jnp.ones((B, 1, 1, L), bool)
  encg = jax.jit(jax.grad(lambda p, x: jnp.sum(enc(p, x, m)), argnums=(0, 1)))
  t_enc = _time(lambda: jax.block_until_ready(encg(p, x)), reps)
  fl = 3 * _encoder_flop(c)
  rows = [
    ("train_step (pretraining, AdamW, donated)", total, fl, peak),
    ("  loss only (forward, dropout on)", t_fwd, fl / 3, peak),
    ("  grad (forward + backward, no optimizer)", t_grad, fl, peak),
    ("  pure-JAX encoder fwd+bwd (24 layers, no drop)", t_enc, fl, peak),
    (f"  AdamW+clip update ({n_leaves} leaves, {n_params / 1e6:.1f}M)", t_opt, 0, peak),
    ("  optax.flatten(AdamW+clip) update", t_fopt, 0, peak),
    ("  MLM head + xent fwd+bwd (8x20 of 30000)", t_mlm, 3 * 2 * B * P * 128 * c.vocab_size, peak),
    ("  embedding gather fwd + scatter-add bwd", t_emb, 0, peak),
  ]
  _table("train step albert-large-v2 8x128", rows, total)


def section_variants(reps: int, peak: float) -> None:
  import jax
  import jax.numpy as jnp

  c = _config()
  r = np.random.default_rng(0)
  x = jnp.asarray(r.normal(size=(B, L, c.hidden_size)).astype(np.float32))
  m = jnp.ones((B, 1, 1, L), bool)
  rows = []
  base = None
  for attn, fused in (("dpa", False), ("dpa", True), ("bnld", False), ("bnld", True)):
    p = _enc_params(c, fused)
    f = jax.jit(_scan24(lambda p, x, m, a=attn, fu=fused: _layer(p, x, m, a, fu), 24))
    out = f(p, x, m)
    if not fused:
      base = out if attn == "dpa" else base
    secs = _time(lambda: f(p, x, m).block_until_ready(), reps)
    g = jax.jit(jax.grad(lambda p, x, f=f: jnp.sum(f(p, x, m)), argnums=(0, 1)))
    gsecs = _time(lambda: jax.block_until_ready(g(p, x)), 1) if not fused else 0.0
    diff = float(jnp.max(jnp.abs(out - base))) if not fused else float("nan")
    rows.append((f"attn={attn:<6} fused_qkv={fused!s:<5}", secs, gsecs, diff))
  fl = _encoder_flop(c)
  print("\n## encoder variants (pure JAX, 24 layers, 8x128)")
  print(f"{'variant':<32}{'fwd ms':>8}{'%peak':>7}{'fwd+bwd ms':>12}{'%peak':>7}{'maxdiff':>10}")
  for name, s, gs, d in rows:
    bwd = f"{gs * 1e3:12.0f}{100 * 3 * fl / gs / peak:6.0f}%" if gs else f"{'-':>12}{'-':>7}"
    print(f"{name:<32}{s * 1e3:8.0f}{100 * fl / s / peak:6.0f}%{bwd}{d:10.1e}")


def section_steps(reps: int, peak: float) -> None:
  import jax
  import optax

  from albert_jax import optim
  from albert_jax.heads import create_module
  from albert_jax.train import create_train_state, train_step

  c = _config()
  data = _batch(c.vocab_size)
  rng = jax.random.key(0)
  fl = 3 * _encoder_flop(c)
  print("\n## train_step candidates (pretraining 8x128)")
  print(f"{'candidate':<48}{'compile s':>10}{'step ms':>9}{'%peak':>7}")
  cands = [
    ("baseline adamw, donate", None, optim.adamw(1e-5), True),
    ("adamw, no donate", None, optim.adamw(1e-5), False),
    ("optax.flatten(adamw), donate", None, optax.flatten(optim.adamw(1e-5)), True),
    (
      "remat dots_with_no_batch_dims_saveable",
      "dots_with_no_batch_dims_saveable",
      optim.adamw(1e-5),
      True,
    ),
    ("remat nothing_saveable", "nothing_saveable", optim.adamw(1e-5), True),
  ]
  for name, policy, tx, donate in cands:
    module = create_module(c, "pretraining", remat_policy=policy)
    state = create_train_state(module, _params(module), tx, "pretraining")
    t0 = time.perf_counter()
    step = jax.jit(train_step, donate_argnums=0 if donate else ()).lower(state, data, rng).compile()
    comp = time.perf_counter() - t0
    holder = [state]

    def run(step=step, holder=holder):
      holder[0], met = step(holder[0], data, rng)
      jax.block_until_ready(met)

    secs = _time(run, reps)
    print(f"{name:<48}{comp:10.2f}{secs * 1e3:9.0f}{100 * fl / secs / peak:6.0f}%")


def _compile_s(fn, *args) -> tuple[float, float]:
  import jax

  t0 = time.perf_counter()
  low = jax.jit(fn).lower(*args)
  t1 = time.perf_counter()
  low.compile()
  return t1 - t0, time.perf_counter() - t1


def section_compile(reps: int, peak: float, layers_list=(24,)) -> None:
  import jax
  import jax.numpy as jnp
  import optax

  from albert_jax import optim
  from albert_jax.heads import create_module
  from albert_jax.train import create_train_state, loss_fn, train_step

  data = _batch(30000)
  rng = jax.random.key(0)
  print("\n## compile time (s): lower = trace to StableHLO, compile = XLA")
  print(f"{'what':<58}{'lower':>7}{'compile':>9}")

  def show(name, fn, *args):
    lo, co = _compile_s(fn, *args)
    print(f"{name:<58}{lo:7.2f}{co:9.2f}", flush=True)

  for layers, scan in [(n, True) for n in layers_list] + [(24, False)]:
    c = _config(layers)
    tag = f"[{layers}L {'scan' if scan else 'unrolled'}]"
    module = create_module(c, "pretraining", scan_layers=scan)
    params = _params(module)
    st = create_train_state(module, params, optim.adamw(1e-5), "pretraining")
    if not scan:
      show(f"{tag} train_step AdamW", train_step, st, data, rng)
      continue
    base = create_module(c, "base", scan_layers=scan)
    bparams = _params(base)
    show(
      f"{tag} base forward",
      lambda p, b: base.apply({"params": p}, b["input_ids"], b["attention_mask"]).last_hidden_state,
      bparams,
      data,
    )
    show(
      f"{tag} base fwd+bwd (sum of hidden)",
      jax.grad(
        lambda p, b: jnp.sum(
          base.apply({"params": p}, b["input_ids"], b["attention_mask"]).last_hidden_state
        )
      ),
      bparams,
      data,
    )
    show(
      f"{tag} pretraining loss (fwd, dropout)",
      lambda s, b, r: loss_fn(s.params, s, b, r)[0],
      st,
      data,
      rng,
    )
    show(
      f"{tag} pretraining grad, no optimizer",
      lambda s, b, r: jax.grad(loss_fn, has_aux=True)(s.params, s, b, r)[0],
      st,
      data,
      rng,
    )
    show(
      f"{tag} pretraining grad, deterministic (no dropout)",
      lambda s, b: jax.grad(loss_fn, has_aux=True)(s.params, s, b, None)[0],
      st,
      data,
    )

    def sop_only(s, b, r):  # MLM head dead: no masked gather, no vocab logits
      def lf(p):
        out = s.apply_fn(
          {"params": p},
          b["input_ids"],
          b["attention_mask"],
          masked_positions=b["masked_lm_positions"],
          deterministic=False,
          rngs={"dropout": r},
        )
        return jnp.sum(out.sop_logits)

      return jax.grad(lf)(s.params)

    show(f"{tag} grad, SOP only (MLM head unused)", sop_only, st, data, rng)

    def mlm_all(s, b, r):  # MLM logits at all L positions
      def lf(p):
        out = s.apply_fn(
          {"params": p},
          b["input_ids"],
          b["attention_mask"],
          deterministic=False,
          rngs={"dropout": r},
        )
        return jnp.mean(jax.nn.logsumexp(out.prediction_logits, -1))

      return jax.grad(lf)(s.params)

    show(f"{tag} grad, MLM logits at all positions", mlm_all, st, data, rng)
    show(f"{tag} train_step AdamW+clip", train_step, st, data, rng)
    for name, tx in (
      ("adamw no clip", optim.adamw(1e-5, clip_norm=None)),
      ("optax.sgd", optax.sgd(1e-5)),
      ("optax.flatten(adamw+clip)", optax.flatten(optim.adamw(1e-5))),
    ):
      s2 = create_train_state(module, params, tx, "pretraining")
      show(f"{tag} train_step {name}", train_step, s2, data, rng)


_FLAG_SETS = [
  "",
  "--xla_cpu_use_fusion_emitters=false",
  "--xla_backend_optimization_level=0",
  "--xla_llvm_disable_expensive_passes=true",
  "--xla_cpu_parallel_codegen_split_count=2",
]


def flag_probe() -> None:
  """Run in a fresh process by `section_flags`: prints compile s (scanned 24L, unrolled 24L
  train step, the CLIs' remat policy), scanned step s and forward s."""
  import jax

  from albert_jax import optim
  from albert_jax.heads import create_module
  from albert_jax.model import TRAIN_REMAT_POLICY
  from albert_jax.train import create_train_state, train_step

  data, rng, out = _batch(30000), jax.random.key(0), []
  for scan in (True, False):
    m = create_module(_config(), "pretraining", scan_layers=scan, remat_policy=TRAIN_REMAT_POLICY)
    s = create_train_state(m, _params(m), optim.adamw(1e-5), "pretraining")
    lowered = jax.jit(train_step).lower(s, data, rng)
    t0 = time.perf_counter()
    c = lowered.compile()
    out.append(time.perf_counter() - t0)
    if scan:
      step = _time(lambda c=c, s=s: jax.block_until_ready(c(s, data, rng)), 1)
  base = create_module(_config(), "base")
  bp = _params(base)
  fwd = jax.jit(lambda p, b: base.apply({"params": p}, b["input_ids"], b["attention_mask"]))
  fwd_s = _time(lambda: jax.block_until_ready(fwd(bp, data)), 2)
  print(out[0], out[1], step, fwd_s)


def section_flags() -> None:
  print("\n## XLA_FLAGS (fresh process each): train step compile, scanned vs unrolled 24L")
  print(f"{'XLA_FLAGS':<44}{'scan s':>8}{'unroll s':>9}{'ratio':>7}{'step ms':>9}{'fwd ms':>8}")
  code = "import sys;sys.path.insert(0,'.');import benchmarks.profile_albert as p;p.flag_probe()"
  for flags in _FLAG_SETS:
    env = {**os.environ, "XLA_FLAGS": flags}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    last = out.stdout.strip().splitlines()[-1:] or [out.stderr.strip()[-200:]]
    try:
      sc, un, st, fw = (float(v) for v in last[0].split())
    except ValueError:
      print(f"{flags or '(none)':<44} failed: {last[0]}")
      continue
    print(
      f"{flags or '(none)':<44}{sc:8.2f}{un:9.2f}{un / sc:7.2f}{st * 1e3:9.0f}{fw * 1e3:8.0f}",
      flush=True,
    )


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--sections", default="forward,train,variants,steps,compile,flags")
  ap.add_argument("--reps", type=int, default=2)
  ap.add_argument("--compile-layers", default="24,2", help="scanned depths for `compile`")
  args = ap.parse_args(argv)
  want = args.sections.split(",")
  peak = matmul_rate(args.reps)
  print(json.dumps({"xla_f32_matmul_gflops": round(peak / 1e9, 1)}))
  if "forward" in want:
    section_forward(args.reps, peak)
  if "train" in want:
    section_train(args.reps, peak)
  if "variants" in want:
    section_variants(args.reps, peak)
  if "steps" in want:
    section_steps(args.reps, peak)
  if "compile" in want:
    layers = tuple(int(v) for v in args.compile_layers.split(","))
    section_compile(args.reps, peak, layers)
  if "flags" in want:
    section_flags()
  return 0


if __name__ == "__main__":
  sys.exit(main())
