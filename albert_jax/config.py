"""AlbertConfig: the architecture hyperparameters, with HF transformers' field names.

Only what defines the network (and so the released weights) lives here. How the network is
run -- compute dtype, parameter dtype, remat, scan -- are options of the modules
(`albert_jax.model.AlbertModel`), not ALBERT config.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import jax

# Google's `albert_config.json` says "gelu" and means the tanh approximation; HF calls that
# function "gelu_new". These are the activation names we accept and what each one computes.
_TANH_GELU = functools.partial(jax.nn.gelu, approximate=True)
ACTIVATIONS = {
  "gelu_new": _TANH_GELU,
  "gelu": functools.partial(jax.nn.gelu, approximate=False),
  "gelu_fast": _TANH_GELU,
  "gelu_pytorch_tanh": _TANH_GELU,
  "relu": jax.nn.relu,
  "silu": jax.nn.silu,
  "swish": jax.nn.silu,
}


# The positions of ALBERT's released models: the default `max_position_embeddings`, and the
# default `max_seq_length` of runs and pretraining data (the longest input those models take).
MAX_POSITIONS = 512


@dataclasses.dataclass(frozen=True)
class AlbertConfig:
  """ALBERT architecture. Field names and meanings follow `transformers.AlbertConfig`."""

  vocab_size: int = 30000  # SentencePiece vocabulary (30k-clean)
  embedding_size: int = 128  # E: width of the factorized embeddings
  hidden_size: int = 4096  # H: width of the transformer
  num_hidden_layers: int = 12  # how many times the shared block(s) are applied
  num_hidden_groups: int = 1  # distinct parameter groups; layers are split evenly among them
  inner_group_num: int = 1  # distinct layers inside each group, applied in sequence
  num_attention_heads: int = 64
  intermediate_size: int = 16384  # FFN width
  hidden_act: str = "gelu_new"  # tanh-approximate GELU, as in all released models
  hidden_dropout_prob: float = 0.0
  attention_probs_dropout_prob: float = 0.0
  max_position_embeddings: int = MAX_POSITIONS
  type_vocab_size: int = 2
  initializer_range: float = 0.02
  layer_norm_eps: float = 1e-12
  classifier_dropout_prob: float = 0.1
  pad_token_id: int = 0
  bos_token_id: int = 2
  eos_token_id: int = 3

  def __post_init__(self):
    def bad(field: str, value: Any, why: str):
      raise ValueError(f"AlbertConfig.{field}={value!r}: {why}")

    for field in (
      "vocab_size",
      "embedding_size",
      "hidden_size",
      "num_hidden_layers",
      "num_hidden_groups",
      "inner_group_num",
      "num_attention_heads",
      "intermediate_size",
      "max_position_embeddings",
      "type_vocab_size",
    ):
      value = getattr(self, field)
      if not isinstance(value, int) or value < 1:
        bad(field, value, "must be a positive integer")
    if self.hidden_size % self.num_attention_heads:
      bad(
        "hidden_size",
        self.hidden_size,
        f"must be divisible by num_attention_heads={self.num_attention_heads}",
      )
    if self.num_hidden_layers % self.num_hidden_groups:
      bad(
        "num_hidden_layers",
        self.num_hidden_layers,
        f"must be divisible by num_hidden_groups={self.num_hidden_groups}",
      )
    if self.hidden_act not in ACTIVATIONS:
      bad("hidden_act", self.hidden_act, f"choose one of {tuple(ACTIVATIONS)}")
    for field in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob"):
      value = getattr(self, field)
      if value is not None and not 0.0 <= value < 1.0:
        bad(field, value, "must be in [0, 1)")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @property
  def layers_per_group(self) -> int:
    return self.num_hidden_layers // self.num_hidden_groups

  # ---- presets -------------------------------------------------------------------------------

  @classmethod
  def from_name(cls, name: str, **overrides: Any) -> AlbertConfig:
    """A released configuration: `albert-{base,large,xlarge,xxlarge}-v{1,2}`.

    The `albert/` organisation prefix of the HF hub is accepted (`albert/albert-base-v2`).
    """
    key = name.split("/")[-1] if name.startswith("albert/") else name
    if key not in PRESETS:
      raise ValueError(
        f"Unknown ALBERT preset {name!r}; known presets: {', '.join(sorted(PRESETS))}."
      )
    return dataclasses.replace(PRESETS[key], **overrides)

  # ---- HF config.json ------------------------------------------------------------------------

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_hf_dict(self) -> dict[str, Any]:
    """The `config.json` that HF transformers reads (`AlbertConfig.from_pretrained`)."""
    d = self.to_dict()
    d["model_type"] = "albert"
    d["architectures"] = ["AlbertModel"]
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> AlbertConfig:
    """Builds a config from an HF or Google `config.json` dict; unknown keys are ignored."""
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in d.items() if k in names}
    if kwargs.get("hidden_act") == "gelu" and d.get("model_type") != "albert":
      # Google's albert_config.json (no model_type) means the tanh GELU by "gelu".
      kwargs["hidden_act"] = "gelu_new"
    if kwargs.get("classifier_dropout_prob") is None:
      kwargs.pop("classifier_dropout_prob", None)
    return cls(**kwargs)

  @classmethod
  def from_json_file(cls, path: str | os.PathLike) -> AlbertConfig:
    with open(path) as f:
      try:
        d = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a valid JSON config ({e}).") from e
    return cls.from_dict(d)

  def to_json_file(self, path: str | os.PathLike) -> None:
    with open(path, "w") as f:
      json.dump(self.to_hf_dict(), f, indent=2, sort_keys=True)
      f.write("\n")


def _preset(hidden: int, layers: int, heads: int, intermediate: int, dropout: float):
  return AlbertConfig(
    hidden_size=hidden,
    num_hidden_layers=layers,
    num_attention_heads=heads,
    intermediate_size=intermediate,
    hidden_dropout_prob=dropout,
    attention_probs_dropout_prob=dropout,
  )


# The released sizes (Lan et al. 2020, Table 1); v2 trained without dropout, v1 with 0.1.
_SIZES = {
  "base": (768, 12, 12, 3072),
  "large": (1024, 24, 16, 4096),
  "xlarge": (2048, 24, 16, 8192),
  "xxlarge": (4096, 12, 64, 16384),
}
PRESETS: dict[str, AlbertConfig] = {
  f"albert-{size}-v{v}": _preset(*dims, dropout=0.1 if v == 1 else 0.0)
  for size, dims in _SIZES.items()
  for v in (1, 2)
}
