"""`python -m albert_jax.export`: albert_jax weights -> an HF transformers model directory.

    python -m albert_jax.export --model DIR --output HF_DIR [--overwrite]

`DIR` is anything `albert_jax.from_pretrained` loads (a converted directory, typically); HF_DIR
gets what `AlbertFor*.save_pretrained` writes (`config.json`, `model.safetensors`,
`spiece.model`), so `transformers.AutoModel*.from_pretrained` loads it. The library call is
`albert_jax.weights.export.export(DIR, HF_DIR)`; its docstring describes the files.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags

from albert_jax import cli
from albert_jax.errors import UserError
from albert_jax.heads import HEADS
from albert_jax.weights.converted import parameter_count
from albert_jax.weights.export import export

FLAGS = flags.FlagValues()
flags.DEFINE_string(
  "model",
  None,
  "The model to export: a converted directory, a run's export/, a workdir or step directory "
  "(anything from_pretrained reads).",
  flag_values=FLAGS,
)
flags.DEFINE_string("output", None, "HF model directory to write.", flag_values=FLAGS)
flags.DEFINE_bool("overwrite", False, "Replace an existing output directory.", flag_values=FLAGS)

USAGE = "python -m albert_jax.export --model DIR --output HF_DIR [--overwrite]"
RENAMED = {"checkpoint": "model"}


def main(argv: Sequence[str]) -> int:
  """`python -m albert_jax.export`; see the module docstring."""
  rest = cli.parse(FLAGS, argv, USAGE, RENAMED)
  if rest or FLAGS.model is None or FLAGS.output is None:
    raise UserError(f"Pass --model and --output (no positional arguments: {rest}).\nUsage: {USAGE}")
  model = export(FLAGS.model, FLAGS.output, FLAGS.overwrite)
  print(
    f"Exported {FLAGS.model} -> {FLAGS.output}: {HEADS[model.head].hf_class}, "
    f"{parameter_count(model.params):,} parameters"
  )
  return 0


if __name__ == "__main__":
  cli.run(main, FLAGS)
