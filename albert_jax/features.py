"""`python -m albert_jax.features`: ALBERT features of a file of texts, into an `.npz`.

    python -m albert_jax.features --model DIR --input texts.txt --output feats.npz \
        [--batch_size 32] [--max_seq_length 512] [--pooled] [--overwrite]

One text per line of `--input` (empty lines included, so row i is line i). Flags only; the work
is `albert_jax.pipelines.features` (`extract_features`, `save_features`; the file's layout is
described there, and `load_features(path)` reads it back). Truncated texts, and a
`--max_seq_length` lowered to the model's `max_position_embeddings`, are reported on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from albert_jax import cli, files
from albert_jax.errors import UserError
from albert_jax.pipelines.features import extract_features, save_features
from albert_jax.weights.pretrained import from_pretrained

FLAGS = flags.FlagValues()
flags.DEFINE_string(
  "model", None, "Converted directory (or any from_pretrained source).", flag_values=FLAGS
)
flags.DEFINE_string("input", None, "Text file, one text per line.", flag_values=FLAGS)
flags.DEFINE_string("output", None, ".npz file to write.", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 32, "Texts per batch.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer(
  "max_seq_length",
  None,
  "Truncate texts to this many tokens (default: the model's max_position_embeddings).",
  lower_bound=2,
  flag_values=FLAGS,
)
flags.DEFINE_bool("pooled", False, "Also write the pooled output.", flag_values=FLAGS)
flags.DEFINE_bool("overwrite", False, "Replace an existing output file.", flag_values=FLAGS)
cli.define_compilation_cache(FLAGS)

USAGE = (
  "python -m albert_jax.features --model DIR --input texts.txt --output feats.npz "
  "[--batch_size 32] [--max_seq_length 512] [--pooled] [--overwrite]"
)
RENAMED = {"max_length": "max_seq_length"}


def main(argv: Sequence[str]) -> int:
  """`python -m albert_jax.features`; see the module docstring."""
  rest = cli.parse(FLAGS, argv, USAGE, RENAMED)
  if rest or None in (FLAGS.model, FLAGS.input, FLAGS.output):
    raise UserError(
      f"Pass --model, --input and --output (no positional arguments: {rest}).\nUsage: {USAGE}"
    )
  files.refuse_existing(FLAGS.output, FLAGS.overwrite)
  texts = Path(FLAGS.input).read_text(encoding="utf-8").splitlines()
  model = from_pretrained(FLAGS.model, head="base", strict=True, add_pooling_layer=FLAGS.pooled)
  features = extract_features(
    model,
    texts,
    batch_size=FLAGS.batch_size,
    max_seq_length=FLAGS.max_seq_length,
    pooled=FLAGS.pooled,
    notify=lambda line: print(line, file=sys.stderr),  # stdout carries the result only
  )
  save_features(FLAGS.output, features, FLAGS.overwrite)
  tokens = sum(len(ids) for ids in features.input_ids)
  print(
    f"Wrote {FLAGS.output}: {len(texts)} texts, {tokens} tokens, hidden size "
    f"{model.config.hidden_size}{', pooled output' if FLAGS.pooled else ''}"
  )
  return 0


if __name__ == "__main__":
  cli.run(main, FLAGS)
