"""ALBERT's encoder in flax.linen: factorized embeddings, one shared block, scanned.

ALBERT shares one transformer block across all layers. Here that is literal: the block's
parameters appear once in the tree (no layer axis) and `nn.scan` applies it
`num_hidden_layers` times with the parameters broadcast, so the block is compiled once
whatever the depth. A plain Python loop over the same module (`scan_layers=False`) gives the
same numbers and exists for debugging and for compile-time comparisons. Since no parameter
depends on the depth, the same parameters run at any depth k:
`dataclasses.replace(config, num_hidden_layers=k)` (k a multiple of `num_hidden_groups`).

Shape suffixes: B batch, L sequence length, E embedding width (factorized), H hidden width,
N attention heads, D head width, F FFN width, V vocabulary; K applied layers
(`num_hidden_layers * inner_group_num`), S = K + 1 hidden states, G layers per group
(`layers_per_group`), I inner layers of a group (`inner_group_num`); X is 1 or L: the
attention mask has one row of keys for every query ([B, 1, 1, L]) or one per query
([B, 1, L, L]).

The building blocks (model options, the modules' base class, Dense, LayerNorm, the attention
math) are in `albert_jax.layers`.

Logical axis names (mapped to mesh axes in `albert_jax.sharding`, never here):
parameters and activations use the names in `albert_jax.axes` (VOCAB, EMBEDDING_WIDTH (E),
HIDDEN (H), HEADS, HEAD_DIM, MLP; BATCH, LENGTH, ACT_HIDDEN, ACT_HEADS, ACT_MLP).
"""

from __future__ import annotations

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from albert_jax import axes
from albert_jax.config import AlbertConfig
from albert_jax.errors import UserError
from albert_jax.layers import AlbertModule, activation, einsum_attention, normal_init

Array = jax.Array


class AlbertEmbeddings(AlbertModule):
  """word + position + token-type embeddings (width E) -> LayerNorm -> dropout."""

  def setup(self):
    c = self.config
    embed = functools.partial(
      nn.Embed,
      features=c.embedding_size,
      dtype=self.options.dtype,
      param_dtype=self.options.param_dtype,
    )
    std = c.initializer_range
    self.word_embeddings = embed(
      c.vocab_size, embedding_init=normal_init(std, (axes.VOCAB, axes.EMBEDDING_WIDTH))
    )
    self.position_embeddings = embed(
      c.max_position_embeddings, embedding_init=normal_init(std, (None, axes.EMBEDDING_WIDTH))
    )
    self.token_type_embeddings = embed(
      c.type_vocab_size, embedding_init=normal_init(std, (None, axes.EMBEDDING_WIDTH))
    )
    self.LayerNorm = self.layer_norm(axes.EMBEDDING_WIDTH)
    self.dropout = nn.Dropout(c.hidden_dropout_prob)

  def __call__(
    self, input_ids_BL, token_type_ids_BL, position_ids_BL, deterministic, inputs_embeds_BLE=None
  ):
    """`inputs_embeds_BLE`, if given, replaces the word-embedding lookup of `input_ids_BL`."""
    if inputs_embeds_BLE is None:
      words_BLE = self.word_embeddings(input_ids_BL)
    else:
      words_BLE = inputs_embeds_BLE.astype(self.options.dtype)
    x_BLE = (
      words_BLE
      + self.position_embeddings(position_ids_BL)
      + self.token_type_embeddings(token_type_ids_BL)
    )
    x_BLE = self.LayerNorm(x_BLE)
    return self.dropout(x_BLE, deterministic=deterministic)

  def attend(self, x_BPE: Array) -> Array:
    """Logits against the word embedding matrix (the tied MLM decoder): [..., E] -> [..., V]."""
    return self.word_embeddings.attend(x_BPE)


class BlockModule(AlbertModule):
  """A part of the shared block. What a call computes is fixed when the part is built (the
  fields below, static under jit and nn.scan); the arrays are the call's arguments."""

  deterministic: bool = True  # no dropout
  output_attentions: bool = False  # also return the attention probabilities


class AlbertAttention(BlockModule):
  """Self-attention, output projection, dropout, residual and post-LayerNorm."""

  @nn.compact
  def __call__(
    self, x_BLH: Array, mask_B1XL: Array, head_mask_N: Array | None = None
  ) -> tuple[Array, Array | None]:
    """Returns the block's output [B, L, H] and, with `output_attentions`, the probabilities
    [B, N, L, L] (after dropout and `head_mask_N`, as HF's `attentions`)."""
    c, deterministic = self.config, self.deterministic
    nd = (c.num_attention_heads, c.head_dim)
    q_BLND = self.dense(nd, (axes.HIDDEN, axes.HEADS, axes.HEAD_DIM), "query")(x_BLH)
    k_BLND = self.dense(nd, (axes.HIDDEN, axes.HEADS, axes.HEAD_DIM), "key")(x_BLH)
    v_BLND = self.dense(nd, (axes.HIDDEN, axes.HEADS, axes.HEAD_DIM), "value")(x_BLH)
    q_BLND = nn.with_logical_constraint(q_BLND, (axes.BATCH, axes.LENGTH, axes.ACT_HEADS, None))

    rate = c.attention_probs_dropout_prob
    impl = self.options.attention_implementation
    # dot_product_attention neither returns nor scales the probabilities: the research
    # options (probabilities out, head_mask) take the einsum path whatever `impl`.
    fused = impl in ("xla", "cudnn") and not self.output_attentions and head_mask_N is None
    probs_BNLL = None
    if fused and (deterministic or rate == 0.0):
      ctx_BLND = jax.nn.dot_product_attention(
        q_BLND, k_BLND, v_BLND, mask=mask_B1XL, implementation=impl
      )
    else:  # the einsum path; also the only one with attention-probability dropout (ALBERT v1)
      dropout = None
      if not deterministic and rate > 0.0:
        dropout = functools.partial(nn.Dropout(rate), deterministic=False)
      ctx_BLND, probs_BNLL = einsum_attention(
        q_BLND, k_BLND, v_BLND, mask_B1XL, dropout, head_mask_N
      )

    out_BLH = self.dense(c.hidden_size, (axes.HEADS, axes.HEAD_DIM, axes.HIDDEN), "dense", 2)(
      ctx_BLND
    )
    out_BLH = nn.Dropout(c.hidden_dropout_prob)(out_BLH, deterministic=deterministic)
    out_BLH = self.layer_norm(axes.HIDDEN, name="LayerNorm")(x_BLH + out_BLH)
    return out_BLH, probs_BNLL if self.output_attentions else None


class AlbertLayer(BlockModule):
  """One post-LN transformer block: attention, then GELU FFN with residual and LayerNorm."""

  @nn.compact
  def __call__(self, x_BLH: Array, mask_B1XL: Array, head_mask_N: Array | None = None):
    """Returns the output [B, L, H] and the attention probabilities (see `AlbertAttention`)."""
    c = self.config
    attention = AlbertAttention(
      c, self.options, self.deterministic, self.output_attentions, name="attention"
    )
    a_BLH, probs_BNLL = attention(x_BLH, mask_B1XL, head_mask_N)
    h_BLF = self.dense(c.intermediate_size, (axes.HIDDEN, axes.MLP), "ffn")(a_BLH)
    h_BLF = activation(c.hidden_act)(h_BLF)
    h_BLF = nn.with_logical_constraint(h_BLF, (axes.BATCH, axes.LENGTH, axes.ACT_MLP))
    h_BLH = self.dense(c.hidden_size, (axes.MLP, axes.HIDDEN), "ffn_output")(h_BLF)
    h_BLH = nn.Dropout(c.hidden_dropout_prob)(h_BLH, deterministic=self.deterministic)
    return self.layer_norm(axes.HIDDEN, name="full_layer_layer_norm")(h_BLH + a_BLH), probs_BNLL


class AlbertLayerGroup(BlockModule):
  """`inner_group_num` distinct layers applied in sequence; one step of the shared scan.

  The signature `(carry, *xs) -> (carry, ys)` is what `nn.scan` expects. `ys` is None unless
  an output flag is set; then a dict with the inner layers' outputs stacked:
  `hidden_states` [I, B, L, H], `attentions` [I, B, N, L, L].
  """

  output_hidden_states: bool = False  # return every inner layer's output

  @nn.compact
  def __call__(
    self, x_BLH: Array, mask_B1XL: Array, head_mask_IN: Array | None = None
  ) -> tuple[Array, dict[str, Array] | None]:
    states, probs = [], []
    for i in range(self.config.inner_group_num):
      layer = AlbertLayer(
        self.config,
        self.options,
        self.deterministic,
        self.output_attentions,
        name=f"albert_layers_{i}",
      )
      x_BLH, probs_BNLL = layer(x_BLH, mask_B1XL, None if head_mask_IN is None else head_mask_IN[i])
      states.append(x_BLH)
      probs.append(probs_BNLL)
    x_BLH = nn.with_logical_constraint(x_BLH, (axes.BATCH, axes.LENGTH, axes.ACT_HIDDEN))
    ys = {}
    if self.output_hidden_states:
      ys["hidden_states"] = jnp.stack(states)
    if self.output_attentions:
      ys["attentions"] = jnp.stack(probs)
    return x_BLH, ys or None


@flax.struct.dataclass
class AlbertModelOutput:
  last_hidden_state: Array  # [B, L, H]
  pooler_output: Array | None  # [B, H]; None without the pooler
  # With output_hidden_states: [S, B, L, H], the E -> H projection then every applied layer.
  hidden_states: Array | None = None
  # With output_attentions: [K, B, N, L, L], every applied layer's attention probabilities.
  attentions: Array | None = None


# The training CLIs' default remat policy: keep the projection/FFN matmul outputs, recompute the
# rest (attention, GELU, LayerNorm) in the backward pass. On the 2-core CPU it makes the
# albert-large-v2 training step ~15% faster than no remat and needs ~1/4 of the activation
# memory (storing every elementwise residual of the scanned block costs more than recomputing it).
TRAIN_REMAT_POLICY = "dots_with_no_batch_dims_saveable"


class AlbertTransformer(AlbertModule):
  """E -> H projection, then the shared group(s) applied `num_hidden_layers` times.

  With `num_hidden_groups` > 1, layers are split into contiguous runs of G, each run applying
  its own group (as HF transformers assigns `group_idx = layer // G`).
  """

  @nn.compact
  def __call__(
    self,
    x_BLE: Array,
    mask_B1XL: Array,
    deterministic: bool,
    head_mask_KN: Array | None = None,
    output_hidden_states: bool = False,
    output_attentions: bool = False,
  ) -> tuple[Array, Array | None, Array | None]:
    """Returns the last hidden state [B, L, H], the hidden states [S, B, L, H] (or None) and
    the attention probabilities [K, B, N, L, L] (or None); `head_mask_KN` scales layer k's."""
    c, o = self.config, self.options
    x_BLH = self.dense(
      c.hidden_size, (axes.EMBEDDING_WIDTH, axes.HIDDEN), "embedding_hidden_mapping_in"
    )(x_BLE)
    x_BLH = nn.with_logical_constraint(x_BLH, (axes.BATCH, axes.LENGTH, axes.ACT_HIDDEN))
    first_BLH = x_BLH

    group_cls = AlbertLayerGroup
    if o.remat is not None:
      group_cls = nn.remat(group_cls, policy=o.remat, prevent_cse=not o.scan_layers)
    steps, inner = c.layers_per_group, c.inner_group_num
    per_group = []  # each group's ys, leaves [G, I, ...]
    for g in range(c.num_hidden_groups):
      kwargs = dict(
        config=c,
        options=o,
        deterministic=deterministic,
        output_hidden_states=output_hidden_states,
        output_attentions=output_attentions,
        name=f"albert_layer_groups_{g}",
      )
      xs = ()  # per-step inputs: this group's rows of the head mask, [G, I, N]
      if head_mask_KN is not None:
        rows = slice(g * steps * inner, (g + 1) * steps * inner)
        xs = (head_mask_KN[rows].reshape(steps, inner, c.num_attention_heads),)
      if o.scan_layers:
        scanned = nn.scan(
          group_cls,
          variable_broadcast="params",  # ONE copy of the group's weights, reused each step
          variable_axes={"intermediates": 0},  # anything sown is stacked per layer
          split_rngs={"params": False, "dropout": True},  # fresh dropout per layer
          in_axes=(nn.broadcast,) + (0,) * len(xs),  # the mask to every step; xs one row each
          length=steps,
        )
        x_BLH, ys = scanned(**kwargs)(x_BLH, mask_B1XL, *xs)
      else:
        group = group_cls(**kwargs)
        ys_steps = []
        for s in range(steps):
          x_BLH, ys = group(x_BLH, mask_B1XL, *(x[s] for x in xs))
          ys_steps.append(ys)
        ys = jax.tree.map(lambda *a: jnp.stack(a), *ys_steps)
      per_group.append(ys)

    def layers(key: str) -> Array:  # [G, I, ...] per group -> [K, ...] in application order
      return jnp.concatenate([ys[key].reshape(-1, *ys[key].shape[2:]) for ys in per_group])

    hidden_states_SBLH = attentions_KBNLL = None
    if output_hidden_states:
      hidden_states_SBLH = jnp.concatenate([first_BLH[None], layers("hidden_states")])
    if output_attentions:
      attentions_KBNLL = layers("attentions")
    return x_BLH, hidden_states_SBLH, attentions_KBNLL


def head_mask_rows(head_mask: Array, config: AlbertConfig) -> Array:
  """HF's `head_mask`, [N] (every layer) or [K, N] (one row per applied layer) -> [K, N]."""
  head_mask = jnp.asarray(head_mask)
  k, n = config.num_hidden_layers * config.inner_group_num, config.num_attention_heads
  if head_mask.shape == (n,):
    return jnp.broadcast_to(head_mask, (k, n))
  if head_mask.shape != (k, n):
    raise UserError(
      f"head_mask has shape {head_mask.shape}; it must be [{n}] (num_attention_heads, for every "
      f"layer) or [{k}, {n}] (num_hidden_layers * inner_group_num rows, one per applied layer)."
    )
  return head_mask


class AlbertModel(AlbertModule):
  """The ALBERT encoder with its tanh pooler. Returns `AlbertModelOutput`.

  Built from an `AlbertConfig` and `ModelOptions` (`albert_jax.layers`): `AlbertModel(config,
  options=ModelOptions(dtype=jnp.bfloat16))`, or with the options' fields as keywords,
  `AlbertModel(config, dtype=jnp.bfloat16, remat_policy=None)`.

  Research options of `__call__` (static flags: when off, the compiled program is the plain
  forward): `output_hidden_states` returns `hidden_states` [S, B, L, H] (the E -> H projection,
  then the output of each of the K = num_hidden_layers * inner_group_num applied layers, as HF
  transformers 5.x); `output_attentions` returns `attentions` [K, B, N, L, L];
  `inputs_embeds` [B, L, E] replaces the word embeddings of `input_ids`; `head_mask` [N] or
  [K, N] multiplies the attention probabilities of each head (1 keeps, 0 removes).

  `attention_mask` is [B, L] (1 for the tokens to attend to, 0 for padding) or, as HF's
  3-D masks, [B, L, L]: `attention_mask[b, q, k]` is 1 where query q may attend to key k. The
  3-D form lets several texts share one row (packing): a block per text, each with its own
  `position_ids` starting at 0, gives each text the numbers it gets alone.
  """

  add_pooling_layer: bool = True  # the tanh pooler over the first token

  def setup(self):
    c = self.config
    self.embeddings = AlbertEmbeddings(config=c, options=self.options)
    self.encoder = AlbertTransformer(config=c, options=self.options)  # HF's name for it
    if self.add_pooling_layer:
      self.pooler = self.dense(c.hidden_size, (axes.HIDDEN, None), "pooler")

  def __call__(
    self,
    input_ids: Array | None,
    attention_mask: Array | None = None,
    token_type_ids: Array | None = None,
    position_ids: Array | None = None,
    deterministic: bool = True,
    *,
    inputs_embeds: Array | None = None,
    head_mask: Array | None = None,
    output_attentions: bool = False,
    output_hidden_states: bool = False,
  ) -> AlbertModelOutput:
    """input_ids, token_type_ids, position_ids: int [B, L]; attention_mask: int [B, L] or
    [B, L, L]; inputs_embeds: float [B, L, E] instead of input_ids."""
    if (input_ids is None) == (inputs_embeds is None):
      raise UserError("Give exactly one of input_ids [B, L] and inputs_embeds [B, L, E].")
    if inputs_embeds is not None:
      inputs_embeds = jnp.asarray(inputs_embeds)
      if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != self.config.embedding_size:
        raise UserError(
          f"inputs_embeds must be [batch, seq_len, embedding_size={self.config.embedding_size}];"
          f" got shape {inputs_embeds.shape}."
        )
      shape = inputs_embeds.shape[:2]
    else:
      input_ids = jnp.asarray(input_ids)
      if input_ids.ndim != 2:
        raise UserError(f"input_ids must be [batch, seq_len]; got shape {input_ids.shape}.")
      shape = input_ids.shape
    batch, length = shape
    if length > self.config.max_position_embeddings:
      raise UserError(
        f"Sequence length {length} is longer than max_position_embeddings="
        f"{self.config.max_position_embeddings}; truncate the input (tokenizer "
        f"truncation=True, max_length={self.config.max_position_embeddings})."
      )
    if attention_mask is None:
      attention_mask = jnp.ones(shape, jnp.int32)
    if token_type_ids is None:
      token_type_ids = jnp.zeros(shape, jnp.int32)
    if position_ids is None:
      position_ids = jnp.broadcast_to(jnp.arange(length), (batch, length))
    attention_mask = jnp.asarray(attention_mask)
    if attention_mask.shape not in (shape, (*shape, length)):
      raise UserError(
        f"attention_mask has shape {attention_mask.shape}; it must be [batch, seq_len] = "
        f"{shape} or [batch, seq_len, seq_len] = {(*shape, length)}."
      )
    for name, a in (("token_type_ids", token_type_ids), ("position_ids", position_ids)):
      if jnp.shape(a) != shape:
        raise UserError(f"{name} has shape {jnp.shape(a)}; it must be [batch, seq_len] = {shape}.")

    x_BLE = self.embeddings(input_ids, token_type_ids, position_ids, deterministic, inputs_embeds)
    if attention_mask.ndim == 2:
      mask_B1XL = attention_mask.astype(bool)[:, None, None, :]
    else:
      mask_B1XL = attention_mask.astype(bool)[:, None]
    head_mask_KN = None if head_mask is None else head_mask_rows(head_mask, self.config)
    h_BLH, hidden_states_SBLH, attentions_KBNLL = self.encoder(
      x_BLE, mask_B1XL, deterministic, head_mask_KN, output_hidden_states, output_attentions
    )
    pooled_BH = None
    if self.add_pooling_layer:
      pooled_BH = jnp.tanh(self.pooler(h_BLH[:, 0]))
    return AlbertModelOutput(
      last_hidden_state=h_BLH,
      pooler_output=pooled_BH,
      hidden_states=hidden_states_SBLH,
      attentions=attentions_KBNLL,
    )

  def attend(self, x_BPE: Array) -> Array:
    return self.embeddings.attend(x_BPE)
