"""`albert_jax.pipeline("text-classification")` beside transformers' pipeline on the same model,
CPU, a few hundred sentences of mixed lengths.

  python benchmarks/bench_predict.py                      # albert-base-v2 shape, random weights
  python benchmarks/bench_predict.py --n 300 --reps 3 --hidden 768 --layers 12

The model is a random-weight `AlbertForSequenceClassification` of the given size, saved by
transformers, converted (`python -m albert_jax.convert`) and exported back
(`python -m albert_jax.export`), so both pipelines run the same weights and tokenizer. Timed:
albert_jax (length-sorted batches of 32 at a few bucket lengths; compile time excluded by a
warm-up call), transformers' pipeline with its default (one text at a time) and with
batch_size=32. Each figure is the median of --reps calls over all sentences; the CPU model and
the ratios are printed.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

WORDS = (
  "the a film movie plot actor story scene great dull long short funny sad music camera light "
  "dark slow fast ending beginning character dialogue script director moment beautiful boring"
).split()


def sentences(n: int, seed: int = 0) -> list[str]:
  rng = np.random.default_rng(seed)
  lengths = np.clip(rng.lognormal(2.7, 0.7, n).astype(int), 2, 200)  # 2..200 words
  return [" ".join(rng.choice(WORDS, k)) + "." for k in lengths]


def cpu_model() -> str:
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def median_seconds(fn, reps: int) -> float:
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--n", type=int, default=300)
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--hidden", type=int, default=768)
  parser.add_argument("--layers", type=int, default=12)
  args = parser.parse_args()

  import torch
  import transformers

  from albert_jax import convert, export, pipeline

  texts = sentences(args.n)
  with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp)
    torch.manual_seed(0)
    config = transformers.AlbertConfig(
      hidden_size=args.hidden,
      num_hidden_layers=args.layers,
      num_attention_heads=max(1, args.hidden // 64),
      intermediate_size=4 * args.hidden,
      num_labels=2,
    )
    transformers.AlbertForSequenceClassification(config).eval().save_pretrained(root / "hf")
    convert.main(["c", "--source", str(root / "hf"), "--output", str(root / "ours")])
    export.main(["e", "--checkpoint", str(root / "ours"), "--output", str(root / "hfx")])

    ours = pipeline("text-classification", model=str(root / "ours"), batch_size=32)
    ours(texts)  # compiles each bucket once
    theirs = transformers.pipeline("text-classification", model=str(root / "hfx"), device="cpu")
    theirs(texts[:4])
    results = {
      "albert_jax (batch 32, buckets)": median_seconds(lambda: ours(texts), args.reps),
      "transformers (default)": median_seconds(lambda: theirs(texts), args.reps),
      "transformers (batch_size=32)": median_seconds(
        lambda: theirs(texts, batch_size=32), args.reps
      ),
    }
  mine = results["albert_jax (batch 32, buckets)"]
  print(f"CPU: {cpu_model()}; torch threads {torch.get_num_threads()}")
  print(f"{args.n} sentences, hidden {args.hidden}, {args.layers} layers, median of {args.reps}")
  for name, seconds in results.items():
    print(
      f"  {name:<32} {seconds:8.2f} s  {args.n / seconds:8.1f} sentences/s  "
      f"albert_jax speed-up x{seconds / mine:.2f}"
    )


if __name__ == "__main__":
  main()
