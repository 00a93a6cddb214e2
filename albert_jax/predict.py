"""`python -m albert_jax.predict`: a task pipeline over a file, one JSON result a line.

    python -m albert_jax.predict --model WORKDIR/export --task text-classification \
        --input sentences.txt --output predictions.jsonl

--input: JSONL, TSV/CSV with a header row, or plain text, holding the task's fields
(`albert_jax.pipelines.records` says which). `-` reads stdin / writes stdout. The output holds
one JSON line per input, in input order; a file appears only once complete. Inputs are sorted
by length and batched at a few bucket lengths (one compilation each) or, for
question-answering and token-classification, packed several to a row where that computes less
(`--nopack` turns it off), each batch at most `--batch_size` rows and `--max_tokens` padded
positions; a progress bar goes to stderr.
The pipeline options are flags (`--top_k`, `--function_to_apply`, `--doc_stride`, ...; see
`albert_jax.pipelines`). The library call is `albert_jax.pipeline(task, model=DIR)`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from absl import flags

from albert_jax import cli, files
from albert_jax.errors import UserError
from albert_jax.pipelines import PIPELINES, pipeline, records

FLAGS = flags.FlagValues()
flags.DEFINE_string(
  "model",
  None,
  "Fine-tuned model directory (WORKDIR/export, a workdir, "
  "or anything albert_jax.from_pretrained loads).",
  flag_values=FLAGS,
)
flags.DEFINE_enum("task", None, list(records.FIELDS), "The pipeline.", flag_values=FLAGS)
flags.DEFINE_string(
  "input", None, "JSONL, TSV/CSV with a header, or text; - for stdin.", flag_values=FLAGS
)
flags.DEFINE_string("output", "-", "JSONL file to write; - for stdout.", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 32, "Inputs per batch.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer(
  "max_tokens",
  None,
  "Padded positions per batch at most (rows x bucket length); default: 1024 on CPU, no limit "
  "on GPU/TPU; 0: no limit (--batch_size rows whatever their length).",
  lower_bound=0,
  flag_values=FLAGS,
)
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.", flag_values=FLAGS)
flags.DEFINE_string(
  "top_k", None, "Results per input; 'none' = all labels (text-classification).", flag_values=FLAGS
)
flags.DEFINE_enum(
  "function_to_apply",
  None,
  ["softmax", "sigmoid", "none"],
  "text-classification: scores from logits.",
  flag_values=FLAGS,
)
flags.DEFINE_integer(
  "doc_stride", None, "question-answering: window overlap, in pieces.", flag_values=FLAGS
)
flags.DEFINE_integer(
  "max_answer_len", None, "question-answering: longest answer, in pieces.", flag_values=FLAGS
)
flags.DEFINE_integer(
  "max_seq_length", None, "question-answering: window length, in pieces.", flag_values=FLAGS
)
flags.DEFINE_integer(
  "max_query_length", None, "question-answering: question pieces kept.", flag_values=FLAGS
)
flags.DEFINE_enum(
  "aggregation_strategy",
  None,
  ["none", "simple", "first", "average", "max"],
  "token-classification: grouping of pieces into entities.",
  flag_values=FLAGS,
)
flags.DEFINE_bool(
  "handle_impossible_answer", None, "question-answering: allow no answer.", flag_values=FLAGS
)
flags.DEFINE_bool(
  "pack",
  None,
  "question-answering, token-classification: several inputs a row where that computes less "
  "(default); --nopack: each input in a row of its own.",
  flag_values=FLAGS,
)
flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.", flag_values=FLAGS)
cli.define_compilation_cache(FLAGS)

USAGE = (
  "python -m albert_jax.predict --model DIR --task TASK --input FILE [--output FILE] "
  "[--top_k K] [--dtype bfloat16] ..."
)
# HF transformers' pipeline spellings, accepted as they are.
ALIASES = {"max_seq_len": "max_seq_length", "max_question_len": "max_query_length"}
# The flags that are pipeline options (the pipelines take these names).
_OPTIONS = (
  "function_to_apply",
  "doc_stride",
  "max_answer_len",
  "max_seq_length",
  "max_query_length",
  "handle_impossible_answer",
  "aggregation_strategy",
  "pack",
)


def _top_k(value: str | None) -> dict[str, Any]:
  if value is None:
    return {}
  if value.lower() == "none":
    return {"top_k": None}
  try:
    return {"top_k": int(value)}
  except ValueError:
    raise UserError(f"--top_k={value!r}: give a number or 'none'.") from None


def main(argv: Sequence[str]) -> int:
  """`python -m albert_jax.predict`; see the module docstring."""
  rest = cli.parse(FLAGS, argv, USAGE, aliases=ALIASES)
  if rest or None in (FLAGS.model, FLAGS.task, FLAGS.input):
    raise UserError(f"Pass --model, --task and --input (extra arguments: {rest}).\n{USAGE}")
  if FLAGS.input == "-":
    text = sys.stdin.read()
  else:
    try:
      with open(FLAGS.input, encoding="utf-8") as f:
        text = f.read()
    except (FileNotFoundError, IsADirectoryError) as e:
      raise UserError(
        f"--input={FLAGS.input}: {e.strerror.lower()}. Give a JSONL, TSV/CSV or text file, "
        "or - for stdin."
      ) from None
  inputs = records.pipeline_inputs(FLAGS.task, FLAGS.input, records.read_records(FLAGS.input, text))
  options = {k: FLAGS[k].value for k in _OPTIONS if FLAGS[k].value is not None}
  options.update(_top_k(FLAGS.top_k))
  if FLAGS.max_tokens is not None:
    options["max_tokens"] = FLAGS.max_tokens or None
  run = pipeline(
    FLAGS.task,
    FLAGS.model,
    batch_size=FLAGS.batch_size,
    dtype=FLAGS.dtype,
    progress=FLAGS.progress,
    compilation_cache=FLAGS.compilation_cache,
    **_constructor(FLAGS.task, options),
  )
  results = run(inputs)
  lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results)
  if FLAGS.output == "-":
    sys.stdout.write(lines)
  else:
    files.write_text(FLAGS.output, lines)
  return 0


def _constructor(task: str, options: dict[str, Any]) -> dict[str, Any]:
  """The options the task's pipeline takes; another task's option is an error."""
  import inspect

  accepted = set(inspect.signature(PIPELINES[task].__init__).parameters)
  wrong = sorted(set(options) - accepted)
  if wrong:
    raise UserError(f"--{wrong[0]} does not apply to task {task}.")
  return options


if __name__ == "__main__":
  cli.run(main, FLAGS)
