"""Integrated gradients over `inputs_embeds` for a classifier (Sundararajan et al., 2017).

    python examples/integrated_gradients.py [--steps 32]

attribution = (x - x') * mean over the midpoints a_i = (i + 1/2) / m of grad f(x' + a_i (x - x')),
with x the word embeddings of a text, x' = 0 the baseline and f one class logit of a tiny
random `AlbertForSequenceClassification`. Completeness: the attributions sum to
f(x) - f(x'), up to the midpoint rule's error, at most max|g'''| / (24 m^2) for
g(a) = f(x' + a (x - x')).
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
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
  initializer_range=0.2,  # a less flat function than ALBERT's 0.02 init gives
)


def setup(seed: int = 0, length: int = 8):
  """The classifier, its params, a text's ids [1, L] and f(embeds [1, L, E]) -> class 1 logit."""
  model = AlbertForSequenceClassification(CONFIG, num_labels=2)
  ids = np.random.RandomState(seed).randint(5, CONFIG.vocab_size, (1, length)).astype(np.int32)
  params = nn.unbox(model.init(jax.random.key(seed), ids)["params"])

  def f(embeds_1LE):
    return model.apply({"params": params}, None, inputs_embeds=embeds_1LE).logits[0, 1]

  return model, params, ids, f


def integrated_gradients(f, x, baseline, steps: int):
  """Attributions, shaped like x, by the midpoint rule with `steps` points on the path."""
  alphas = (jnp.arange(steps) + 0.5) / steps
  path = baseline[None] + alphas[:, None, None, None] * (x - baseline)[None]
  grads = jax.vmap(jax.grad(f))(path)
  return (x - baseline) * grads.mean(0)


def main(steps: int = 32, seed: int = 0) -> dict:
  """Attributions per token, their sum and f(x) - f(baseline)."""
  _, params, ids, f = setup(seed)
  x = params["albert"]["embeddings"]["word_embeddings"]["embedding"][ids]  # [1, L, E]
  baseline = jnp.zeros_like(x)
  attributions = jax.jit(integrated_gradients, static_argnums=(0, 3))(f, x, baseline, steps)
  return {
    "per_token": np.asarray(attributions.sum(-1)[0]),
    "total": float(attributions.sum()),
    "difference": float(f(x) - f(baseline)),
  }


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=32)
  args = parser.parse_args()
  r = main(args.steps)
  print("attribution per token:", np.array2string(r["per_token"], precision=4))
  print(f"sum {r['total']:.6f}  f(x) - f(baseline) {r['difference']:.6f}")
