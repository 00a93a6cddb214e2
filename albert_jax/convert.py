"""`python -m albert_jax.convert`: HF or Google TF ALBERT weights -> a converted directory.

    python -m albert_jax.convert --model SRC --output DIR [--head HEAD] [--overwrite] \
        [--albert_config FILE|PRESET]

SRC is an HF model directory, a TF checkpoint directory or prefix, a `.tar.gz` of either, or an
HF hub name (`albert-large-v2`); see `albert_jax.weights.sources`. DIR gets the converted
layout of `albert_jax.weights.converted` (Orbax `params/`, `config.json`, `albert_jax.json`,
`spiece.model`) and appears complete or not at all. Flags only; the library call is
`albert_jax.weights.sources.convert(SRC, DIR)`.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags

from albert_jax import cli
from albert_jax.errors import UserError
from albert_jax.heads import HEADS
from albert_jax.weights import sources

FLAGS = flags.FlagValues()
flags.DEFINE_string(
  "model",
  None,
  "The weights to convert: HF model dir, TF checkpoint dir/prefix, .tar.gz, or HF hub name "
  "(albert-large-v2).",
  flag_values=FLAGS,
)
flags.DEFINE_string(
  "output", None, "Directory to write (must not exist, see --overwrite).", flag_values=FLAGS
)
flags.DEFINE_enum(
  "head", None, list(HEADS), "Head to convert; default: detected.", flag_values=FLAGS
)
flags.DEFINE_bool("overwrite", False, "Replace an existing output directory.", flag_values=FLAGS)
flags.DEFINE_string(
  "albert_config",
  None,
  "Config JSON file or preset name, for sources without one.",
  flag_values=FLAGS,
)

USAGE = "python -m albert_jax.convert --model SRC --output DIR [--head HEAD] [--overwrite]"
RENAMED = {"source": "model"}


def main(argv: Sequence[str]) -> int:
  """`python -m albert_jax.convert`; see the module docstring."""
  rest = cli.parse(FLAGS, argv, USAGE, RENAMED)
  if rest or FLAGS.model is None or FLAGS.output is None:
    raise UserError(
      f"Pass --model and --output (and no positional arguments: {rest}).\nUsage: {USAGE}"
    )
  converted = sources.convert(
    FLAGS.model, FLAGS.output, FLAGS.head, FLAGS.overwrite, FLAGS.albert_config
  )
  print(converted.summary(FLAGS.output))
  return 0


if __name__ == "__main__":
  cli.run(main, FLAGS)
