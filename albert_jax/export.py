"""`python -m albert_jax.export`: a model -> an HF transformers directory, a TensorFlow
SavedModel, or StableHLO programs.

    python -m albert_jax.export --model DIR --output OUT [--format hf|saved_model|stablehlo]
        [--platforms cpu,cuda,tpu] [--dtype float32|bfloat16] [--overwrite]

`DIR` is anything `albert_jax.from_pretrained` loads (a converted directory, a run's `export/`,
a workdir or step directory). `--format`:
  hf           (default) what `AlbertFor*.save_pretrained` writes (`config.json`,
               `model.safetensors`, `spiece.model`): `albert_jax.weights.export`
  saved_model  a SavedModel whose `serving_default` takes raw text and `token_ids` the
               tokenizer's ids (needs `albert_jax[serve]`): `albert_jax.serve.saved_model`
  stablehlo    `jax.export` programs and a loader needing only jax and numpy:
               `albert_jax.serving`
`--platforms` and `--dtype` (the compute dtype) are for the last two. OUT is written next to
itself and renamed into place when complete.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags

from albert_jax import cli
from albert_jax.errors import UserError
from albert_jax.heads import HEADS
from albert_jax.weights.converted import parameter_count
from albert_jax.weights.export import export

FORMATS = ("hf", "saved_model", "stablehlo")
FLAGS = flags.FlagValues()
flags.DEFINE_string(
  "model",
  None,
  "The model to export: a converted directory, a run's export/, a workdir or step directory "
  "(anything from_pretrained reads).",
  flag_values=FLAGS,
)
flags.DEFINE_string("output", None, "Directory to write (must not exist).", flag_values=FLAGS)
flags.DEFINE_enum(
  "format",
  "hf",
  FORMATS,
  "hf: an HF transformers model directory; saved_model: a TensorFlow SavedModel taking raw "
  "text; stablehlo: jax.export programs with a jax+numpy loader.",
  flag_values=FLAGS,
)
flags.DEFINE_string(
  "platforms",
  "cpu",
  "saved_model/stablehlo: the platforms to lower for, comma-separated (cpu, cuda, rocm, tpu).",
  flag_values=FLAGS,
)
flags.DEFINE_enum(
  "dtype",
  "float32",
  ("float32", "bfloat16"),
  "saved_model/stablehlo: the compute dtype (parameters are stored as they are).",
  flag_values=FLAGS,
)
flags.DEFINE_bool("overwrite", False, "Replace an existing output directory.", flag_values=FLAGS)

USAGE = (
  "python -m albert_jax.export --model DIR --output OUT [--format hf|saved_model|stablehlo] "
  "[--platforms cpu,cuda,tpu] [--dtype float32|bfloat16] [--overwrite]"
)
RENAMED = {"checkpoint": "model"}


def main(argv: Sequence[str]) -> int:
  """`python -m albert_jax.export`; see the module docstring."""
  rest = cli.parse(FLAGS, argv, USAGE, RENAMED)
  if rest or FLAGS.model is None or FLAGS.output is None:
    raise UserError(f"Pass --model and --output (no positional arguments: {rest}).\nUsage: {USAGE}")
  if FLAGS.format == "hf":
    if FLAGS["platforms"].present or FLAGS["dtype"].present:
      raise UserError("--platforms and --dtype are for --format=saved_model or stablehlo.")
    model = export(FLAGS.model, FLAGS.output, FLAGS.overwrite)
    what = HEADS[model.head].hf_class
  else:
    if FLAGS.format == "saved_model":
      from albert_jax.serve import saved_model as writer
    else:
      from albert_jax.serve import stablehlo as writer
    model = writer.export(FLAGS.model, FLAGS.output, FLAGS.platforms, FLAGS.dtype, FLAGS.overwrite)
    what = f"{FLAGS.format} ({model.head}, {FLAGS.platforms}, {FLAGS.dtype})"
  count = parameter_count(model.params)
  print(f"Exported {FLAGS.model} -> {FLAGS.output}: {what}, {count:,} parameters")
  return 0


if __name__ == "__main__":
  cli.run(main, FLAGS)
