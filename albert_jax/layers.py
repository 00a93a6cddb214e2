"""The building blocks of `albert_jax.model`: model options, Dense, LayerNorm, attention math.

`ModelOptions` says how the network runs (dtypes, scan or loop, remat, attention kernel), as
opposed to `AlbertConfig`, what it is. `Dense` creates its kernel at its real shape so its
logical axis names always fit; the `Layers` mixin builds `dense` / `layer_norm` with ALBERT's
initializer and epsilon from a module's `config` and `options`. `einsum_attention` is the
default attention math. Shape suffixes as in `albert_jax.model`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from albert_jax.config import ACTIVATIONS, AlbertConfig

Array = jax.Array
Dtype = Any


def activation(name: str):
  return ACTIVATIONS[name]


def normal_init(stddev: float, axes: tuple[str | None, ...]):
  """Truncation-free normal init (ALBERT's `initializer_range`), tagged with logical names."""
  return nn.with_logical_partitioning(nn.initializers.normal(stddev), axes)


def zeros_init(axes: tuple[str | None, ...]):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def ones_init(axes: tuple[str | None, ...]):
  return nn.with_logical_partitioning(nn.initializers.ones_init(), axes)


@dataclasses.dataclass(frozen=True)
class ModelOptions:
  """How the network is run, as opposed to what it is (`AlbertConfig`)."""

  dtype: Dtype = jnp.float32  # compute dtype (f32 or bf16)
  param_dtype: Dtype = jnp.float32  # storage dtype of the parameters
  scan_layers: bool = True  # nn.scan the shared block (True) or loop over it in Python
  remat_policy: str | None = None  # a jax.checkpoint_policies name; None: no remat
  attention_implementation: str | None = None  # one of ATTENTION_IMPLEMENTATIONS


class Dense(nn.Module):
  """x @ kernel + bias over the last `in_dims` axes, with kernel shape (*in, *features).

  Unlike `nn.DenseGeneral`, the kernel is initialised at its real (possibly 3-D) shape, so its
  logical axis names (`axes`, one per kernel dim) always match it, also under a mesh.
  """

  features: tuple[int, ...]  # output shape, e.g. (hidden,) or (heads, head_dim)
  axes: tuple[str | None, ...]  # logical names of the kernel's axes
  stddev: float  # kernel init std (ALBERT's initializer_range)
  in_dims: int = 1  # how many trailing input axes are contracted
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    in_shape = x.shape[x.ndim - self.in_dims :]
    kernel = self.param(
      "kernel", normal_init(self.stddev, self.axes), (*in_shape, *self.features), self.param_dtype
    )
    bias = self.param(
      "bias", zeros_init(self.axes[self.in_dims :]), self.features, self.param_dtype
    )
    # One 2-D [rows, in] @ [in, out] GEMM whatever the ranks: XLA's CPU backward runs ~10%
    # faster than with multi-axis dot_general contractions (benchmarks/profile_albert.py).
    lead = x.shape[: x.ndim - self.in_dims]
    n_in, n_out = math.prod(in_shape), math.prod(self.features)
    x_RI = x.astype(self.dtype).reshape(-1, n_in)
    y_RO = x_RI @ kernel.astype(self.dtype).reshape(n_in, n_out)
    return y_RO.reshape(*lead, *self.features) + bias.astype(self.dtype)


class Layers:
  """A mixin: `dense` and `layer_norm` built from the module's `config` (AlbertConfig) and
  `options` (ModelOptions)."""

  def dense(
    self, features: int | tuple[int, ...], axes: Sequence[str | None], name: str, in_dims=1
  ) -> Dense:
    """A `Dense` with ALBERT's init; `features` an int or a tuple (e.g. (heads, head_dim))."""
    return Dense(
      features=features if isinstance(features, tuple) else (features,),
      axes=tuple(axes),
      stddev=self.config.initializer_range,
      in_dims=in_dims,
      dtype=self.options.dtype,
      param_dtype=self.options.param_dtype,
      name=name,
    )

  def layer_norm(self, axis_name: str, name: str | None = None) -> nn.LayerNorm:
    """Flax's LayerNorm (params `scale`, `bias`; statistics in float32 whatever `dtype`) with
    ALBERT's epsilon and the logical name of the normalized axis.

    Two-pass variance, as HF/PyTorch compute it: the one-pass E[x^2] - E[x]^2 form is about 2x
    faster on CPU but loses float32 precision when |mean| >> std.
    """
    return nn.LayerNorm(
      epsilon=self.config.layer_norm_eps,
      use_fast_variance=False,
      dtype=self.options.dtype,
      param_dtype=self.options.param_dtype,
      scale_init=ones_init((axis_name,)),
      bias_init=zeros_init((axis_name,)),
      name=name,
    )


class AlbertSubmodule(Layers, nn.Module):
  """A part of the network: the ALBERT config and the model options, passed down whole."""

  config: AlbertConfig  # what the network is
  options: ModelOptions = ModelOptions()  # how it is run


ATTENTION_IMPLEMENTATIONS = (None, "einsum", "xla", "cudnn")


def einsum_attention(
  q_BLND, k_BLND, v_BLND, mask_B1XL, dropout=None, head_mask_N=None
) -> tuple[Array, Array]:
  """softmax(q k^T / sqrt(D) + mask) v, computed heads-major ([B, N, L, D]).

  The same math as `jax.nn.dot_product_attention`'s XLA path (logits and softmax in float32),
  laid out so both batched GEMMs have (batch, heads) leading: on CPU that avoids the transposed
  probability copy XLA otherwise makes and the forward runs ~4% faster. `dropout`, if given,
  is applied to the probabilities, then `head_mask_N` multiplies each head's (as HF's
  `head_mask`). Returns the context [B, L, N, D] and the probabilities [B, N, L, L] that made it.
  """
  dtype = q_BLND.dtype
  q_BNLD, k_BNLD, v_BNLD = (jnp.transpose(t, (0, 2, 1, 3)) for t in (q_BLND, k_BLND, v_BLND))
  scale = q_BLND.shape[-1] ** -0.5
  logits_BNLL = jnp.einsum(
    "bnqd,bnkd->bnqk", q_BNLD * scale, k_BNLD, preferred_element_type=jnp.float32
  )
  logits_BNLL = jnp.where(mask_B1XL, logits_BNLL, jnp.finfo(jnp.float32).min)
  probs_BNLL = jax.nn.softmax(logits_BNLL).astype(dtype)
  if dropout is not None:
    probs_BNLL = dropout(probs_BNLL)
  if head_mask_N is not None:
    probs_BNLL = probs_BNLL * head_mask_N.astype(dtype)[None, :, None, None]
  ctx_BNLD = jnp.einsum("bnqk,bnkd->bnqd", probs_BNLL, v_BNLD)
  return jnp.transpose(ctx_BNLD, (0, 2, 1, 3)), probs_BNLL
