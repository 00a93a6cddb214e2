"""Fine-tuning throughput with length buckets vs padding every row to max_seq_length.

  python benchmarks/bench_finetune.py                       # albert-base-v2 dimensions
  python benchmarks/bench_finetune.py --hidden 256 --layers 4 --heads 4 --intermediate 1024 \
      --embedding 128 --batch 16 --steps 6 --padded_steps 2 --torch

Two synthetic length distributions (token counts per example, [CLS] and [SEP] included),
drawn from a log-normal: "sst2" (mean ~25, single sentences) and "mnli" (mean ~40, pairs).
For each, AdamW sequence-classification train steps (f32, jitted, the fine-tuning CLI's
remat policy) on batches from `albert_jax.data.batching` (an epoch plan at <= `--max_buckets`
lengths) and on the same number of rows padded to `--max_seq_length`; prints examples/s of
both, their ratio, the buckets' padding fraction and the number of compiled shapes. With
`--torch`, HF transformers' PyTorch AlbertForSequenceClassification trains on the same
examples in random batches padded to each batch's longest row (dynamic padding, HF's
DataCollatorWithPadding), and the per-token ratio compares computed positions per second of
the two frameworks. Step times are medians after every shape has been compiled (compile time
is printed apart); examples/s counts real examples (filler rows excluded).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

DISTRIBUTIONS = {"sst2": (25.0, 0.55, 4, 66), "mnli": (40.0, 0.5, 8, 200)}  # mean, sigma, lo, hi


def synthetic_lengths(name: str, n: int, seed: int = 0) -> np.ndarray:
  """`n` lengths from a log-normal with the named distribution's mean, clipped to [lo, hi]."""
  mean, sigma, lo, hi = DISTRIBUTIONS[name]
  mu = np.log(mean) - sigma**2 / 2  # E[exp(N(mu, sigma))] = mean
  rng = np.random.default_rng(seed)
  return np.clip(np.round(rng.lognormal(mu, sigma, n)), lo, hi).astype(np.int64)


def arrays_for(lengths: np.ndarray, max_len: int, vocab: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  mask = (np.arange(max_len)[None, :] < lengths[:, None]).astype(np.int32)
  return {
    "input_ids": rng.integers(5, vocab, size=mask.shape).astype(np.int32) * mask,
    "attention_mask": mask,
    "token_type_ids": np.zeros_like(mask),
    "label": rng.integers(0, 2, size=len(lengths)).astype(np.int32),
  }


def _timed(fn, batches) -> list[float]:
  times = []
  for batch in batches:
    t0 = time.perf_counter()
    fn(batch)
    times.append(time.perf_counter() - t0)
  return times


def jax_runs(args, config, lengths: np.ndarray) -> dict:
  import jax
  import optax

  from albert_jax import train
  from albert_jax.data import batching
  from albert_jax.heads import create_module, init_params
  from albert_jax.model import TRAIN_REMAT_POLICY

  module = create_module(
    config, "sequence_classification", num_labels=2, remat_policy=TRAIN_REMAT_POLICY
  )
  params = init_params(module, jax.random.key(0))
  state = train.create_train_state(module, params, optax.adamw(1e-5), "sequence_classification")
  step = jax.jit(train.train_step, donate_argnums=(0,))
  rng = jax.random.key(1)
  arrays = arrays_for(lengths, args.max_seq_length, config.vocab_size)
  keys = ("input_ids", "attention_mask", "token_type_ids", "label")
  holder = {"state": state}

  def run(batch):
    holder["state"], metrics = step(holder["state"], batch, rng)
    jax.block_until_ready(metrics["loss"])

  buckets = batching.choose_buckets(lengths, args.max_buckets, 8, args.max_seq_length)
  plan = batching.epoch_plan(lengths, args.batch, seed=0, epoch=0, buckets=buckets)
  shapes = sorted({b.length for b in plan})
  t0 = time.perf_counter()
  for length in shapes:  # compile every shape the plan uses once
    run(batching.take(arrays, next(b for b in plan if b.length == length), keys))
  compile_s = time.perf_counter() - t0
  timed = plan[: args.steps]
  times = _timed(run, [batching.take(arrays, b, keys) for b in timed])
  real = sum(float(b.weights.sum()) for b in timed)
  computed = sum(b.length * len(b.indices) for b in timed)
  bucket_eps = real / sum(times)

  full = batching.Batch(plan[0].indices, args.max_seq_length, plan[0].weights)
  padded = batching.take(arrays, full, keys)
  run(padded)  # compile
  padded_times = _timed(run, [padded] * args.padded_steps)
  padded_eps = args.batch / statistics.median(padded_times)
  return {
    "buckets": buckets,
    "compiled_shapes": len(shapes),
    "padding_fraction": batching.padding_fraction(plan, lengths),
    "bucket_examples_per_s": bucket_eps,
    "padded_examples_per_s": padded_eps,
    "bucket_tokens_per_s": computed / sum(times),
    "compile_s": compile_s,
    "plan": timed,
  }


def torch_run(args, config, lengths: np.ndarray) -> dict:
  """HF PyTorch with dynamic padding: random batches, each padded to its longest row."""
  import torch
  import transformers

  torch.manual_seed(0)
  hf = transformers.AlbertConfig(**{**config.to_dict(), "num_labels": 2})
  model = transformers.AlbertForSequenceClassification(hf).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
  arrays = arrays_for(lengths, args.max_seq_length, config.vocab_size)
  order = np.random.default_rng(0).permutation(len(lengths))
  batches = []
  for start in range(0, args.batch * (args.steps + 1), args.batch):
    rows = order[start : start + args.batch]
    n = int(lengths[rows].max())
    batches.append(
      {k: torch.as_tensor(v[rows][..., :n] if v.ndim > 1 else v[rows]) for k, v in arrays.items()}
    )

  def run(batch):
    out = model(
      input_ids=batch["input_ids"].long(),
      attention_mask=batch["attention_mask"],
      token_type_ids=batch["token_type_ids"].long(),
      labels=batch["label"].long(),
    )
    out.loss.backward()
    opt.step()
    opt.zero_grad()

  run(batches[0])  # warm-up
  times = _timed(run, batches[1:])
  computed = sum(int(b["input_ids"].numel()) for b in batches[1:])
  return {
    "examples_per_s": args.batch * len(times) / sum(times),
    "tokens_per_s": computed / sum(times),
    "padding_fraction": 1 - sum(int(b["attention_mask"].sum()) for b in batches[1:]) / computed,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--hidden", type=int, default=768)
  parser.add_argument("--layers", type=int, default=12)
  parser.add_argument("--heads", type=int, default=12)
  parser.add_argument("--intermediate", type=int, default=3072)
  parser.add_argument("--embedding", type=int, default=128)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--examples", type=int, default=4096, help="lengths drawn per distribution")
  parser.add_argument("--steps", type=int, default=20, help="timed bucketed steps")
  parser.add_argument("--padded_steps", type=int, default=3, help="timed steps at max length")
  parser.add_argument("--max_seq_length", type=int, default=512)
  parser.add_argument("--max_buckets", type=int, default=8)
  parser.add_argument("--only", choices=sorted(DISTRIBUTIONS), default=None)
  parser.add_argument("--torch", action="store_true", help="also HF PyTorch, dynamic padding")
  args = parser.parse_args()

  from albert_jax.config import AlbertConfig

  config = AlbertConfig.from_name(
    "albert-base-v2",
    hidden_size=args.hidden,
    num_hidden_layers=args.layers,
    num_attention_heads=args.heads,
    intermediate_size=args.intermediate,
    embedding_size=args.embedding,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
  )
  import jax

  print(
    f"model: hidden {args.hidden}, {args.layers} layers, {args.heads} heads, FFN "
    f"{args.intermediate}, embeddings {args.embedding}; f32, batch {args.batch}, "
    f"{jax.devices()[0].platform}"
  )
  for name in [args.only] if args.only else sorted(DISTRIBUTIONS):
    lengths = synthetic_lengths(name, args.examples)
    r = jax_runs(args, config, lengths)
    ratio = r["bucket_examples_per_s"] / r["padded_examples_per_s"]
    print(
      f"{name}: mean length {lengths.mean():.1f}; buckets {list(r['buckets'])}; "
      f"compiled shapes {r['compiled_shapes']}; padding fraction {r['padding_fraction']:.1%} "
      f"(max_length {args.max_seq_length}: {1 - lengths.mean() / args.max_seq_length:.1%})"
    )
    print(
      f"  examples/s: buckets {r['bucket_examples_per_s']:.1f}, padded to "
      f"{args.max_seq_length} {r['padded_examples_per_s']:.2f}; ratio {ratio:.1f}x "
      f"(compiling {r['compiled_shapes']} shapes: {r['compile_s']:.0f} s)"
    )
    if args.torch:
      t = torch_run(args, config, lengths)
      print(
        f"  HF PyTorch, dynamic padding: {t['examples_per_s']:.1f} examples/s (padding "
        f"{t['padding_fraction']:.1%}); buckets / PyTorch examples/s "
        f"{r['bucket_examples_per_s'] / t['examples_per_s']:.2f}x; per computed token "
        f"JAX / PyTorch {r['bucket_tokens_per_s'] / t['tokens_per_s']:.2f}x"
      )


if __name__ == "__main__":
  main()
