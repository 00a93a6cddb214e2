"""`python -m albert_jax.attention`: attention maps of a model for one text, as a PNG.

    python -m albert_jax.attention --model DIR "The cat sat on the mat." --output maps.png \
        [--layers 0,11] [--heads 0,1,2]

Row k, column n of the figure is applied layer k's head n. Flags only; the work is
`albert_jax.attention_maps` (`attention_maps`, `plot_attention_maps`), which notebooks call too.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags

from albert_jax import cli
from albert_jax.attention_maps import attention_maps, plot_attention_maps
from albert_jax.errors import UserError
from albert_jax.weights.pretrained import from_pretrained

FLAGS = flags.FlagValues()
flags.DEFINE_string(
  "model", None, "Converted model directory (or any from_pretrained source).", flag_values=FLAGS
)
flags.DEFINE_string("output", None, "Where to write the PNG.", flag_values=FLAGS)
flags.DEFINE_list(
  "layers",
  None,
  "Applied layers to draw (0-based, comma-separated); default all.",
  flag_values=FLAGS,
)
flags.DEFINE_list(
  "heads", None, "Heads to draw (0-based, comma-separated); default all.", flag_values=FLAGS
)

USAGE = (
  'python -m albert_jax.attention --model DIR "text" --output maps.png [--layers 0,1] [--heads 0,1]'
)


def _indices(values: list[str] | None, flag: str) -> list[int] | None:
  if values is None:
    return None
  try:
    return [int(v) for v in values]
  except ValueError:
    raise UserError(f"--{flag}={','.join(values)}: give 0-based integers, e.g. 0,1,2.") from None


def main(argv: Sequence[str]) -> int:
  """`python -m albert_jax.attention`; see the module docstring."""
  texts = cli.parse(FLAGS, argv, USAGE)
  if FLAGS.model is None or FLAGS.output is None or len(texts) != 1:
    raise UserError(f"Pass --model, --output and exactly one text.\nUsage: {USAGE}")
  model = from_pretrained(FLAGS.model)
  ids = model.tokenizer.encode(
    texts[0], truncation=True, max_length=model.config.max_position_embeddings
  )
  maps_KNLL = attention_maps(model.module, model.params, ids)
  tokens = model.tokenizer.convert_ids_to_tokens(ids)
  layers, heads = _indices(FLAGS.layers, "layers"), _indices(FLAGS.heads, "heads")
  width, height = plot_attention_maps(maps_KNLL, tokens, FLAGS.output, layers, heads)
  print(f"{FLAGS.output}: {width}x{height} px, {len(tokens)} tokens")
  return 0


if __name__ == "__main__":
  cli.run(main, FLAGS)
