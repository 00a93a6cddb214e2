"""The exported SavedModel (raw text in, label out) beside albert_jax's pipeline and HF
transformers' PyTorch model, CPU, text classification at albert-base-v2 dimensions.

  python benchmarks/bench_serve.py                 # albert-base-v2 dimensions
  python benchmarks/bench_serve.py --size small --calls 50

The model is a random-weight `AlbertForSequenceClassification` saved by transformers,
converted (`python -m albert_jax.convert`) and exported as a SavedModel (`python -m
albert_jax.export --format saved_model`) and back to HF (`--format hf`), so the three run the
same weights. Each side does the whole job, text to label: the SavedModel's
`serving_default` (tokenizer in the graph), `albert_jax.pipeline("text-classification")`,
and transformers' fast tokenizer + `AlbertForSequenceClassification` + softmax.

Latency: batch 1, one sentence per call (a pool of --pool sentences of 3-40 words, cycled),
p50 and p95 over --calls calls. Throughput: batch 32 (--pool32 batches of 32 sentences of
mixed lengths), sentences per second. Every shape a call can meet is compiled by a warm-up
pass first (XLA compiles per shape on both the TF and JAX side), then the three sides are
timed interleaved (A B C, A B C, ...) so machine load hits each alike. PyTorch gets the
process's cores and passive OpenMP waiting. The CPU model and load average are printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_finetune import machine  # noqa: E402
from bench_predict import SIZES, WORDS  # noqa: E402


def sentences(n: int, seed: int, low: int = 3, high: int = 40) -> list[str]:
  rng = np.random.default_rng(seed)
  return [" ".join(rng.choice(WORDS, rng.integers(low, high + 1))) + "." for _ in range(n)]


def percentiles(times: list[float]) -> str:
  ms = np.array(times) * 1e3
  return f"p50 {np.percentile(ms, 50):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", choices=sorted(SIZES), default="base")
  parser.add_argument("--calls", type=int, default=200, help="batch-1 calls timed per side")
  parser.add_argument("--pool", type=int, default=20, help="distinct batch-1 sentences")
  parser.add_argument("--pool32", type=int, default=5, help="distinct batch-32 batches")
  parser.add_argument("--reps32", type=int, default=3, help="passes over the batch-32 pool")
  args = parser.parse_args()
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
  import tensorflow as tf
  import tensorflow_text  # noqa: F401
  import torch
  import transformers

  from albert_jax import convert, export, pipeline

  torch.set_num_threads(len(os.sched_getaffinity(0)))
  hidden, layers, heads, ffn = SIZES[args.size]
  print(f"start: {machine()}")
  print(
    f"size {args.size}: hidden {hidden}, {layers} layers, FFN {ffn}; tensorflow "
    f"{tf.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
    f"transformers {transformers.__version__}"
  )
  with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp)
    torch.manual_seed(0)
    config = transformers.AlbertConfig(
      hidden_size=hidden,
      num_hidden_layers=layers,
      num_attention_heads=heads,
      intermediate_size=ffn,
      num_labels=2,
    )
    transformers.AlbertForSequenceClassification(config).eval().save_pretrained(root / "hf")
    convert.main(["c", "--model", str(root / "hf"), "--output", str(root / "ours")])
    export.main(["e", "--model", str(root / "ours"), "--output", str(root / "hfx")])
    t0 = time.perf_counter()
    export.main(
      ["e", "--model", str(root / "ours"), "--format", "saved_model", "--output", str(root / "sm")]
    )
    print(f"SavedModel export: {time.perf_counter() - t0:.1f} s")

    signature = tf.saved_model.load(str(root / "sm")).signatures["serving_default"]
    ours = pipeline("text-classification", model=str(root / "ours"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(root / "hfx")
    model = transformers.AlbertForSequenceClassification.from_pretrained(root / "hfx").eval()

    def torch_classify(texts):
      with torch.inference_mode():
        batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        probs = model(**batch).logits.softmax(-1)
      return probs.max(-1)

    sides = {
      "SavedModel (TF)": lambda texts: signature(text=tf.constant(texts))["label"].numpy(),
      "albert_jax pipeline": lambda texts: ours(texts),
      "transformers (PyTorch)": torch_classify,
    }
    singles = [[s] for s in sentences(args.pool, seed=0)]
    batches = [sentences(32, seed=1 + k) for k in range(args.pool32)]
    t0 = time.perf_counter()
    for call in sides.values():
      for texts in singles + batches:  # every shape the timed calls meet
        call(texts)
    print(f"warm-up (compiling every shape): {time.perf_counter() - t0:.1f} s")

    latency: dict[str, list[float]] = {name: [] for name in sides}
    for k in range(args.calls):
      for name, call in sides.items():
        t0 = time.perf_counter()
        call(singles[k % len(singles)])
        latency[name].append(time.perf_counter() - t0)
    throughput: dict[str, float] = dict.fromkeys(sides, 0.0)
    for _ in range(args.reps32):
      for texts in batches:
        for name, call in sides.items():
          t0 = time.perf_counter()
          call(texts)
          throughput[name] += time.perf_counter() - t0
    n32 = 32 * len(batches) * args.reps32
    print(f"\ntext classification, {args.calls} batch-1 calls, {n32} sentences at batch 32")
    print("| side | batch 1 latency | batch 32 sentences/s |")
    print("|---|---|---|")
    for name in sides:
      print(f"| {name} | {percentiles(latency[name])} | {n32 / throughput[name]:.0f} |")
    jax_p50 = np.percentile(latency["albert_jax pipeline"], 50)
    for name in ("SavedModel (TF)", "transformers (PyTorch)"):
      print(
        f"{name} batch-1 p50 / JAX pipeline's: x{np.percentile(latency[name], 50) / jax_p50:.2f}"
      )
  print(f"end: {machine()}")


if __name__ == "__main__":
  main()
