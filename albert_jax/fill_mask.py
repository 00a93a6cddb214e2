"""`python -m albert_jax.fill_mask`: the likeliest tokens for each `[MASK]` of the texts given.

    python -m albert_jax.fill_mask --model DIR [--top_k 5] [--json] [--batch_size 8] \
        "Hello I'm a [MASK] model." "The capital of France is [MASK]."

Flags only; the work is `albert_jax.pipelines.fill_mask.FillMask` (HF's fill-mask results).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from absl import flags

from albert_jax import cli
from albert_jax.errors import UserError
from albert_jax.pipelines.fill_mask import FillMask


def _print(text: str, result: list[Any]) -> None:
  print(text)
  for m, candidates in enumerate(result if isinstance(result[0], list) else [result]):
    if isinstance(result[0], list):
      print(f"  mask {m + 1}:")
    for c in candidates:
      print(f"  {c['score']:.4f}  {c['token_str']:<15} {c['sequence']}")


FLAGS = flags.FlagValues()
flags.DEFINE_string(
  "model",
  None,
  "Converted directory (or any from_pretrained source) with an MLM head.",
  flag_values=FLAGS,
)
flags.DEFINE_integer("top_k", 5, "Candidates per mask.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 8, "Texts per batch.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_bool("json", False, "Print a JSON list (one result per text).", flag_values=FLAGS)
cli.define_compilation_cache(FLAGS)

USAGE = (
  "python -m albert_jax.fill_mask --model DIR [--top_k 5] [--json] [--batch_size 8] "
  '"Hello I\'m a [MASK] model." ...'
)


def main(argv: Sequence[str]) -> int:
  """`python -m albert_jax.fill_mask`; see the module docstring."""
  texts = cli.parse(FLAGS, argv, USAGE)
  if FLAGS.model is None or not texts:
    raise UserError(f"Pass --model and at least one text.\nUsage: {USAGE}")
  results = FillMask(FLAGS.model, FLAGS.top_k, FLAGS.batch_size)(texts)
  if FLAGS.json:
    print(json.dumps(results, indent=2))
  else:
    for text, result in zip(texts, results, strict=True):
      _print(text, result)
  return 0


if __name__ == "__main__":
  cli.run(main, FLAGS)
