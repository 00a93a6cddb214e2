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
import os
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


def machine() -> str:
  """The CPU model (/proc/cpuinfo), the cores this process may use and the load average."""
  name = "unknown"
  try:
    for line in open("/proc/cpuinfo", encoding="utf-8"):
      if line.startswith("model name"):
        name = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
  return f"CPU {name}, {len(os.sched_getaffinity(0))} cores; load average {load}"


def timed(fn, batch) -> float:
  t0 = time.perf_counter()
  fn(batch)
  return time.perf_counter() - t0


class JaxSteps:
  """AdamW sequence-classification train steps (f32, jitted, the fine-tuning CLI's remat)."""

  def __init__(self, config):
    import jax
    import optax

    from albert_jax import train
    from albert_jax.heads import create_module, init_params
    from albert_jax.model import TRAIN_REMAT_POLICY

    module = create_module(
      config, "sequence_classification", num_labels=2, remat_policy=TRAIN_REMAT_POLICY
    )
    params = init_params(module, jax.random.key(0))
    self.state = train.create_train_state(
      module, params, optax.adamw(1e-5), "sequence_classification"
    )
    self.step = jax.jit(train.train_step, donate_argnums=(0,))
    self.rng = jax.random.key(1)

  def __call__(self, batch: dict) -> None:
    import jax

    self.state, metrics = self.step(self.state, batch, self.rng)
    jax.block_until_ready((self.state, metrics))


class TorchSteps:
  """HF transformers' PyTorch AlbertForSequenceClassification, AdamW train steps (eager, f32,
  no anomaly detection, the default attention implementation)."""

  def __init__(self, config):
    import torch
    import transformers

    torch.manual_seed(0)
    hf = transformers.AlbertConfig(**{**config.to_dict(), "num_labels": 2})
    self.model = transformers.AlbertForSequenceClassification(hf).train()
    self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-5)
    self.torch = torch

  def __call__(self, batch: dict) -> None:
    t = self.torch
    out = self.model(
      input_ids=t.as_tensor(batch["input_ids"]).long(),
      attention_mask=t.as_tensor(batch["attention_mask"]),
      token_type_ids=t.as_tensor(batch["token_type_ids"]).long(),
      labels=t.as_tensor(batch["label"]).long(),
    )
    out.loss.backward()
    self.opt.step()
    self.opt.zero_grad()


def dynamic(arrays: dict, rows: np.ndarray, lengths: np.ndarray) -> dict:
  """HF's DataCollatorWithPadding: `rows` padded to their longest row."""
  n = int(lengths[rows].max())
  return {k: v[rows][..., :n] if v.ndim > 1 else v[rows] for k, v in arrays.items()}


def full_rows(arrays: dict, batch: int, length: int, keys) -> dict:
  """`batch` rows of exactly `length` real tokens: the fixed shape both frameworks run."""
  from albert_jax.data import batching

  rows = {**arrays, "attention_mask": np.ones_like(arrays["attention_mask"])}
  rows["input_ids"] = arrays["input_ids"] % 1000 + 5
  return batching.take(rows, batching.Batch(np.arange(batch), length, np.ones(batch)), keys)


def run_distribution(args, config, lengths: np.ndarray, jax_steps, torch_steps) -> dict:
  """Bucketed steps (and, with torch, HF dynamic padding on the same rows) interleaved ABAB;
  the per-token speed of both frameworks at the same fixed shapes, interleaved; then a few
  steps padded to max_seq_length."""
  from albert_jax.data import batching

  arrays = arrays_for(lengths, args.max_seq_length, config.vocab_size)
  keys = ("input_ids", "attention_mask", "token_type_ids", "label")
  buckets = batching.choose_buckets(lengths, args.max_buckets, 8, args.max_seq_length)
  plan = batching.epoch_plan(lengths, args.batch, seed=0, epoch=0, buckets=buckets)
  timed_plan = plan[: args.steps]
  used = sorted({b.length for b in timed_plan})
  t0 = time.perf_counter()
  for length in used:  # compile the shapes the timed steps use, once each
    jax_steps(batching.take(arrays, next(b for b in plan if b.length == length), keys))
  compile_s = time.perf_counter() - t0
  order = np.random.default_rng(0).permutation(len(lengths))
  random_rows = [order[i * args.batch : (i + 1) * args.batch] for i in range(args.steps)]
  if torch_steps:  # warm-up: the longest batch of each kind
    torch_steps(dynamic(arrays, max(random_rows, key=lambda r: lengths[r].max()), lengths))
  t = {"bucket": [], "grouped": [], "random": []}
  computed = {"bucket": 0, "grouped": 0, "random": 0}
  for b, rows in zip(timed_plan, random_rows, strict=True):  # A B A B ...
    t["bucket"].append(timed(jax_steps, batching.take(arrays, b, keys)))
    computed["bucket"] += b.length * len(b.indices)
    if torch_steps:
      real = b.indices[b.weights > 0]  # the same rows, each batch padded to its longest
      grouped = dynamic(arrays, real, lengths)
      t["grouped"].append(timed(torch_steps, grouped))
      computed["grouped"] += grouped["input_ids"].size
      rand = dynamic(arrays, rows, lengths)  # HF's default: random batches, dynamic padding
      t["random"].append(timed(torch_steps, rand))
      computed["random"] += rand["input_ids"].size
  real_rows = sum(float(b.weights.sum()) for b in timed_plan)
  bucket_rows = np.concatenate([b.indices[b.weights > 0] for b in timed_plan])
  real_tokens = {
    "bucket": int(lengths[bucket_rows].sum()),
    "grouped": int(lengths[bucket_rows].sum()),
    "random": int(lengths[np.concatenate(random_rows)].sum()),
  }
  result = {
    "buckets": buckets,
    "epoch_shapes": len({b.length for b in plan}),
    "padding_fraction": batching.padding_fraction(plan, lengths),
    "compile_s": compile_s,
    "used": used,
    "examples_per_s": {
      "bucket": real_rows / sum(t["bucket"]),
      "grouped": real_rows / sum(t["grouped"]) if t["grouped"] else None,
      "random": args.batch * args.steps / sum(t["random"]) if t["random"] else None,
    },
    "padding": {k: 1 - real_tokens[k] / computed[k] for k in computed if computed[k]},
  }
  if torch_steps:  # per-token speed at the same shapes: the two most used bucket lengths
    shapes = sorted(used, key=lambda n: -sum(b.length == n for b in timed_plan))[:2]
    per_shape = {}
    for length in sorted(shapes):
      batch = full_rows(arrays, args.batch, length, keys)
      torch_steps(batch)  # warm-up at this shape
      pair = {"jax": [], "torch": []}
      for _ in range(args.shape_reps):  # A B A B
        pair["jax"].append(timed(jax_steps, batch))
        pair["torch"].append(timed(torch_steps, batch))
      tokens = args.batch * length
      per_shape[length] = {k: tokens / statistics.median(v) for k, v in pair.items()}
    result["per_shape"] = per_shape
  full = batching.Batch(plan[0].indices, args.max_seq_length, plan[0].weights)
  padded = batching.take(arrays, full, keys)
  jax_steps(padded)  # compile
  padded_times = [timed(jax_steps, padded) for _ in range(args.padded_steps)]
  result["padded_examples_per_s"] = args.batch / statistics.median(padded_times)
  return result


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
  parser.add_argument("--shape_reps", type=int, default=2, help="per-token pairs at each shape")
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

  print(f"start: {machine()}")
  print(
    f"model: hidden {args.hidden}, {args.layers} layers, {args.heads} heads, FFN "
    f"{args.intermediate}, embeddings {args.embedding}; f32, batch {args.batch}, "
    f"{jax.devices()[0].platform}; {args.steps} bucketed steps, {args.padded_steps} steps "
    f"padded to {args.max_seq_length}"
  )
  jax_steps = JaxSteps(config)
  torch_steps = None
  if args.torch:
    # PyTorch's OpenMP threads busy-wait between ops by default; in a process whose XLA thread
    # pool also holds the cores they spin against each other (on 2 busy cores PyTorch's steps
    # took 20-40x longer after a JAX step than alone). Passive waiting removes that artefact.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))  # the cores XLA's thread pool uses
    torch_steps = TorchSteps(config)
    print(
      f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
      f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    )
  for name in [args.only] if args.only else sorted(DISTRIBUTIONS):
    lengths = synthetic_lengths(name, args.examples)
    r = run_distribution(args, config, lengths, jax_steps, torch_steps)
    eps = r["examples_per_s"]
    print(
      f"{name}: mean length {lengths.mean():.1f}; buckets {list(r['buckets'])}; "
      f"{r['epoch_shapes']} shapes in the epoch plan; padding fraction "
      f"{r['padding_fraction']:.1%} (max_length {args.max_seq_length}: "
      f"{1 - lengths.mean() / args.max_seq_length:.1%}); packing could gain at most "
      f"{1 / (1 - r['padding_fraction']):.2f}x over buckets (computed / real tokens)"
    )
    print(
      f"  examples/s: buckets {eps['bucket']:.2f}, padded to {args.max_seq_length} "
      f"{r['padded_examples_per_s']:.3f}; ratio {eps['bucket'] / r['padded_examples_per_s']:.1f}x "
      f"(timed steps at lengths {r['used']}, compiled in {r['compile_s']:.0f} s)"
    )
    if torch_steps:
      per = r["per_shape"]
      ratios = [v["jax"] / v["torch"] for v in per.values()]
      token_ratio = statistics.geometric_mean(ratios)
      shapes = ", ".join(
        f"[{args.batch}, {n}]: JAX {v['jax']:.0f}, PyTorch {v['torch']:.0f} tokens/s"
        for n, v in per.items()
      )
      print(f"  same shapes (full rows): {shapes}; per-token JAX / PyTorch {token_ratio:.2f}x")
      for kind, label in (("grouped", "length-grouped"), ("random", "random")):
        ratio = eps["bucket"] / eps[kind]
        print(
          f"  HF PyTorch, dynamic padding, {label} batches: {eps[kind]:.2f} examples/s "
          f"(padding {r['padding'][kind]:.1%}; buckets {r['padding']['bucket']:.1%}); "
          f"buckets / PyTorch {ratio:.2f}x = per-token ratio x {ratio / token_ratio:.2f}"
        )
  print(f"end: {machine()}")


if __name__ == "__main__":
  main()
