"""albert_jax beside HF transformers' PyTorch ALBERT, in one process, same shapes and weights.

  python benchmarks/bench_albert.py                 # everything, albert-large-v2
  python benchmarks/bench_albert.py --only forward  # one section
  python benchmarks/bench_albert.py --size albert-base-v2 --reps 3 --json out.json

Sections: `peak` (f32 matmul rates measured now: a 2048^3 square and the encoder's own GEMM
shapes; the best of them is the roofline for the FLOP/s columns),
`forward` (AlbertModel, inference), `pretrain` (MLM at 20 masked positions + SOP, AdamW step),
`finetune` (sequence classification, AdamW step), `compile` (scanned vs unrolled train step),
`remat` (policies' time and memory), `dtype` (bf16 vs f32 forward). Each timed figure is the
median over `--reps` runs after a warm-up run (forward: JAX, PyTorch and the GEMM chain
alternating, as load on a shared machine drifts; train steps: one block per framework, as
alternating makes each re-fault the other's freed memory); tokens/s = batch * seq / median s.
PyTorch runs with its best ordinary settings: `torch.inference_mode()` for inference, the
HF model's own loss (MLM logits at every position, as HF computes them) for training. JAX
runs jitted, its train steps with the training CLIs' remat policy (`--remat` to change it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np


def flop_per_token(config, seq: int, train: bool) -> float:
  """Matmul FLOP per token of the encoder (the issue's accounting, heads not counted).

  Per layer: q, k, v, output projections 4 * 2H^2, FFN 2 * 2HI, attention scores and
  mixing 2 * 2LH; plus the E -> H projection 2EH. A training step is 3x the forward.
  albert-large-v2 at seq 128: 6.17e8 forward, 1.85e9 train.
  """
  h, i, e = config.hidden_size, config.intermediate_size, config.embedding_size
  layer = 8 * h * h + 4 * h * i + 4 * seq * h
  forward = config.num_hidden_layers * config.inner_group_num * layer + 2 * e * h
  return 3 * forward if train else forward


def _median_time(fn, reps: int) -> float:
  fn()  # warm-up (compilation for JAX)
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _interleaved_medians(fns, reps: int) -> list[float]:
  """Median seconds of each fn, runs alternating (a, b, a, b, ...) after one warm-up each, so
  load drifting on a shared machine hits every fn alike."""
  for fn in fns:
    fn()
  times = [[] for _ in fns]
  for _ in range(reps):
    for fn, ts in zip(fns, times, strict=True):
      t0 = time.perf_counter()
      fn()
      ts.append(time.perf_counter() - t0)
  return [statistics.median(ts) for ts in times]


def encoder_gemm_chain(config, rows: int):
  """(fn, args, flop): the encoder's matmuls alone, at their shapes, as a 24-step scan of the
  chain [R,H]@[H,H] x4 (q, k, v, o) -> @[H,F] -> @[F,H]; nothing else. Its FLOP/s is what the
  forward's matmuls would reach if attention, LayerNorm and the rest cost nothing."""
  import jax
  import jax.numpy as jnp

  h, f = config.hidden_size, config.intermediate_size
  layers = config.num_hidden_layers * config.inner_group_num
  keys = jax.random.split(jax.random.key(0), 7)
  ws = [jax.random.normal(k, (h, h), jnp.float32) * h**-0.5 for k in keys[:4]]
  ws += [
    jax.random.normal(keys[4], (h, f), jnp.float32) * h**-0.5,
    jax.random.normal(keys[5], (f, h), jnp.float32) * f**-0.5,
  ]
  x = jax.random.normal(keys[6], (rows, h), jnp.float32)

  def chain(ws, x):
    def layer(x_RH, _):
      for w in ws:
        x_RH = x_RH @ w
      return x_RH, None

    return jax.lax.scan(layer, x, None, length=layers)[0]

  flop = layers * rows * (4 * 2 * h * h + 2 * 2 * h * f)
  return jax.jit(chain), (ws, x), flop


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_matmul_peak(reps: int, config=None, rows: int = 1024) -> dict:
  """f32 GEMM rates measured now: a 2048^3 square (the issue's "matmul rate") and, given a
  config, the encoder's own GEMMs at `rows` tokens ([rows, H] @ [H, H], [rows, H] @ [H, F],
  [rows, F] @ [F, H]). `peak_gflops`, the roofline for the FLOP/s columns, is the best of all
  of them (XLA and PyTorch): a rate the model's own matmuls exceed would be no limit. (The
  forward rows also carry `jax_fraction_of_gemm_chain`, against its matmuls timed alongside.)"""
  import jax
  import torch

  shapes = {"square2048": (2048, 2048, 2048)}
  if config is not None:
    h, f = config.hidden_size, config.intermediate_size
    shapes.update(
      {"rows_h_h": (rows, h, h), "rows_h_ffn": (rows, h, f), "rows_ffn_h": (rows, f, h)}
    )
  out = {}
  for name, (m, k, n) in shapes.items():
    a = jax.random.normal(jax.random.key(0), (m, k), "float32")
    b = jax.random.normal(jax.random.key(1), (k, n), "float32")
    f = jax.jit(lambda x, y: x @ y)
    out[f"jax_gflops_{name}"] = (
      2
      * m
      * k
      * n
      / _median_time(lambda f=f, a=a, b=b: f(a, b).block_until_ready(), max(reps, 7))
      / 1e9
    )
    ta, tb = torch.randn(m, k), torch.randn(k, n)
    out[f"torch_gflops_{name}"] = (
      2 * m * k * n / _median_time(lambda ta=ta, tb=tb: ta @ tb, max(reps, 7)) / 1e9
    )
  out["peak_gflops"] = max(out.values())
  return out


def _batch(batch: int, seq: int, vocab: int, n_masked: int = 20) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  positions = np.sort(rng.choice(np.arange(1, seq), (batch, n_masked)), axis=1)
  return {
    "input_ids": rng.integers(5, vocab, (batch, seq)).astype(np.int32),
    "attention_mask": np.ones((batch, seq), np.int32),
    "token_type_ids": np.zeros((batch, seq), np.int32),
    "masked_lm_positions": positions.astype(np.int32),
    "masked_lm_ids": rng.integers(5, vocab, (batch, n_masked)).astype(np.int32),
    "masked_lm_weights": np.ones((batch, n_masked), np.float32),
    "sentence_order_label": rng.integers(0, 2, (batch,)).astype(np.int32),
    "label": rng.integers(0, 2, (batch,)).astype(np.int32),
  }


class Bench:
  """Holds the two implementations of one head with the same random weights."""

  def __init__(self, size: str, head: str, **options):
    import torch
    import transformers

    from albert_jax import AlbertConfig
    from albert_jax.heads import create_module
    from albert_jax.weights.hf import params_from_hf_state_dict

    self.config = AlbertConfig.from_name(size)
    hf_cls = {
      "base": "AlbertModel",
      "pretraining": "AlbertForPreTraining",
      "sequence_classification": "AlbertForSequenceClassification",
    }[head]
    torch.manual_seed(0)
    self.torch_model = getattr(transformers, hf_cls)(
      transformers.AlbertConfig(**self.config.to_dict())
    )
    self.head = head
    self.params = params_from_hf_state_dict(self.torch_model.state_dict(), self.config, head)
    self.module = create_module(self.config, head, **options)


def bench_forward(size: str, shapes, reps: int, peak: dict) -> list[dict]:
  import jax
  import torch

  b = Bench(size, "base")
  b.torch_model.eval()
  fwd = jax.jit(lambda p, ids, m: b.module.apply({"params": p}, ids, m).last_hidden_state)
  rows = []
  for batch, seq in shapes:
    data = _batch(batch, seq, b.config.vocab_size)
    ids, mask = data["input_ids"], data["attention_mask"]
    t0 = time.perf_counter()
    fwd.lower(b.params, ids, mask).compile()
    compile_s = time.perf_counter() - t0
    tids, tmask = torch.as_tensor(ids).long(), torch.as_tensor(mask).long()

    def run_torch():
      with torch.inference_mode():
        b.torch_model(input_ids=tids, attention_mask=tmask)

    gemms, gemm_args, gemm_flop = encoder_gemm_chain(b.config, batch * seq)
    jax_s, torch_s, gemm_s = _interleaved_medians(
      [
        lambda: fwd(b.params, ids, mask).block_until_ready(),
        run_torch,
        lambda: gemms(*gemm_args).block_until_ready(),
      ],
      reps,
    )
    tokens = batch * seq
    rows.append(
      _row(
        "forward",
        f"{batch}x{seq}",
        tokens,
        jax_s,
        torch_s,
        compile_s,
        flop_per_token(b.config, seq, train=False),
        peak,
      )
    )
    # the forward's FLOP/s over its own matmuls' FLOP/s when run alone, measured alongside
    rows[-1]["gemm_chain_gflops"] = gemm_flop / gemm_s / 1e9
    rows[-1]["jax_fraction_of_gemm_chain"] = rows[-1]["jax_gflops"] / rows[-1]["gemm_chain_gflops"]
  return rows


def _row(what, shape, tokens, jax_s, torch_s, compile_s, flop_per_token, peak):
  row = {
    "what": what,
    "shape": shape,
    "jax_tokens_per_s": tokens / jax_s,
    "torch_tokens_per_s": tokens / torch_s,
    "ratio": torch_s / jax_s,
    "jax_compile_s": compile_s,
    "peak_rss_mb": _peak_rss_mb(),
  }
  if flop_per_token:
    row["jax_gflops"] = flop_per_token * tokens / jax_s / 1e9
    row["torch_gflops"] = flop_per_token * tokens / torch_s / 1e9
    row["jax_fraction_of_peak"] = row["jax_gflops"] / peak["peak_gflops"]
    row["torch_fraction_of_peak"] = row["torch_gflops"] / peak["peak_gflops"]
    row["jax_fraction_of_square2048"] = row["jax_gflops"] / peak["jax_gflops_square2048"]
  return row


def _jax_train_step(b: Bench):
  import jax

  from albert_jax import optim
  from albert_jax.train import create_train_state, train_step

  tx = optim.adamw(1e-5)
  state = create_train_state(b.module, b.params, tx, b.head)
  step = jax.jit(train_step, donate_argnums=0)
  return state, step


def _torch_train_step(b: Bench, data):
  import torch

  model = b.torch_model.train()
  for m in model.modules():  # same numerics as JAX's run: no dropout
    if isinstance(m, torch.nn.Dropout):
      m.p = 0.0
  opt = torch.optim.AdamW(model.parameters(), lr=1e-5, eps=1e-6, weight_decay=0.01)
  ids = torch.as_tensor(data["input_ids"]).long()
  mask = torch.as_tensor(data["attention_mask"]).long()
  if b.head == "pretraining":
    labels = torch.full_like(ids, -100)
    rows = torch.arange(ids.shape[0])[:, None]
    labels[rows, torch.as_tensor(data["masked_lm_positions"]).long()] = torch.as_tensor(
      data["masked_lm_ids"]
    ).long()
    kwargs = {
      "labels": labels,
      "sentence_order_label": torch.as_tensor(data["sentence_order_label"]).long(),
    }
  else:
    kwargs = {"labels": torch.as_tensor(data["label"]).long()}

  def step():
    opt.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, attention_mask=mask, **kwargs).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()

  return step


def bench_train(
  size: str, head: str, batch: int, seq: int, reps: int, peak: dict, **options
) -> dict:
  import jax

  b = Bench(size, head, **options)
  data = _batch(batch, seq, b.config.vocab_size)
  if head != "pretraining":
    data = {k: data[k] for k in ("input_ids", "attention_mask", "token_type_ids", "label")}
  state, step = _jax_train_step(b)
  rng = jax.random.key(0)
  t0 = time.perf_counter()
  compiled = step.lower(state, data, rng).compile()
  compile_s = time.perf_counter() - t0
  holder = [state]

  def run_jax():
    holder[0], metrics = compiled(holder[0], data, rng)
    jax.block_until_ready(metrics)

  # one block each: alternating steps makes each framework re-fault the other's freed memory
  jax_s = _median_time(run_jax, reps)
  torch_s = _median_time(_torch_train_step(b, data), reps)
  return _row(
    f"train:{head}",
    f"{batch}x{seq}",
    batch * seq,
    jax_s,
    torch_s,
    compile_s,
    flop_per_token(b.config, seq, train=True),
    peak,
  )


def bench_compile(size: str, batch: int, seq: int, reps: int, remat: str) -> list[dict]:
  """The pretraining train step scanned (24 layers), unrolled (24) and scanned with 2 layers:
  compile time, and step time for the two full-depth variants."""
  import dataclasses

  import jax

  from albert_jax import AlbertConfig, optim
  from albert_jax.heads import abstract_params, create_module
  from albert_jax.train import create_train_state, train_step

  rows = []
  base = AlbertConfig.from_name(size)
  data = _batch(batch, seq, base.vocab_size)
  rng = jax.random.key(0)
  for layers, scan in ((base.num_hidden_layers, True), (base.num_hidden_layers, False), (2, True)):
    config = dataclasses.replace(base, num_hidden_layers=layers)
    module = create_module(config, "pretraining", scan_layers=scan, remat_policy=remat)
    params = jax.tree.map(
      lambda s: np.random.default_rng(0).normal(0, 0.02, s.shape).astype(s.dtype),
      abstract_params(module),
    )
    state = create_train_state(module, params, optim.adamw(1e-5), "pretraining")
    t0 = time.perf_counter()
    compiled = jax.jit(train_step).lower(state, data, rng).compile()
    row = {
      "what": "compile:train_step",
      "layers": layers,
      "scan": scan,
      "compile_s": time.perf_counter() - t0,
    }
    if layers == base.num_hidden_layers:
      row["step_s"] = _median_time(lambda: jax.block_until_ready(compiled(state, data, rng)), reps)
    rows.append(row)
  return rows


def bench_remat(size: str, batch: int, seq: int, reps: int) -> list[dict]:
  import jax

  rows = []
  for policy in (None, "dots_with_no_batch_dims_saveable", "nothing_saveable"):
    b = Bench(size, "pretraining", remat_policy=policy)
    data = _batch(batch, seq, b.config.vocab_size)
    state, step = _jax_train_step(b)
    compiled = step.lower(state, data, jax.random.key(0)).compile()
    mem = compiled.memory_analysis()
    holder = [state]

    def run():
      holder[0], m = compiled(holder[0], data, jax.random.key(0))
      jax.block_until_ready(m)

    rows.append(
      {
        "what": "remat",
        "policy": str(policy),
        "step_s": _median_time(run, reps),
        "temp_mb": getattr(mem, "temp_size_in_bytes", 0) / 2**20,
      }
    )
  return rows


def bench_dtype(size: str, batch: int, seq: int, reps: int) -> list[dict]:
  import jax
  import jax.numpy as jnp

  rows = []
  for dtype in (jnp.float32, jnp.bfloat16):
    b = Bench(size, "base", dtype=dtype)
    data = _batch(batch, seq, b.config.vocab_size)
    fwd = jax.jit(lambda p, ids, m, b=b: b.module.apply({"params": p}, ids, m).last_hidden_state)
    secs = _median_time(
      lambda b=b, fwd=fwd: fwd(
        b.params, data["input_ids"], data["attention_mask"]
      ).block_until_ready(),
      reps,
    )
    rows.append(
      {"what": "dtype:forward", "dtype": jnp.dtype(dtype).name, "tokens_per_s": batch * seq / secs}
    )
  return rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--size", default="albert-large-v2")
  p.add_argument("--reps", type=int, default=5)
  p.add_argument(
    "--only",
    default="all",
    help="comma list of: peak,forward,pretrain,finetune,compile,remat,dtype",
  )
  p.add_argument(
    "--remat",
    default=None,
    help="remat policy of the JAX train steps; default: the training CLIs' "
    "(albert_jax.model.TRAIN_REMAT_POLICY); 'none' for none",
  )
  p.add_argument("--json", default=None, help="also write the rows to this JSON file")
  args = p.parse_args(argv)
  import torch

  torch.set_num_threads(os.cpu_count() or 1)
  import jax

  from albert_jax import AlbertConfig
  from albert_jax.model import TRAIN_REMAT_POLICY

  remat = args.remat or TRAIN_REMAT_POLICY
  want = (
    set(args.only.split(","))
    if args.only != "all"
    else {"peak", "forward", "pretrain", "finetune", "compile", "remat", "dtype"}
  )
  print(
    f"# jax {jax.__version__} on {jax.devices()[0].platform} x{jax.device_count()}, "
    f"torch {torch.__version__} ({torch.get_num_threads()} threads), {args.size}"
  )
  rows: list[dict] = []
  peak = measure_matmul_peak(args.reps, AlbertConfig.from_name(args.size))
  rows.append({"what": "peak", **peak})
  if "forward" in want:
    rows += bench_forward(args.size, [(8, 128), (2, 512)], args.reps, peak)
  if "pretrain" in want:
    rows.append(bench_train(args.size, "pretraining", 8, 128, args.reps, peak, remat_policy=remat))
  if "finetune" in want:
    rows.append(
      bench_train(args.size, "sequence_classification", 8, 128, args.reps, peak, remat_policy=remat)
    )
  if "compile" in want:
    rows += bench_compile(args.size, 8, 128, args.reps, remat)
  if "remat" in want:
    rows += bench_remat(args.size, 8, 128, args.reps)
  if "dtype" in want:
    rows += bench_dtype(args.size, 8, 128, args.reps)
  for row in rows:
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
