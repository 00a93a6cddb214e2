"""albert_jax's pipelines beside transformers on the same model and inputs, CPU: text
classification (a few hundred sentences of mixed lengths) and question answering (question /
context pairs, some contexts long enough for 2+ windows).

  python benchmarks/bench_predict.py --size base         # albert-base-v2 dimensions
  python benchmarks/bench_predict.py --size small --n 300 --n_qa 200 --reps 3

Each model is a random-weight `AlbertFor{SequenceClassification,QuestionAnswering}` of the
given size, saved by transformers, converted (`python -m albert_jax.convert`) and exported
back (`python -m albert_jax.export`), so both sides run the same weights and tokenizer.

Timed, interleaved (A B C, A B C, ... so machine load hits each side alike), compile time
excluded by a warm-up call (its time is printed): albert_jax's pipeline (what `python -m
albert_jax.predict` runs: length-sorted batches at up to 8 bucket lengths, at most 32 rows and,
on CPU, 1024 padded positions a batch, two batches at once; for question answering, windows
packed several to a row or not, whichever its calibration timed faster on this machine, and
the same pipeline held to the other plan beside it) against
- text classification: transformers' `pipeline("text-classification")` with its default (one
  text at a time) and with `batch_size=32`;
- question answering: transformers 5 has no question-answering pipeline, so the baseline is
  what that pipeline did, written plainly: the fast tokenizer's windowing
  (`truncation="only_second"`, `return_overflowing_tokens`, `stride`, offsets),
  `AlbertForQuestionAnswering` on one window at a time (the old pipeline's default) or on
  batches of 32 windows padded to their longest, then the best span per question by
  p(start) p(end) over each window's context pieces.
PyTorch gets the process's cores (`torch.set_num_threads`) and passive OpenMP waiting (its
spinning threads otherwise fight XLA's thread pool in one process). Each figure is the median
of --reps calls over all inputs; the CPU model and load average are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from albert_jax.data.packing import PackedBatch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_finetune import machine  # noqa: E402

WORDS = (
  "the a film movie plot actor story scene great dull long short funny sad music camera light "
  "dark slow fast ending beginning character dialogue script director moment beautiful boring"
).split()
SIZES = {  # hidden, layers, heads, FFN
  "base": (768, 12, 12, 3072),  # albert-base-v2
  "small": (384, 6, 6, 1536),
}
MAX_SEQ_LEN, DOC_STRIDE, MAX_ANSWER_LEN = 384, 128, 15


def sentences(n: int, seed: int = 0) -> list[str]:
  rng = np.random.default_rng(seed)
  lengths = np.clip(rng.lognormal(2.7, 0.7, n).astype(int), 2, 200)  # 2..200 words
  return [" ".join(rng.choice(WORDS, k)) + "." for k in lengths]


def questions(n: int, seed: int = 1) -> list[dict]:
  """Questions of 4-12 words; contexts of 20-900 words (median ~130: a few need 2+ windows)."""
  rng = np.random.default_rng(seed)
  context_words = np.clip(rng.lognormal(4.9, 0.8, n).astype(int), 20, 900)
  return [
    {
      "question": " ".join(rng.choice(WORDS, rng.integers(4, 13))) + "?",
      "context": " ".join(rng.choice(WORDS, k)) + ".",
    }
    for k in context_words
  ]


def hf_windows(tokenizer, items: list[dict], **options):
  """HF's windows of the (question, context) pairs: the context cut to MAX_SEQ_LEN with a
  DOC_STRIDE overlap, as its question-answering pipeline does."""
  return tokenizer(
    [q["question"] for q in items],
    [q["context"] for q in items],
    truncation="only_second",
    max_length=MAX_SEQ_LEN,
    stride=DOC_STRIDE,
    return_overflowing_tokens=True,
    **options,
  )


def hf_question_answering(model, tokenizer, items: list[dict], batch_size: int) -> list[dict]:
  """The baseline: HF windowing, the model on `batch_size` windows at a time, best spans."""
  import torch

  enc = hf_windows(tokenizer, items, return_offsets_mapping=True, return_token_type_ids=True)
  windows = len(enc["input_ids"])
  best: list[tuple[float, int, int]] = [(-1.0, 0, 0)] * len(items)
  for start in range(0, windows, batch_size):
    rows = range(start, min(start + batch_size, windows))
    batch = tokenizer.pad(
      {k: [enc[k][i] for i in rows] for k in ("input_ids", "token_type_ids", "attention_mask")},
      return_tensors="pt",
    )
    with torch.no_grad():
      out = model(**batch)
    for j, i in enumerate(rows):
      context = np.array([s == 1 for s in enc.sequence_ids(i)])
      allowed = context.copy()
      allowed[0] = True  # [CLS] takes part in the softmax, as in HF's pipeline
      probs = []
      for logits in (out.start_logits[j, : len(context)], out.end_logits[j, : len(context)]):
        x = np.where(allowed, logits.numpy().astype(np.float64), -10000.0)
        e = np.exp(x - x.max())
        probs.append(e / e.sum())
      scores = np.triu(np.outer(probs[0] * context, probs[1] * context))
      scores = np.tril(scores, MAX_ANSWER_LEN - 1)
      s, e = np.unravel_index(scores.argmax(), scores.shape)
      q = enc["overflow_to_sample_mapping"][i]
      if scores[s, e] > best[q][0]:
        offsets = enc["offset_mapping"][i]
        best[q] = (float(scores[s, e]), offsets[s][0], offsets[e][1])
  return [
    {"score": p, "start": a, "end": b, "answer": item["context"][a:b]}
    for (p, a, b), item in zip(best, items, strict=True)
  ]


def interleaved(runs: dict, reps: int) -> dict[str, float]:
  """Median seconds of each run, the runs taking turns (A B C, A B C, ...)."""
  times = {name: [] for name in runs}
  for _ in range(reps):
    for name, fn in runs.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def per_token(ours, model, batch: int, length: int, reps: int) -> tuple[float, float]:
  """Tokens/s of one forward pass of each framework at the same shape [batch, length] (full
  rows), interleaved: the frameworks' own speed, without padding or batching choices."""
  import jax
  import torch

  ids = np.random.default_rng(0).integers(5, 1000, (batch, length)).astype(np.int32)
  ones, zeros = np.ones_like(ids), np.zeros_like(ids)
  params = ours.model.params
  jax.block_until_ready(ours.runner._run(params, ids, ones, zeros))  # compile
  pt = {k: torch.as_tensor(v).long() for k, v in (("input_ids", ids), ("attention_mask", ones))}
  with torch.no_grad():
    model(**pt)
    times = {"jax": [], "torch": []}
    for _ in range(reps):
      start = time.perf_counter()
      jax.block_until_ready(ours.runner._run(params, ids, ones, zeros))
      times["jax"].append(time.perf_counter() - start)
      start = time.perf_counter()
      model(**pt)
      times["torch"].append(time.perf_counter() - start)
  return tuple(batch * length / statistics.median(times[k]) for k in ("jax", "torch"))


def warm_up(ours, inputs) -> None:
  """albert_jax's first call, which compiles each batch shape once (not in the timed runs)."""
  start = time.perf_counter()
  ours(inputs)
  print(f"  albert_jax's first call, compilations included: {time.perf_counter() - start:.1f} s")


def record_plans(ours) -> list:
  """The plans `ours`'s runner chooses from now on (a list that fills as it plans)."""
  plans, plan = [], ours.runner.plan

  def recording(lengths, choices=1):
    plans.append(plan(lengths, choices))
    return plans[-1]

  ours.runner.plan = recording
  return plans


def report(title: str, count: int, unit: str, results: dict[str, float]) -> None:
  ours = results["albert_jax"]
  better = min(v for k, v in results.items() if k.startswith("transformers"))
  print(f"{title}: {count} {unit}")
  for name, seconds in results.items():
    print(
      f"  {name:<34} {seconds:8.2f} s  {count / seconds:8.2f} {unit}/s  "
      f"albert_jax speed-up x{seconds / ours:.2f}"
    )
  print(f"  albert_jax / the better transformers baseline: x{better / ours:.2f}")


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", choices=sorted(SIZES), default="base")
  parser.add_argument("--n", type=int, default=300, help="sentences (text classification)")
  parser.add_argument("--n_qa", type=int, default=200, help="question / context pairs")
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--batch", type=int, default=32, help="albert_jax's batch size")
  parser.add_argument(
    "--max_tokens", default="auto", help="albert_jax's padded positions a batch: N, none, auto"
  )
  parser.add_argument("--tasks", default="text-classification,question-answering")
  args = parser.parse_args()
  known = ("text-classification", "question-answering")
  if unknown := set(args.tasks.split(",")) - set(known):
    parser.error(f"--tasks: unknown {', '.join(sorted(unknown))}; use {','.join(known)}")

  max_tokens = {"auto": "auto", "none": None}.get(args.max_tokens.lower(), args.max_tokens)
  if isinstance(max_tokens, str) and max_tokens != "auto":
    if not max_tokens.isdigit():
      parser.error(f"--max_tokens={args.max_tokens!r}: give a number, none or auto")
    max_tokens = int(max_tokens)
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see the module docstring
  import torch
  import transformers

  from albert_jax import convert, export, pipeline

  torch.set_num_threads(len(os.sched_getaffinity(0)))
  hidden, layers, heads, ffn = SIZES[args.size]
  print(f"start: {machine()}")
  print(
    f"size {args.size}: hidden {hidden}, {layers} layers, FFN {ffn}; torch "
    f"{torch.__version__} ({torch.get_num_threads()} threads), transformers "
    f"{transformers.__version__}; median of {args.reps}, interleaved; albert_jax batch "
    f"{args.batch}, max_tokens {args.max_tokens}"
  )
  tasks = args.tasks.split(",")
  with tempfile.TemporaryDirectory() as tmp:
    for task, cls in (
      ("text-classification", transformers.AlbertForSequenceClassification),
      ("question-answering", transformers.AlbertForQuestionAnswering),
    ):
      if task not in tasks:
        continue
      root = Path(tmp) / task
      torch.manual_seed(0)
      config = transformers.AlbertConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        num_labels=2,
      )
      cls(config).eval().save_pretrained(root / "hf")
      convert.main(["c", "--model", str(root / "hf"), "--output", str(root / "ours")])
      export.main(["e", "--model", str(root / "ours"), "--output", str(root / "hfx")])
      ours = pipeline(task, model=str(root / "ours"), batch_size=args.batch, max_tokens=max_tokens)
      if task == "text-classification":
        texts = sentences(args.n)
        theirs = transformers.pipeline(task, model=str(root / "hfx"), device="cpu")
        warm_up(ours, texts)
        theirs(texts[:4])
        runs = {
          "albert_jax": lambda: ours(texts),
          "transformers pipeline (default)": lambda: theirs(texts),
          "transformers pipeline (batch_size=32)": lambda: theirs(texts, batch_size=32),
        }
        report(task, args.n, "sentences", interleaved(runs, args.reps))
        for length in (32, 128):
          j, t = per_token(ours, theirs.model, 32, length, max(args.reps, 2))
          print(
            f"  one forward pass at [32, {length}]: JAX {j:.0f}, PyTorch {t:.0f} tokens/s; "
            f"per-token JAX / PyTorch x{j / t:.2f}"
          )
      else:
        items = questions(args.n_qa)
        model = transformers.AlbertForQuestionAnswering.from_pretrained(root / "hfx").eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(root / "hfx")
        windows = len(hf_windows(tokenizer, items)["input_ids"])
        chosen = record_plans(ours)
        warm_up(ours, items)
        packed = isinstance(chosen[-1][0], PackedBatch)
        print(f"  the plan chosen: {'packed' if packed else 'bucketed'}")
        hf_question_answering(model, tokenizer, items[:4], 32)
        other = pipeline(
          task, model=ours.model, batch_size=args.batch, max_tokens=max_tokens, pack=not packed
        )
        if not packed:  # the packed plan, whatever its time
          other.runner._calibrates = lambda *_: False
          other.runner.cost = lambda plan: 0.0 if isinstance(plan[0], PackedBatch) else 1.0
        warm_up(other, items)
        runs = {
          "albert_jax": lambda: ours(items),
          f"albert_jax, the other plan ({'bucketed' if packed else 'packed'})": lambda: other(
            items
          ),
          "transformers model, 1 window a call": lambda: hf_question_answering(
            model, tokenizer, items, 1
          ),
          "transformers model, 32 windows a call": lambda: hf_question_answering(
            model, tokenizer, items, 32
          ),
        }
        report(f"{task} ({windows} windows)", args.n_qa, "questions", interleaved(runs, args.reps))
  print(f"end: {machine()}")


if __name__ == "__main__":
  main()
