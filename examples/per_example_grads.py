"""Per-example gradients of a classifier's loss with `jax.vmap(jax.grad(...))`.

    python examples/per_example_grads.py [--batch 8]

One gradient per example, in one compiled call (for influence functions, DP-SGD clipping or
gradient-noise studies); the example prints each example's gradient norm.
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from albert_jax import AlbertConfig, AlbertForSequenceClassification

CONFIG = AlbertConfig(
  vocab_size=50,
  embedding_size=16,
  hidden_size=32,
  num_hidden_layers=2,
  num_attention_heads=4,
  intermediate_size=64,
  max_position_embeddings=16,
)


def setup(batch: int = 8, length: int = 10, seed: int = 0):
  """params, a batch (ids [B, L], mask [B, L], labels [B]) and loss(params, ids_L, mask_L, y)."""
  model = AlbertForSequenceClassification(CONFIG, num_labels=3)
  rng = np.random.RandomState(seed)
  ids = rng.randint(5, CONFIG.vocab_size, (batch, length)).astype(np.int32)
  mask = (np.arange(length)[None] < rng.randint(2, length + 1, (batch, 1))).astype(np.int32)
  labels = rng.randint(0, 3, batch)
  params = nn.unbox(model.init(jax.random.key(seed), ids)["params"])

  def loss(params, ids_L, mask_L, label):  # one example
    logits = model.apply({"params": params}, ids_L[None], mask_L[None]).logits[0]
    return optax.softmax_cross_entropy_with_integer_labels(logits, label)

  return params, (ids, mask, labels), loss


def per_example_grads(loss, params, batch):
  """A gradient tree whose leaves have a leading batch axis."""
  return jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0, 0)))(params, *batch)


def main(batch: int = 8, seed: int = 0):
  """The per-example gradients and their global norms [B]."""
  params, data, loss = setup(batch, seed=seed)
  grads = per_example_grads(loss, params, data)
  norms = jnp.sqrt(sum(jnp.sum(g.reshape(batch, -1) ** 2, 1) for g in jax.tree.leaves(grads)))
  return grads, np.asarray(norms)


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=8)
  args = parser.parse_args()
  _, norms = main(args.batch)
  print("per-example gradient norms:", np.array2string(norms, precision=4))
