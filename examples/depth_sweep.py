"""A depth sweep of the shared block: the same parameters applied 1, 2, ..., k times.

    python examples/depth_sweep.py [--max_depth 8]

ALBERT's parameters do not depend on the depth, so `dataclasses.replace(config,
num_hidden_layers=d)` runs the very same weights at depth d. The sweep prints how far each
depth's output moves from the previous depth's (the shared block's iteration converging, or
not), from one set of parameters initialised at the default depth.
"""

from __future__ import annotations

import argparse
import dataclasses

import flax.linen as nn
import jax
import numpy as np

from albert_jax import AlbertConfig, AlbertModel

CONFIG = AlbertConfig(
  vocab_size=50,
  embedding_size=16,
  hidden_size=32,
  num_hidden_layers=4,
  num_attention_heads=4,
  intermediate_size=64,
  max_position_embeddings=16,
)


def main(max_depth: int = 8, seed: int = 0) -> dict:
  """Outputs [B, L, H] per depth 1..max_depth, and the relative change from depth d-1 to d."""
  ids = np.random.RandomState(seed).randint(5, CONFIG.vocab_size, (2, 10)).astype(np.int32)
  params = nn.unbox(AlbertModel(CONFIG).init(jax.random.key(seed), ids)["params"])
  outputs = {}
  for depth in range(1, max_depth + 1):
    model = AlbertModel(dataclasses.replace(CONFIG, num_hidden_layers=depth))
    outputs[depth] = np.asarray(model.apply({"params": params}, ids).last_hidden_state)
  change = {
    d: float(np.linalg.norm(outputs[d] - outputs[d - 1]) / np.linalg.norm(outputs[d - 1]))
    for d in range(2, max_depth + 1)
  }
  return {"ids": ids, "params": params, "outputs": outputs, "change": change}


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--max_depth", type=int, default=8)
  args = parser.parse_args()
  for depth, c in main(args.max_depth)["change"].items():
    print(f"depth {depth}: relative change from depth {depth - 1}: {c:.4f}")
