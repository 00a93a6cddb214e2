"""Attention maps of a model for one text, drawn per layer and head into a PNG (the library
behind `python -m albert_jax.attention`).

    maps_KNLL = attention_maps(module, params, input_ids_L)  # [K, N, L, L]
    plot_attention_maps(maps_KNLL, tokens, "maps.png")

Row k, column n of the figure is applied layer k's head n: query tokens down, key tokens
across (each row of a panel sums to 1). K counts applied layers, `num_hidden_layers *
inner_group_num`, as `output_attentions` does (see `albert_jax.model.AlbertModel`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from albert_jax import files
from albert_jax.errors import UserError

CELL_INCHES = 1.6  # width and height of one panel
DPI = 100


def attention_maps(module, params, input_ids_L) -> np.ndarray:
  """Attention probabilities [K, N, L, L] of any ALBERT module (base or a head) on one text."""
  ids_1L = jnp.asarray(input_ids_L, jnp.int32)[None]
  out = module.apply({"params": params}, ids_1L, output_attentions=True)
  return np.asarray(out.attentions[:, 0], np.float32)


def figure_pixels(layers: int, heads: int) -> tuple[int, int]:
  """(width, height) in pixels of the PNG `plot_attention_maps` writes for that grid."""
  return round(heads * CELL_INCHES * DPI), round(layers * CELL_INCHES * DPI)


def plot_attention_maps(
  maps_KNLL: np.ndarray,
  tokens: Sequence[str],
  path: str,
  layers: Sequence[int] | None = None,
  heads: Sequence[int] | None = None,
) -> tuple[int, int]:
  """Draws maps (rows: `layers`, columns: `heads`; default all) into the PNG `path`.

  Returns the PNG's (width, height) in pixels, `figure_pixels(len(layers), len(heads))`.
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  k, n, length, _ = maps_KNLL.shape
  layers = list(range(k)) if layers is None else list(layers)
  heads = list(range(n)) if heads is None else list(heads)
  for what, chosen, count in (("layer", layers, k), ("head", heads, n)):
    bad = [i for i in chosen if not 0 <= i < count]
    if bad or not chosen:
      raise UserError(f"{what}s {bad or chosen} are not in 0..{count - 1}; choose from those.")
  if len(tokens) != length:
    raise ValueError(f"{len(tokens)} tokens for maps of length {length}")

  fig, grid = plt.subplots(
    len(layers),
    len(heads),
    figsize=(len(heads) * CELL_INCHES, len(layers) * CELL_INCHES),
    dpi=DPI,
    squeeze=False,
  )
  small = max(3, 8 - length // 8)  # font size for tick labels
  for r, layer in enumerate(layers):
    for c, head in enumerate(heads):
      ax = grid[r, c]
      ax.imshow(maps_KNLL[layer, head], vmin=0.0, vmax=1.0, cmap="viridis")
      ax.set_title(f"layer {layer} head {head}", fontsize=7)
      ax.set_xticks(range(length), tokens if r == len(layers) - 1 else [], rotation=90)
      ax.set_yticks(range(length), tokens if c == 0 else [])
      ax.tick_params(labelsize=small, length=0)
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=DPI)
  plt.close(fig)
  files.write_bytes(path, buffer.getvalue())
  return figure_pixels(len(layers), len(heads))
