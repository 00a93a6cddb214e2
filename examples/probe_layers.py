"""Layer-wise linear probing of hidden states, on a planted signal.

    python examples/probe_layers.py [--examples 600]

Half of the random token sequences contain a marker token somewhere after [CLS], the other
half do not. A tiny random ALBERT reads them with `output_hidden_states=True`; for each entry
of `hidden_states` (the E -> H projection, then every layer) a ridge-regression probe on the
[CLS] vector is fit on one half and scored on the other. The projection is per token, so
entry 0 cannot see the marker (chance, 0.5); attention carries it to [CLS] in later layers.
"""

from __future__ import annotations

import argparse

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
MARKER = 7  # the planted token; other tokens are drawn from 10..vocab_size-1


def planted_data(n: int, length: int, seed: int):
  """ids [n, length] with [CLS]=2 first; labels [n] (1: the marker is somewhere in the text)."""
  rng = np.random.RandomState(seed)
  ids = rng.randint(10, CONFIG.vocab_size, (n, length))
  ids[:, 0] = 2
  labels = rng.randint(0, 2, n)
  where = rng.randint(1, length, n)
  ids[labels == 1, where[labels == 1]] = MARKER
  return ids.astype(np.int32), labels


def probe_accuracy(x_train, y_train, x_test, y_test, ridge: float = 1e-2) -> float:
  """Accuracy of a ridge least-squares linear probe (targets +-1, standardized features)."""
  mean, std = x_train.mean(0), x_train.std(0) + 1e-6
  a, b = (x_train - mean) / std, (x_test - mean) / std
  a, b = np.hstack([a, np.ones((len(a), 1))]), np.hstack([b, np.ones((len(b), 1))])
  w = np.linalg.solve(a.T @ a + ridge * len(a) * np.eye(a.shape[1]), a.T @ (2.0 * y_train - 1))
  return float(((b @ w > 0) == (y_test == 1)).mean())


def main(examples: int = 600, length: int = 12, seed: int = 0) -> list[float]:
  """Probe accuracy on held-out examples for each entry of `hidden_states` (num_layers + 1)."""
  model = AlbertModel(CONFIG)
  ids, labels = planted_data(examples, length, seed)
  params = nn.unbox(model.init(jax.random.key(seed), ids[:1])["params"])
  out = jax.jit(lambda p, x: model.apply({"params": p}, x, output_hidden_states=True))(params, ids)
  cls_SXH = np.asarray(out.hidden_states[:, :, 0])  # [S, examples, H]
  half = examples // 2
  return [probe_accuracy(h[:half], labels[:half], h[half:], labels[half:]) for h in cls_SXH]


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--examples", type=int, default=600)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  for k, acc in enumerate(main(args.examples, seed=args.seed)):
    print(f"hidden_states[{k}] ({'projection' if k == 0 else f'layer {k}'}): accuracy {acc:.3f}")
