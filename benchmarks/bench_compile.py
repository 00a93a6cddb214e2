"""Compile once: runs and first calls with an empty (cold) and a filled (warm) compilation cache.

  python benchmarks/bench_compile.py                          # everything, base-size predict
  python benchmarks/bench_compile.py --only demo,longtail
  python benchmarks/bench_compile.py --only predict --size small --n_qa 40

Each case is a fresh `python` process, as a user runs it, with its own cache directory
(`ALBERT_JAX_CACHE`; `JAX_COMPILATION_CACHE_DIR` unset): "cold" is its first run on an empty
directory, "warm" the same command again. Timed from the process's start (imports included):
- demo: the README's `python -m albert_jax.finetune --config=configs/finetune/sst2_sample.py`
  (150 steps): the first optimizer step's latency and the whole run;
- longtail: a 60-step fine-tuning run of the sample's model (from scratch) on a long-tailed
  file (70% rows of 3-15 words, 20% of 16-119, 10% of 120-380; max_seq_length 256, batch 32),
  with the length buckets chosen for the run (`bucket_cost_steps`), with all 8
  (`bucket_cost_steps=0`, the choice before it) and with every row padded to 256
  (`batching=max_length`), each cold and then warm (the warm run compiles nothing: padded cold
  over it is the most any saving in compiling can give the cold run);
- predict: the pipeline's first call and the second (steady state) on the same inputs, text
  classification (--n sentences) and question answering (--n_qa questions, contexts up to 900
  words) on random-weight models of --size, built as benchmarks/bench_predict.py builds them.
The fine-tuning runs hide torch (`--torch` lets them see it), as the package's own install
(`pip install -e .`, the README's demo) has none: the test extras install it, and tensorboardX
(the runs' TensorBoard writer) imports it when it is there, several seconds of every run that
no cache can save.
Prints one line per case and a table (markdown) at the end, with the CPU model and the load
average before and after: on a machine shared with other jobs, compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_finetune import machine  # noqa: E402
from bench_predict import SIZES, WORDS, questions, sentences  # noqa: E402

# Runs the finetune command, noting when its first optimizer step is done.
FINETUNE = """
import json, os, sys, time
if os.environ.get("BENCH_NO_TORCH"):  # as the package's own install: no torch
  sys.modules["torch"] = None
from albert_jax.trainer import loop
advance, first = loop.Reporter.advance, []
def timed(self, steps=1):
  advance(self, steps)
  if not first:
    first.append(time.time() - float(os.environ["BENCH_T0"]))
loop.Reporter.advance = timed
from albert_jax import cli, finetune
try:
  cli.run(finetune.main, finetune.FLAGS)
finally:
  json.dump({"first_step": first[0] if first else None}, open(os.environ["BENCH_OUT"], "w"))
"""
# A pipeline's first and second call on the same inputs.
PREDICT = """
import json, os, sys, time
from albert_jax import pipeline
task, model, inputs = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
run = pipeline(task, model=model)
times = []
for _ in range(2):
  start = time.time()
  run(inputs)
  times.append(time.time() - start)
json.dump({"first_call": times[0], "steady_call": times[1],
           "since_start": time.time() - float(os.environ["BENCH_T0"])},
          open(os.environ["BENCH_OUT"], "w"))
"""


def run_python(
  code: str, args: list[str], cache: Path, out: Path, extra: dict | None = None
) -> dict:
  """`python -c code args` in a fresh process on cache directory `cache`: its JSON, plus the
  whole process's seconds ("whole")."""
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  start = time.time()
  env.update(
    ALBERT_JAX_CACHE=str(cache),
    BENCH_T0=str(start),
    BENCH_OUT=str(out),
    PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    TQDM_DISABLE="1",
    **(extra or {}),
  )
  done = subprocess.run(
    [sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True
  )
  whole = time.time() - start
  if done.returncode:
    raise SystemExit(f"failed ({done.returncode}): {' '.join(args)}\n{done.stderr[-3000:]}")
  result = json.loads(out.read_text())
  result["whole"] = whole
  compiled = [line for line in done.stderr.splitlines() if "compiled ahead" in line]
  result["log"] = compiled[-1].split(": ", 1)[-1] if compiled else ""
  return result


def longtail_file(path: Path, n: int, seed: int) -> None:
  """An SST-2-format TSV of `n` rows: 70% of 3-15 words, 20% of 16-119, 10% of 120-380."""
  rng = np.random.default_rng(seed)
  kind = rng.choice(3, n, p=[0.7, 0.2, 0.1])
  low, high = np.array([3, 16, 120]), np.array([16, 120, 381])
  lines = ["sentence\tlabel"]
  for k in kind:
    words = rng.choice(WORDS, rng.integers(low[k], high[k]))
    lines.append(f"{' '.join(words)}.\t{rng.integers(2)}")
  path.write_text("\n".join(lines) + "\n")


def finetune(tmp: Path, name: str, cache: Path, flags: list[str], torch: bool) -> dict:
  workdir = tmp / "runs" / f"{name}-{time.time_ns()}"
  args = ["--config=configs/finetune/sst2_sample.py", f"--workdir={workdir}", *flags]
  return run_python(
    FINETUNE, args, cache, tmp / "out.json", {} if torch else {"BENCH_NO_TORCH": "1"}
  )


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--only", default="demo,longtail,predict")
  parser.add_argument("--size", choices=sorted(SIZES), default="base")
  parser.add_argument("--n", type=int, default=300, help="sentences (text classification)")
  parser.add_argument("--n_qa", type=int, default=100, help="questions (question answering)")
  parser.add_argument(
    "--torch", action="store_true", help="let the fine-tuning runs import torch (see the doc)"
  )
  args = parser.parse_args()
  only = set(args.only.split(","))
  rows: list[tuple[str, str, dict]] = []
  longtail: dict[tuple[str, str], float] = {}  # (case, cold/warm): whole seconds
  print(f"start: {machine()}", flush=True)

  def show(case: str, cache: str, result: dict) -> None:
    rows.append((case, cache, result))
    figures = ", ".join(f"{k} {v:.1f} s" for k, v in result.items() if isinstance(v, float))
    print(f"{case} [{cache}]: {figures}  {result.get('log', '')}", flush=True)

  with tempfile.TemporaryDirectory() as tmp_name:
    tmp = Path(tmp_name)
    if "demo" in only:
      cache = tmp / "demo-cache"
      for state in ("cold", "warm"):
        show("demo (150 steps)", state, finetune(tmp, "demo", cache, [], args.torch))
    if "longtail" in only:
      longtail_file(tmp / "train.tsv", 600, 0)
      longtail_file(tmp / "dev.tsv", 100, 1)
      flags = [
        f"--config.train_file={tmp / 'train.tsv'}",
        f"--config.eval_file={tmp / 'dev.tsv'}",
        "--config.max_seq_length=256",
        "--config.model_overrides.max_position_embeddings=256",
        "--config.num_train_steps=60",
        "--config.warmup_steps=6",
        "--config.eval_every_steps=0",
        "--config.checkpoint_every_steps=60",
      ]
      for name, extra in (
        ("length buckets chosen for the run", ["--config.batching=bucket"]),
        (
          "max_buckets=8 length buckets",
          ["--config.batching=bucket", "--config.bucket_cost_steps=0"],
        ),
        ("every row padded to 256", ["--config.batching=max_length"]),
      ):
        cache = tmp / f"longtail-{time.time_ns()}"  # cold, each; then warm
        for state in ("cold", "warm"):
          result = finetune(tmp, "longtail", cache, [*flags, *extra], args.torch)
          show(f"long-tailed 60 steps, {name}", state, result)
          longtail[name, state] = result["whole"]
      padded = longtail["every row padded to 256", "cold"]
      chosen = "length buckets chosen for the run"
      print(
        f"long-tailed, cold: padded / buckets chosen {padded / longtail[chosen, 'cold']:.2f}x; "
        f"padded cold / buckets chosen warm {padded / longtail[chosen, 'warm']:.2f}x (the most "
        "any saving in compiling can give: the warm run compiles nothing)",
        flush=True,
      )
    if "predict" in only:
      models = build_models(tmp, args.size)
      for task, inputs in (
        ("text-classification", sentences(args.n)),
        ("question-answering", questions(args.n_qa)),
      ):
        (tmp / "inputs.json").write_text(json.dumps(inputs))
        cache = tmp / f"predict-{task}"
        for state in ("cold", "warm"):
          result = run_python(
            PREDICT, [task, str(models[task]), str(tmp / "inputs.json")], cache, tmp / "out.json"
          )
          show(f"predict {task} ({args.size}, {len(inputs)} inputs)", state, result)
  print(f"end: {machine()}")
  print("\n| case | cache | first step / first call | steady call | whole process |")
  print("|---|---|---|---|---|")
  for case, cache, r in rows:
    first = r.get("first_step", r.get("first_call"))
    steady = f"{r['steady_call']:.1f} s" if "steady_call" in r else ""
    print(f"| {case} | {cache} | {first:.1f} s | {steady} | {r['whole']:.1f} s |")


def build_models(tmp: Path, size: str) -> dict[str, Path]:
  """Random-weight text-classification and question-answering models of `size`, saved by
  transformers and converted (`python -m albert_jax.convert`)."""
  import torch  # noqa: PLC0415
  import transformers  # noqa: PLC0415

  from albert_jax import convert  # noqa: PLC0415

  hidden, layers, heads, ffn = SIZES[size]
  out = {}
  for task, cls in (
    ("text-classification", transformers.AlbertForSequenceClassification),
    ("question-answering", transformers.AlbertForQuestionAnswering),
  ):
    torch.manual_seed(0)
    config = transformers.AlbertConfig(
      hidden_size=hidden,
      num_hidden_layers=layers,
      num_attention_heads=heads,
      intermediate_size=ffn,
      num_labels=2,
    )
    cls(config).eval().save_pretrained(tmp / task / "hf")
    convert.main(["c", "--model", str(tmp / task / "hf"), "--output", str(tmp / task / "ours")])
    out[task] = tmp / task / "ours"
  return out


if __name__ == "__main__":
  main()
