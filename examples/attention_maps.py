"""An attention-map plot, per layer and head, of a tiny random ALBERT reading a sentence.

    python examples/attention_maps.py [--text "The cat sat on the mat."] [--output maps.png]

Tokenizes with the bundled 30k-clean vocabulary, runs the model with `output_attentions=True`
and draws every layer's heads with `albert_jax.attention_maps.plot_attention_maps` (the library
behind `python -m albert_jax.attention --model DIR`, which does the same for a real model).
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax

from albert_jax import AlbertConfig, AlbertModel, AlbertTokenizer
from albert_jax.attention_maps import attention_maps, plot_attention_maps

CONFIG = AlbertConfig(
  vocab_size=30000,  # the bundled tokenizer's
  embedding_size=16,
  hidden_size=32,
  num_hidden_layers=2,
  num_attention_heads=4,
  intermediate_size=64,
  max_position_embeddings=64,
  initializer_range=0.2,  # larger than ALBERT's 0.02, so that random maps are not uniform
)


def main(text: str = "The cat sat on the mat.", output: str = "maps.png", seed: int = 0):
  """Writes the PNG; returns (its (width, height) in pixels, the maps [K, N, L, L])."""
  tokenizer = AlbertTokenizer()
  ids = tokenizer.encode(text)
  model = AlbertModel(CONFIG)
  params = nn.unbox(model.init(jax.random.key(seed), [ids])["params"])
  maps_KNLL = attention_maps(model, params, ids)
  size = plot_attention_maps(maps_KNLL, tokenizer.convert_ids_to_tokens(ids), output)
  return size, maps_KNLL


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--text", default="The cat sat on the mat.")
  parser.add_argument("--output", default="maps.png")
  args = parser.parse_args()
  (width, height), maps = main(args.text, args.output)
  print(f"{args.output}: {width}x{height} px, {maps.shape[0]} layers x {maps.shape[1]} heads")
