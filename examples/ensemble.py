"""An ensemble over seeds with `jax.vmap` of init and apply: M models in one program.

    python examples/ensemble.py [--members 4]

`jax.vmap(init)` over M keys stacks M parameter trees (a leading axis on every leaf);
`jax.vmap(apply)` runs all members on one batch. Averaging their probabilities gives the
ensemble's prediction; the spread across members is a cheap uncertainty estimate.
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import numpy as np

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
MODEL = AlbertForSequenceClassification(CONFIG, num_labels=2)


def init(key, ids):
  return nn.unbox(MODEL.init(key, ids)["params"])


def apply(params, ids):
  return MODEL.apply({"params": params}, ids).logits


def main(members: int = 4, batch: int = 4, seed: int = 0) -> dict:
  """Stacked params, per-member logits [M, B, 2] and the ensemble's mean probabilities."""
  ids = np.random.RandomState(seed).randint(5, CONFIG.vocab_size, (batch, 8)).astype(np.int32)
  keys = jax.random.split(jax.random.key(seed), members)
  params = jax.jit(jax.vmap(init, in_axes=(0, None)))(keys, ids)
  logits = jax.jit(jax.vmap(apply, in_axes=(0, None)))(params, ids)
  probs = jax.nn.softmax(logits, -1)
  return {
    "keys": keys,
    "ids": ids,
    "params": params,
    "logits": np.asarray(logits),
    "mean_probs": np.asarray(probs.mean(0)),
    "std_probs": np.asarray(probs.std(0)),
  }


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--members", type=int, default=4)
  args = parser.parse_args()
  r = main(args.members)
  for b, (m, s) in enumerate(zip(r["mean_probs"], r["std_probs"], strict=True)):
    print(f"example {b}: P(label 1) = {m[1]:.4f} +- {s[1]:.4f} over {args.members} members")
