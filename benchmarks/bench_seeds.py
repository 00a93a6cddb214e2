"""Several seeds in one run (`--config.seeds=N`) against N separate runs: whole-run wall time.

  python benchmarks/bench_seeds.py                          # N = 1, 2, 4, 8 on the SST-2 sample
  python benchmarks/bench_seeds.py --seeds 1,5 --steps 50   # what fits a busy machine
  python benchmarks/bench_seeds.py --base --seeds 1,2 --steps 4   # albert-base-v2 dimensions

Each measurement is the command a user runs, `python -m albert_jax.finetune
--config=configs/finetune/sst2_sample.py`, in a process of its own, timed from start to exit
(imports, data loading, compilation, training, evaluation, export): once with
`--config.seeds=N`, and N times one after the other with `--config.seed=k
--config.data_seed=0` (the N replicas' twins, each with its own process, compilation and data
loading). No persistent compilation cache is used (`--config.compilation_cache=False`,
JAX_COMPILATION_CACHE_DIR unset), so each process compiles as a first run does. `--base`
trains albert-base-v2's dimensions (hidden 768, 12 layers, 12 heads, FFN 3072, embeddings
128) instead of the sample's small model.
Prints the CPU, its load, and a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = "configs/finetune/sst2_sample.py"
BASE = {
  "hidden_size": 768,
  "num_hidden_layers": 12,
  "num_attention_heads": 12,
  "intermediate_size": 3072,
  "embedding_size": 128,
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


def run(workdir: str, flags: dict) -> float:
  """Seconds `python -m albert_jax.finetune` takes with `flags`, start to exit (must be 0)."""
  command = [sys.executable, "-m", "albert_jax.finetune", f"--config={CONFIG}"]
  command += [f"--config.{k}={v}" for k, v in flags.items()] + [f"--workdir={workdir}"]
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  start = time.perf_counter()
  done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
  seconds = time.perf_counter() - start
  if done.returncode != 0:
    raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
  return seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", default="1,2,4,8", help="comma-separated N")
  parser.add_argument("--steps", type=int, default=None, help="train steps (default: config's)")
  parser.add_argument("--base", action="store_true", help="albert-base-v2's dimensions")
  parser.add_argument("--no_separate", action="store_true", help="skip the N separate runs")
  args = parser.parse_args()
  flags: dict = {"mesh.shape.data": 1, "compilation_cache": False}
  if args.steps is not None:
    flags.update(num_train_steps=args.steps, warmup_steps=max(args.steps // 10, 0))
    flags.update(eval_every_steps=args.steps, checkpoint_every_steps=args.steps)
  if args.base:
    flags.update({f"model_overrides.{k}": v for k, v in BASE.items()})
  print(machine())
  print(f"flags: {flags}")
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    # untimed: the first process on a cold machine also reads the files into the page cache
    run(os.path.join(tmp, "warm"), {**flags, "num_train_steps": 2, "warmup_steps": 0})
    one = None
    for n in [int(x) for x in args.seeds.split(",")]:
      together = run(os.path.join(tmp, f"seeds{n}"), {**flags, "seeds": n})
      one = together if n == 1 else one
      separate = None
      if not args.no_separate:
        separate = sum(
          run(os.path.join(tmp, f"single{n}_{k}"), {**flags, "seed": k, "data_seed": 0})
          for k in range(n)
        )
      rows.append((n, together, separate))
      runs = f"{separate:.1f} s" if separate else "-"
      print(f"N={n}: one run {together:.1f} s; {n} runs {runs}", flush=True)
    print(f"\n{machine()}\n")
    print("| N | one run of N seeds (s) | N separate runs (s) | x one seed's run | speed-up |")
    print("|---|---|---|---|---|")
    for n, together, separate in rows:
      ratio = f"{together / one:.2f}" if one else "-"
      speedup = f"{separate / together:.2f}×" if separate else "-"
      runs = f"{separate:.1f}" if separate else "-"
      print(f"| {n} | {together:.1f} | {runs} | {ratio}× | {speedup} |")


if __name__ == "__main__":
  main()
