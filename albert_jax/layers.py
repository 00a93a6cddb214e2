"""The building blocks of `albert_jax.model`: model options, Dense, LayerNorm, attention math.

`ModelOptions` says how the network runs (dtypes, scan or loop, remat, attention kernel), as
opposed to `AlbertConfig`, what it is; both are checked when they are built. `AlbertModule`,
the base of every module of the network, has the two as its fields and passes them down whole.
`Dense` creates its kernel at its real shape so its logical axis names always fit; `Layers`
builds `dense` / `layer_norm` with ALBERT's initializer and epsilon from a module's `config`
and `options`. `einsum_attention` is the default attention math. Shape suffixes as in
`albert_jax.model`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from albert_jax.config import ACTIVATIONS, AlbertConfig
from albert_jax.errors import UserError

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


# None or "einsum": `einsum_attention` (heads-major, compiled by XLA); "xla" or "cudnn":
# `jax.nn.dot_product_attention` with that implementation ("cudnn": cuDNN flash attention on
# GPU). Attention-probability dropout in training, `output_attentions` and `head_mask` always
# take the einsum path.
ATTENTION_IMPLEMENTATIONS = (None, "einsum", "xla", "cudnn")


@dataclasses.dataclass(frozen=True)
class ModelOptions:
  """How the network is run, as opposed to what it is (`AlbertConfig`); checked when built.

  Every module takes these as its `options` field, or its fields as keyword arguments
  (`AlbertModel(config, dtype=jnp.bfloat16)`), folded into `options` when the module is built.
  """

  dtype: Dtype = jnp.float32  # compute dtype: a floating dtype or its name ("bfloat16")
  param_dtype: Dtype = jnp.float32  # storage dtype of the parameters, the same forms
  scan_layers: bool = True  # nn.scan the shared block (True) or loop over it in Python
  remat_policy: str | None = None  # a jax.checkpoint_policies name; None or "none": no remat
  attention_implementation: str | None = None  # one of ATTENTION_IMPLEMENTATIONS

  def __post_init__(self):
    for name in ("dtype", "param_dtype"):
      object.__setattr__(self, name, _floating_dtype(name, getattr(self, name)))
    if not isinstance(self.scan_layers, bool):
      raise UserError(f"scan_layers={self.scan_layers!r}: use True (nn.scan) or False (a loop).")
    if self.remat_policy == "none":
      object.__setattr__(self, "remat_policy", None)
    known = sorted(p for p in dir(jax.checkpoint_policies) if not p.startswith("_"))
    if self.remat_policy is not None and self.remat_policy not in known:
      raise UserError(
        f"remat_policy={self.remat_policy!r} is not a jax.checkpoint_policies name; use None "
        f"(no remat) or one of {known}."
      )
    if self.attention_implementation not in ATTENTION_IMPLEMENTATIONS:
      raise UserError(
        f"attention_implementation={self.attention_implementation!r} is not one of "
        f"{ATTENTION_IMPLEMENTATIONS}: None or 'einsum' for the heads-major einsum path, 'xla' "
        "or 'cudnn' for jax.nn.dot_product_attention with that implementation."
      )

  @property
  def remat(self):
    """The `jax.checkpoint_policies` entry named by `remat_policy` (None: no remat)."""
    return (
      None if self.remat_policy is None else getattr(jax.checkpoint_policies, self.remat_policy)
    )


def _floating_dtype(name: str, value: Any) -> np.dtype:
  """`value` (a dtype, a scalar type such as jnp.bfloat16, or a name) as a floating np.dtype."""
  try:
    dtype = None if value is None else jnp.dtype(value)
  except (TypeError, ValueError):
    dtype = None
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise UserError(f"{name}={value!r}: use a floating dtype such as 'float32' or 'bfloat16'.")
  return dtype


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


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(ModelOptions))


class _FoldsOptionKeywords(type):
  """Lets a module take the `ModelOptions` fields as keyword arguments: `AlbertModel(config,
  dtype=jnp.bfloat16)` builds `AlbertModel(config, options=ModelOptions(dtype=jnp.bfloat16))`
  (HF's habit of passing `dtype` to the model class)."""

  def __call__(cls, *args, **kwargs):
    given = {name: kwargs.pop(name) for name in OPTION_NAMES if name in kwargs}
    if given:
      kwargs["options"] = dataclasses.replace(kwargs.get("options", ModelOptions()), **given)
    return super().__call__(*args, **kwargs)


class AlbertModule(Layers, nn.Module, metaclass=_FoldsOptionKeywords):
  """A module of the network: the ALBERT config and the model options, passed down whole."""

  config: AlbertConfig  # what the network is
  options: ModelOptions = ModelOptions()  # how it is run


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
