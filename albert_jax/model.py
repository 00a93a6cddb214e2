"""ALBERT's encoder in flax.linen: factorized embeddings, one shared block, scanned.

ALBERT shares one transformer block across all layers. Here that is literal: the block's
parameters appear once in the tree (no layer axis) and `nn.scan` applies it
`num_hidden_layers` times with the parameters broadcast, so the block is compiled once
whatever the depth. A plain Python loop over the same module (`scan_layers=False`) gives the
same numbers and exists for debugging and for compile-time comparisons.

Shape suffixes: B batch, L sequence length, E embedding width (factorized), H hidden width,
N attention heads, D head width, F FFN width, V vocabulary.

Logical axis names (mapped to mesh axes in `albert_jax.sharding`, never here):
parameters and activations use the names in `albert_jax.axes` (VOCAB, EMBEDDING_WIDTH (E),
HIDDEN (H), HEADS, HEAD_DIM, MLP; BATCH, LENGTH, ACT_HIDDEN, ACT_HEADS, ACT_MLP).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from albert_jax import axes
from albert_jax.config import AlbertConfig

Array = jax.Array
Dtype = Any

_ACTIVATIONS = {
  "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
  "gelu_fast": functools.partial(jax.nn.gelu, approximate=True),
  "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
  "gelu": functools.partial(jax.nn.gelu, approximate=False),
  "relu": jax.nn.relu,
  "silu": jax.nn.silu,
  "swish": jax.nn.silu,
}


def activation(name: str):
  return _ACTIVATIONS[name]


def normal_init(config: AlbertConfig, axes: tuple[str | None, ...]):
  """Truncation-free normal init with ALBERT's std, tagged with logical axis names."""
  return nn.with_logical_partitioning(nn.initializers.normal(config.initializer_range), axes)


def zeros_init(axes: tuple[str | None, ...]):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def ones_init(axes: tuple[str | None, ...]):
  return nn.with_logical_partitioning(nn.initializers.ones_init(), axes)


def layer_norm(
  eps: float, axis_name: str, dtype: Dtype, param_dtype: Dtype, name: str | None = None
) -> nn.LayerNorm:
  """Flax's LayerNorm (params `scale`, `bias`; statistics in float32 whatever `dtype`) with
  ALBERT's epsilon and the logical name of the normalized axis.

  Two-pass variance, as HF/PyTorch compute it: the one-pass E[x^2] - E[x]^2 form is about 2x
  faster on CPU but loses float32 precision when |mean| >> std.
  """
  return nn.LayerNorm(
    epsilon=eps,
    use_fast_variance=False,
    dtype=dtype,
    param_dtype=param_dtype,
    scale_init=ones_init((axis_name,)),
    bias_init=zeros_init((axis_name,)),
    name=name,
  )


class Dense(nn.Module):
  """x @ kernel + bias over the last `in_dims` axes, with kernel shape (*in, *features).

  Unlike `nn.DenseGeneral`, the kernel is initialised at its real (possibly 3-D) shape, so its
  logical axis names (`axes`, one per kernel dim) always match it, also under a mesh.
  """

  features: tuple[int, ...]
  axes: tuple[str | None, ...]  # logical names of the kernel's axes
  config: AlbertConfig
  in_dims: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    in_shape = x.shape[x.ndim - self.in_dims :]
    kernel = self.param(
      "kernel", normal_init(self.config, self.axes), (*in_shape, *self.features), self.param_dtype
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


def dense(features, config: AlbertConfig, axes, dtype, param_dtype, name, in_dims=1) -> Dense:
  """A `Dense` with ALBERT's init; `features` an int or a tuple (e.g. (heads, head_dim))."""
  features = features if isinstance(features, tuple) else (features,)
  return Dense(features, tuple(axes), config, in_dims, dtype, param_dtype, name=name)


class AlbertEmbeddings(nn.Module):
  """word + position + token-type embeddings (width E) -> LayerNorm -> dropout."""

  config: AlbertConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    c = self.config
    embed = functools.partial(
      nn.Embed, features=c.embedding_size, dtype=self.dtype, param_dtype=self.param_dtype
    )
    self.word_embeddings = embed(
      c.vocab_size, embedding_init=normal_init(c, (axes.VOCAB, axes.EMBEDDING_WIDTH))
    )
    self.position_embeddings = embed(
      c.max_position_embeddings, embedding_init=normal_init(c, (None, axes.EMBEDDING_WIDTH))
    )
    self.token_type_embeddings = embed(
      c.type_vocab_size, embedding_init=normal_init(c, (None, axes.EMBEDDING_WIDTH))
    )
    self.LayerNorm = layer_norm(
      c.layer_norm_eps, axes.EMBEDDING_WIDTH, self.dtype, self.param_dtype
    )
    self.dropout = nn.Dropout(c.hidden_dropout_prob)

  def __call__(self, input_ids_BL, token_type_ids_BL, position_ids_BL, deterministic):
    x_BLE = (
      self.word_embeddings(input_ids_BL)
      + self.position_embeddings(position_ids_BL)
      + self.token_type_embeddings(token_type_ids_BL)
    )
    x_BLE = self.LayerNorm(x_BLE)
    return self.dropout(x_BLE, deterministic=deterministic)

  def attend(self, x_BPE: Array) -> Array:
    """Logits against the word embedding matrix (the tied MLM decoder): [..., E] -> [..., V]."""
    return self.word_embeddings.attend(x_BPE)


ATTENTION_IMPLEMENTATIONS = (None, "einsum", "xla", "cudnn")


def einsum_attention(q_BLND, k_BLND, v_BLND, mask_B11L, dropout=None) -> Array:
  """softmax(q k^T / sqrt(D) + mask) v, computed heads-major ([B, N, L, D]).

  The same math as `jax.nn.dot_product_attention`'s XLA path (logits and softmax in float32),
  laid out so both batched GEMMs have (batch, heads) leading: on CPU that avoids the transposed
  probability copy XLA otherwise makes and the forward runs ~4% faster. `dropout`, if given,
  is applied to the probabilities.
  """
  dtype = q_BLND.dtype
  q_BNLD, k_BNLD, v_BNLD = (jnp.transpose(t, (0, 2, 1, 3)) for t in (q_BLND, k_BLND, v_BLND))
  scale = q_BLND.shape[-1] ** -0.5
  logits_BNLL = jnp.einsum(
    "bnqd,bnkd->bnqk", q_BNLD * scale, k_BNLD, preferred_element_type=jnp.float32
  )
  logits_BNLL = jnp.where(mask_B11L, logits_BNLL, jnp.finfo(jnp.float32).min)
  probs_BNLL = jax.nn.softmax(logits_BNLL).astype(dtype)
  if dropout is not None:
    probs_BNLL = dropout(probs_BNLL)
  ctx_BNLD = jnp.einsum("bnqk,bnkd->bnqd", probs_BNLL, v_BNLD)
  return jnp.transpose(ctx_BNLD, (0, 2, 1, 3))


class AlbertAttention(nn.Module):
  """Self-attention, output projection, dropout, residual and post-LayerNorm."""

  config: AlbertConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  attention_implementation: str | None = None  # see ATTENTION_IMPLEMENTATIONS

  @nn.compact
  def __call__(self, x_BLH: Array, mask_B11L: Array, deterministic: bool) -> Array:
    c = self.config
    nd = (c.num_attention_heads, c.head_dim)
    proj = functools.partial(
      dense, nd, c, (axes.HIDDEN, axes.HEADS, axes.HEAD_DIM), self.dtype, self.param_dtype
    )
    q_BLND = proj(name="query")(x_BLH)
    k_BLND = proj(name="key")(x_BLH)
    v_BLND = proj(name="value")(x_BLH)
    q_BLND = nn.with_logical_constraint(q_BLND, (axes.BATCH, axes.LENGTH, axes.ACT_HEADS, None))

    rate = c.attention_probs_dropout_prob
    impl = self.attention_implementation
    if impl not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(
        f"attention_implementation={impl!r} is not one of {ATTENTION_IMPLEMENTATIONS}: None or "
        "'einsum' for the heads-major einsum path, 'xla' or 'cudnn' for "
        "jax.nn.dot_product_attention with that implementation."
      )
    if impl in ("xla", "cudnn") and (deterministic or rate == 0.0):
      ctx_BLND = jax.nn.dot_product_attention(
        q_BLND, k_BLND, v_BLND, mask=mask_B11L, implementation=impl
      )
    else:  # the einsum path; also the only one with attention-probability dropout (ALBERT v1)
      dropout = None
      if not deterministic and rate > 0.0:
        dropout = functools.partial(nn.Dropout(rate), deterministic=False)
      ctx_BLND = einsum_attention(q_BLND, k_BLND, v_BLND, mask_B11L, dropout)

    out_BLH = dense(
      c.hidden_size,
      c,
      (axes.HEADS, axes.HEAD_DIM, axes.HIDDEN),
      self.dtype,
      self.param_dtype,
      name="dense",
      in_dims=2,
    )(ctx_BLND)
    out_BLH = nn.Dropout(c.hidden_dropout_prob)(out_BLH, deterministic=deterministic)
    norm = layer_norm(c.layer_norm_eps, axes.HIDDEN, self.dtype, self.param_dtype, name="LayerNorm")
    return norm(x_BLH + out_BLH)


class AlbertLayer(nn.Module):
  """One post-LN transformer block: attention, then GELU FFN with residual and LayerNorm."""

  config: AlbertConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  attention_implementation: str | None = None

  @nn.compact
  def __call__(self, x_BLH: Array, mask_B11L: Array, deterministic: bool) -> Array:
    c = self.config
    a_BLH = AlbertAttention(
      c, self.dtype, self.param_dtype, self.attention_implementation, name="attention"
    )(x_BLH, mask_B11L, deterministic)
    h_BLF = dense(
      c.intermediate_size, c, (axes.HIDDEN, axes.MLP), self.dtype, self.param_dtype, name="ffn"
    )(a_BLH)
    h_BLF = activation(c.hidden_act)(h_BLF)
    h_BLF = nn.with_logical_constraint(h_BLF, (axes.BATCH, axes.LENGTH, axes.ACT_MLP))
    h_BLH = dense(
      c.hidden_size, c, (axes.MLP, axes.HIDDEN), self.dtype, self.param_dtype, name="ffn_output"
    )(h_BLF)
    h_BLH = nn.Dropout(c.hidden_dropout_prob)(h_BLH, deterministic=deterministic)
    norm = layer_norm(
      c.layer_norm_eps, axes.HIDDEN, self.dtype, self.param_dtype, name="full_layer_layer_norm"
    )
    return norm(h_BLH + a_BLH)


class AlbertLayerGroup(nn.Module):
  """`inner_group_num` distinct layers applied in sequence; one step of the shared scan.

  The signature `(carry, mask) -> (carry, None)` is what `nn.scan` expects.
  """

  config: AlbertConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  attention_implementation: str | None = None
  deterministic: bool = True

  @nn.compact
  def __call__(self, x_BLH: Array, mask_B11L: Array) -> tuple[Array, None]:
    for i in range(self.config.inner_group_num):
      x_BLH = AlbertLayer(
        self.config,
        self.dtype,
        self.param_dtype,
        self.attention_implementation,
        name=f"albert_layers_{i}",
      )(x_BLH, mask_B11L, self.deterministic)
    x_BLH = nn.with_logical_constraint(x_BLH, (axes.BATCH, axes.LENGTH, axes.ACT_HIDDEN))
    return x_BLH, None


@flax.struct.dataclass
class AlbertModelOutput:
  last_hidden_state: Array  # [B, L, H]
  pooler_output: Array | None  # [B, H]; None without the pooler


# The training CLIs' default remat policy: keep the projection/FFN matmul outputs, recompute the
# rest (attention, GELU, LayerNorm) in the backward pass. On the 2-core CPU it makes the
# albert-large-v2 training step ~15% faster than no remat and needs ~1/4 of the activation
# memory (storing every elementwise residual of the scanned block costs more than recomputing it).
TRAIN_REMAT_POLICY = "dots_with_no_batch_dims_saveable"


def _remat_policy(name: str | None):
  if name in (None, "none"):
    return None
  policy = getattr(jax.checkpoint_policies, name, None)
  if policy is None:
    known = sorted(p for p in dir(jax.checkpoint_policies) if not p.startswith("_"))
    raise ValueError(
      f"remat_policy={name!r} is not a jax.checkpoint_policies name; use None or one of {known}."
    )
  return policy


class AlbertTransformer(nn.Module):
  """E -> H projection, then the shared group(s) applied `num_hidden_layers` times.

  With `num_hidden_groups` G > 1, layers are split into G contiguous runs of L / G, each run
  applying its own group (as HF transformers assigns `group_idx = layer // (L / G)`).
  """

  config: AlbertConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  scan_layers: bool = True
  remat_policy: str | None = None
  attention_implementation: str | None = None

  @nn.compact
  def __call__(self, x_BLE: Array, mask_B11L: Array, deterministic: bool) -> Array:
    c = self.config
    x_BLH = dense(
      c.hidden_size,
      c,
      (axes.EMBEDDING_WIDTH, axes.HIDDEN),
      self.dtype,
      self.param_dtype,
      name="embedding_hidden_mapping_in",
    )(x_BLE)
    x_BLH = nn.with_logical_constraint(x_BLH, (axes.BATCH, axes.LENGTH, axes.ACT_HIDDEN))

    group_cls = AlbertLayerGroup
    policy = _remat_policy(self.remat_policy)
    if self.remat_policy not in (None, "none"):
      group_cls = nn.remat(group_cls, policy=policy, prevent_cse=not self.scan_layers)
    for g in range(c.num_hidden_groups):
      kwargs = dict(
        config=c,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        attention_implementation=self.attention_implementation,
        deterministic=deterministic,
        name=f"albert_layer_groups_{g}",
      )
      if self.scan_layers:
        scanned = nn.scan(
          group_cls,
          variable_broadcast="params",  # ONE copy of the group's weights, reused each step
          variable_axes={"intermediates": 0},  # anything sown is stacked per layer
          split_rngs={"params": False, "dropout": True},  # fresh dropout per layer
          in_axes=(nn.broadcast,),
          length=c.layers_per_group,
        )
        x_BLH, _ = scanned(**kwargs)(x_BLH, mask_B11L)
      else:
        group = group_cls(**kwargs)
        for _ in range(c.layers_per_group):
          x_BLH, _ = group(x_BLH, mask_B11L)
    return x_BLH


class AlbertModel(nn.Module):
  """The ALBERT encoder with its tanh pooler. Returns `AlbertModelOutput`.

  Model options (not ALBERT config): `dtype` is the compute dtype (f32 or bf16), `param_dtype`
  the storage dtype of parameters, `scan_layers` scans the shared block (default) or loops,
  `remat_policy` names a `jax.checkpoint_policies` entry (None = no remat),
  `attention_implementation` None/"einsum" uses `einsum_attention` (XLA, heads-major), "xla" or
  "cudnn" call `jax.nn.dot_product_attention` with that implementation ("cudnn": cuDNN flash
  attention on GPU); attention-probability dropout in training always takes the einsum path.
  """

  config: AlbertConfig
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  scan_layers: bool = True
  remat_policy: str | None = None
  attention_implementation: str | None = None
  add_pooling_layer: bool = True

  def setup(self):
    c = self.config
    self.embeddings = AlbertEmbeddings(c, self.dtype, self.param_dtype)
    self.encoder = AlbertTransformer(
      c,
      self.dtype,
      self.param_dtype,
      self.scan_layers,
      self.remat_policy,
      self.attention_implementation,
    )
    if self.add_pooling_layer:
      self.pooler = dense(
        c.hidden_size, c, (axes.HIDDEN, None), self.dtype, self.param_dtype, name="pooler"
      )

  def __call__(
    self,
    input_ids: Array,
    attention_mask: Array | None = None,
    token_type_ids: Array | None = None,
    position_ids: Array | None = None,
    deterministic: bool = True,
  ):
    """input_ids, attention_mask, token_type_ids, position_ids: int [B, L]."""
    input_ids_BL = jnp.asarray(input_ids)
    if input_ids_BL.ndim != 2:
      raise ValueError(f"input_ids must be [batch, seq_len]; got shape {input_ids_BL.shape}.")
    batch, length = input_ids_BL.shape
    if length > self.config.max_position_embeddings:
      raise ValueError(
        f"Sequence length {length} is longer than max_position_embeddings="
        f"{self.config.max_position_embeddings}; truncate the input (tokenizer "
        f"truncation=True, max_length={self.config.max_position_embeddings})."
      )
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids_BL)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids_BL)
    if position_ids is None:
      position_ids = jnp.broadcast_to(jnp.arange(length), (batch, length))
    for name, a in (
      ("attention_mask", attention_mask),
      ("token_type_ids", token_type_ids),
      ("position_ids", position_ids),
    ):
      if a.shape != input_ids_BL.shape:
        raise ValueError(
          f"{name} has shape {a.shape}; it must match input_ids {input_ids_BL.shape}."
        )

    x_BLE = self.embeddings(input_ids_BL, token_type_ids, position_ids, deterministic)
    mask_B11L = attention_mask.astype(bool)[:, None, None, :]
    h_BLH = self.encoder(x_BLE, mask_B11L, deterministic)
    pooled_BH = None
    if self.add_pooling_layer:
      pooled_BH = jnp.tanh(self.pooler(h_BLH[:, 0]))
    return AlbertModelOutput(last_hidden_state=h_BLH, pooler_output=pooled_BH)

  def attend(self, x_BPE: Array) -> Array:
    return self.embeddings.attend(x_BPE)
