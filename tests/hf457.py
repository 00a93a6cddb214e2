"""transformers 4.57.1 beside our stack: the last transformers with a question-answering pipeline.

Our environment has transformers 5, which dropped that pipeline, so the reference is a side
install (`install`: pip, --no-deps, into a directory of its own, reused once complete) run in a
child process (`question_answering`) with `PYTHONPATH=<that directory>` ahead of our packages
and `USE_TF=0 USE_FLAX=0`. It loads a model saved by `save_pretrained` with only
`spiece.model` beside it (transformers 5's `AlbertTokenizer(vocab_file=...)` writes a
tokenizer.json that maps every piece to <unk>); transformers 4.57 converts that file to its
fast tokenizer itself.

Run as a script, this module is the child: `python tests/hf457.py CASES.json OUT.json`. It
imports nothing from albert_jax.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REQUIREMENTS = ("transformers==4.57.1", "tokenizers>=0.22,<0.23", "huggingface_hub>=0.34,<1.0")


def install(directory: Path) -> Path:
  """`REQUIREMENTS` installed into `directory` (kept and reused once complete); returns it.
  Raises RuntimeError with pip's output when pip fails."""
  directory = Path(directory)
  marker = directory / "albert_jax-hf457.json"
  if _complete(marker):
    return directory
  directory.parent.mkdir(parents=True, exist_ok=True)
  with _locked(directory.with_name(directory.name + ".lock")):
    if _complete(marker):  # installed by another process meanwhile
      return directory
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(partial)]
    done = subprocess.run(
      [*command, "--disable-pip-version-check", "-q", *REQUIREMENTS],
      capture_output=True,
      text=True,
    )
    if done.returncode != 0:
      shutil.rmtree(partial, ignore_errors=True)
      raise RuntimeError(f"`{' '.join(command)} {' '.join(REQUIREMENTS)}` failed:\n{done.stderr}")
    json.dump(list(REQUIREMENTS), (partial / marker.name).open("w"))
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
  return directory


def _complete(marker: Path) -> bool:
  try:
    return json.loads(marker.read_text()) == list(REQUIREMENTS)
  except (OSError, ValueError):
    return False


@contextlib.contextmanager
def _locked(path: Path):
  """An exclusive lock on `path` (pytest-xdist workers may install at once)."""
  import fcntl

  with path.open("w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def question_answering(directory: Path, model: Path, cases: list[dict], work: Path) -> list[dict]:
  """transformers 4.57's question-answering pipeline over `model` on each case
  (`{"question", "context", "options"}`), in one child process; see `_answer` for each result."""
  work.mkdir(parents=True, exist_ok=True)
  (work / "cases.json").write_text(json.dumps({"model": str(model), "cases": cases}))
  env = {
    **os.environ,
    "PYTHONPATH": str(directory),
    "USE_TF": "0",
    "USE_FLAX": "0",  # torch alone
    "TRANSFORMERS_VERBOSITY": "error",
  }
  done = subprocess.run(
    [sys.executable, __file__, str(work / "cases.json"), str(work / "answers.json")],
    capture_output=True,
    text=True,
    env=env,
    timeout=900,
  )
  if done.returncode != 0:
    raise RuntimeError(f"the transformers 4.57 child failed:\n{done.stderr[-4000:]}")
  return json.loads((work / "answers.json").read_text())


# ---- the child ---------------------------------------------------------------------------------


def _answer(pipe, qa, question: str, context: str, options: dict[str, Any]) -> dict[str, Any]:
  """One case: `result` (the pipeline's own answer), `ranked` (every merged candidate, before
  the cut to top_k), `windows` (each window's input_ids, start and end logits), `cuts` (per
  window: the scores of the last span kept and the next one, None when all are kept),
  `merged` (the lowercased text of each span added into an earlier answer), and the
  tokenizer's `question_tokens` and `context_tokens`."""
  import numpy as np

  record: dict[str, Any] = {"windows": [], "cuts": [], "merged": []}
  top_k = options.get("top_k", 1)
  pre_topk = top_k * 2 + 10 if options.get("align_to_words", True) else top_k
  decode_spans, select_starts_ends = qa.decode_spans, qa.select_starts_ends
  get_answer = qa.QuestionAnsweringPipeline.get_answer

  def recording_decode_spans(start, end, topk, max_answer_len, undesired_tokens):
    scores = np.tril(np.triu(np.outer(start[0], end[0])), max_answer_len - 1).ravel()
    scores = np.sort(scores[scores > 0])[::-1]
    cut = scores[topk - 1 : topk + 1].tolist() if len(scores) > topk else None
    record["cuts"].append(cut)
    return decode_spans(start, end, topk, max_answer_len, undesired_tokens)

  def counting_get_answer(self, answers, target):
    found = get_answer(self, answers, target)
    if found is not None:
      record["merged"].append(target.lower())
    return found

  def hook(module, args, kwargs, output):
    record["windows"].append(
      {
        "input_ids": kwargs["input_ids"][0].tolist(),
        "start": output.start_logits[0].tolist(),
        "end": output.end_logits[0].tolist(),
      }
    )

  qa.decode_spans = recording_decode_spans
  qa.QuestionAnsweringPipeline.get_answer = counting_get_answer
  handle = pipe.model.register_forward_hook(hook, with_kwargs=True)
  try:
    record["result"] = pipe(question=question, context=context, **options)
  finally:
    handle.remove()
    qa.decode_spans = decode_spans
    qa.QuestionAnsweringPipeline.get_answer = get_answer

  def same_spans_no_cut(*args):  # the candidates that top_k picks, ranked without the cut
    return select_starts_ends(*args[:5], pre_topk, *args[6:])

  qa.select_starts_ends = same_spans_no_cut
  try:
    ranked = pipe(question=question, context=context, **{**options, "top_k": 10**6})
  finally:
    qa.select_starts_ends = select_starts_ends
  record["ranked"] = [ranked] if isinstance(ranked, dict) else ranked
  record["question_tokens"] = pipe.tokenizer.tokenize(question)
  record["context_tokens"] = pipe.tokenizer.tokenize(context)
  return record


def _main(cases_path: str, out_path: str) -> None:
  import transformers
  from transformers.pipelines import question_answering as qa

  if transformers.__version__ != "4.57.1":
    raise SystemExit(f"expected transformers 4.57.1, imported {transformers.__version__}")
  spec = json.loads(Path(cases_path).read_text())
  pipe = transformers.pipeline("question-answering", model=spec["model"], device="cpu")
  if not pipe.tokenizer.is_fast:
    raise SystemExit(f"expected a fast tokenizer, got {type(pipe.tokenizer).__name__}")
  out = [_answer(pipe, qa, c["question"], c["context"], c["options"]) for c in spec["cases"]]
  Path(out_path).write_text(json.dumps(out))


if __name__ == "__main__":
  _main(*sys.argv[1:])
