"""The exported SavedModel (raw text in, answer out) beside albert_jax's pipeline and HF
transformers' PyTorch model, CPU, text classification and question answering at albert-base-v2
dimensions.

  python benchmarks/bench_serve.py                 # albert-base-v2 dimensions, both tasks
  python benchmarks/bench_serve.py --size small --calls 50 --tasks question-answering

Each task's model is a random-weight `AlbertForSequenceClassification` /
`AlbertForQuestionAnswering` saved by transformers, converted (`python -m albert_jax.convert`)
and exported as a SavedModel (`python -m albert_jax.export --format saved_model`) and back to
HF (`--format hf`), so the three run the same weights. Each side does the whole job, text to
answer: the SavedModel's `serving_default` (tokenizer and, for QA, the span search in the
graph), `albert_jax.pipeline(task)`, and transformers' fast tokenizer + the PyTorch model +
softmax (QA: the best span of at most 15 context pieces by p(start) p(end), its characters
from the tokenizer's offsets; no word alignment).

Latency: batch 1, one input per call (a pool of --pool sentences of 3-40 words, cycled; QA:
a question of 4-10 words on a context of 20-120 words, one window), p50 and p95 over --calls
calls. Throughput: batch 32 (--pool32 batches of 32 inputs of mixed lengths), inputs per
second. Every shape a call can meet is compiled by a warm-up pass first (XLA compiles per shape
on both the TF and JAX side), then the three sides are timed interleaved (A B C, A B C, ...) so
machine load hits each alike. PyTorch gets the process's cores and passive OpenMP waiting. The
CPU model and load average are printed.
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


TASKS = ("text-classification", "question-answering")


def inputs(task: str, n: int, seed: int) -> list:
  """n inputs of `task` (sentences, or (question, context) pairs)."""
  if task == "text-classification":
    return sentences(n, seed)
  return list(zip(sentences(n, seed, 4, 10), sentences(n, seed + 1000, 20, 120), strict=True))


def models(task: str, root: Path, config, tf, torch, transformers):
  """(SavedModel signature, albert_jax pipeline, transformers' tokenizer and model) for `task`,
  all on one random-weight model."""
  from albert_jax import convert, export, pipeline

  hf_class = {
    "text-classification": transformers.AlbertForSequenceClassification,
    "question-answering": transformers.AlbertForQuestionAnswering,
  }[task]
  torch.manual_seed(0)
  hf_class(config).eval().save_pretrained(root / "hf")
  convert.main(["c", "--model", str(root / "hf"), "--output", str(root / "ours")])
  export.main(["e", "--model", str(root / "ours"), "--output", str(root / "hfx")])
  t0 = time.perf_counter()
  export.main(
    ["e", "--model", str(root / "ours"), "--format", "saved_model", "--output", str(root / "sm")]
  )
  print(f"{task} SavedModel export: {time.perf_counter() - t0:.1f} s")
  signature = tf.saved_model.load(str(root / "sm")).signatures["serving_default"]
  ours = pipeline(task, model=str(root / "ours"))
  tokenizer = transformers.AutoTokenizer.from_pretrained(root / "hfx")
  return signature, ours, tokenizer, hf_class.from_pretrained(root / "hfx").eval()


def sides(task: str, signature, ours, tokenizer, model, tf, torch) -> dict:
  """{side: call(batch of inputs)}, each doing the whole job."""
  if task == "text-classification":

    def torch_classify(texts):
      with torch.inference_mode():
        batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        probs = model(**batch).logits.softmax(-1)
      return probs.max(-1)

    return {
      "SavedModel (TF)": lambda texts: signature(text=tf.constant(texts))["label"].numpy(),
      "albert_jax pipeline": lambda texts: ours(texts),
      "transformers (PyTorch)": torch_classify,
    }

  def torch_answer(pairs):
    questions, contexts = [q for q, _ in pairs], [c for _, c in pairs]
    with torch.inference_mode():
      batch = tokenizer(
        questions,
        contexts,
        padding=True,
        truncation="only_second",
        max_length=384,
        return_offsets_mapping=True,
        return_token_type_ids=True,
        return_tensors="pt",
      )
      offsets = batch.pop("offset_mapping")
      out = model(**batch)
      context = torch.tensor([[i == 1 for i in batch.sequence_ids(b)] for b in range(len(pairs))])
      masked = lambda x: x.masked_fill(~context, -10000.0).softmax(-1)  # noqa: E731
      score = masked(out.start_logits)[:, :, None] * masked(out.end_logits)[:, None, :]
      n = score.shape[1]
      band = torch.ones(n, n, dtype=torch.bool).triu() & ~torch.ones(n, n, dtype=torch.bool).triu(
        15
      )
      best = score.masked_fill(~band, 0).flatten(1).argmax(-1)
      start, end = best // n, best % n
    rows = range(len(pairs))
    return [contexts[b][offsets[b, start[b], 0] : offsets[b, end[b], 1]] for b in rows]

  return {
    "SavedModel (TF)": lambda pairs: signature(
      question=tf.constant([q for q, _ in pairs]), context=tf.constant([c for _, c in pairs])
    )["answer"].numpy(),
    "albert_jax pipeline": lambda pairs: ours([{"question": q, "context": c} for q, c in pairs]),
    "transformers (PyTorch)": torch_answer,
  }


def timed(task: str, calls: dict, args) -> None:
  """Warms every shape up, then times the sides interleaved; prints the task's table."""
  singles = [[x] for x in inputs(task, args.pool, seed=0)]
  batches = [inputs(task, 32, seed=1 + k) for k in range(args.pool32)]
  t0 = time.perf_counter()
  for call in calls.values():
    for batch in singles + batches:  # every shape the timed calls meet
      call(batch)
  print(f"warm-up (compiling every shape): {time.perf_counter() - t0:.1f} s")
  latency: dict[str, list[float]] = {name: [] for name in calls}
  for k in range(args.calls):
    for name, call in calls.items():
      t0 = time.perf_counter()
      call(singles[k % len(singles)])
      latency[name].append(time.perf_counter() - t0)
  throughput: dict[str, float] = dict.fromkeys(calls, 0.0)
  for _ in range(args.reps32):
    for batch in batches:
      for name, call in calls.items():
        t0 = time.perf_counter()
        call(batch)
        throughput[name] += time.perf_counter() - t0
  n32 = 32 * len(batches) * args.reps32
  print(f"\n{task}, {args.calls} batch-1 calls, {n32} inputs at batch 32")
  print("| side | batch 1 latency | batch 32 inputs/s |")
  print("|---|---|---|")
  for name in calls:
    print(f"| {name} | {percentiles(latency[name])} | {n32 / throughput[name]:.0f} |")
  jax_p50 = np.percentile(latency["albert_jax pipeline"], 50)
  for name in ("SavedModel (TF)", "transformers (PyTorch)"):
    print(f"{name} batch-1 p50 / JAX pipeline's: x{np.percentile(latency[name], 50) / jax_p50:.2f}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", choices=sorted(SIZES), default="base")
  parser.add_argument(
    "--tasks", default=",".join(TASKS), help="comma-separated: " + ", ".join(TASKS)
  )
  parser.add_argument("--calls", type=int, default=200, help="batch-1 calls timed per side")
  parser.add_argument("--pool", type=int, default=20, help="distinct batch-1 inputs")
  parser.add_argument("--pool32", type=int, default=5, help="distinct batch-32 batches")
  parser.add_argument("--reps32", type=int, default=3, help="passes over the batch-32 pool")
  args = parser.parse_args()
  tasks = args.tasks.split(",")
  if not set(tasks) <= set(TASKS):
    parser.error(f"--tasks={args.tasks}: give some of {', '.join(TASKS)}")
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
  import tensorflow as tf
  import tensorflow_text  # noqa: F401
  import torch
  import transformers

  torch.set_num_threads(len(os.sched_getaffinity(0)))
  hidden, layers, heads, ffn = SIZES[args.size]
  print(f"start: {machine()}")
  print(
    f"size {args.size}: hidden {hidden}, {layers} layers, FFN {ffn}; tensorflow "
    f"{tf.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
    f"transformers {transformers.__version__}"
  )
  config = transformers.AlbertConfig(
    hidden_size=hidden,
    num_hidden_layers=layers,
    num_attention_heads=heads,
    intermediate_size=ffn,
    num_labels=2,
  )
  for task in tasks:
    with tempfile.TemporaryDirectory() as tmp:
      loaded = models(task, Path(tmp), config, tf, torch, transformers)
      timed(task, sides(task, *loaded, tf, torch), args)
  print(f"end: {machine()}")


if __name__ == "__main__":
  main()
