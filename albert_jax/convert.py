"""HF transformers ALBERT state dicts <-> albert_jax parameter trees.

One table, built from the config, says for every HF tensor where it lives in our tree and how
its layout differs: HF `Linear.weight` is (out, in), our kernels are (in, ..., out, ...) with
attention kernels split into heads: query/key/value (H, N, D), output dense (N, D, H).
The same table drives both directions, so import and export cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from albert_jax.config import AlbertConfig
from albert_jax.heads import HEADS

Params = dict[str, Any]

# Parameters the HF head adds on top of `albert.` (or the bare AlbertModel).
_HEAD_PREFIXES = {
    "base": (),
    "pretraining": ("predictions", "sop_classifier"),
    "masked_lm": ("predictions",),
    "sequence_classification": ("classifier",),
    "token_classification": ("classifier",),
    "question_answering": ("qa_outputs",),
    "multiple_choice": ("classifier",),
}
# Tensors HF stores that are not parameters of their own: tied copies and buffers.
_DERIVED = ("predictions.decoder.weight", "predictions.decoder.bias", "embeddings.position_ids")


@dataclasses.dataclass(frozen=True)
class Entry:
  path: tuple[str, ...]  # where the tensor lives in our tree
  in_dims: int | None = None  # Linear weight: how many leading kernel dims are input
  flat: bool = False  # HF stores it flat (biases); ours may be split into heads


def hf_parameter_table(config: AlbertConfig, head: str) -> dict[str, Entry]:
  """HF state-dict name -> `Entry`, for every parameter of `head` (HF's `AlbertFor*`)."""
  if head not in _HEAD_PREFIXES:
    raise ValueError(f"Unknown head {head!r}; choose one of {sorted(_HEAD_PREFIXES)}.")
  table: dict[str, Entry] = {}
  base = "" if head == "base" else "albert."
  root = () if head == "base" else ("albert",)

  def linear(hf: str, path: tuple[str, ...], in_dims: int = 1):
    table[f"{hf}.weight"] = Entry((*path, "kernel"), in_dims)
    table[f"{hf}.bias"] = Entry((*path, "bias"), flat=True)

  def norm(hf: str, path: tuple[str, ...]):
    table[f"{hf}.weight"] = Entry((*path, "scale"), None)
    table[f"{hf}.bias"] = Entry((*path, "bias"), None)

  emb = root + ("embeddings",)
  for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
    table[f"{base}embeddings.{name}.weight"] = Entry((*emb, name, "embedding"), None)
  norm(f"{base}embeddings.LayerNorm", (*emb, "LayerNorm"))
  enc = root + ("encoder",)
  linear(f"{base}encoder.embedding_hidden_mapping_in", (*enc, "embedding_hidden_mapping_in"))
  for g in range(config.num_hidden_groups):
    for i in range(config.inner_group_num):
      hf = f"{base}encoder.albert_layer_groups.{g}.albert_layers.{i}"
      ours = (*enc, f"albert_layer_groups_{g}", f"albert_layers_{i}")
      for proj in ("query", "key", "value"):
        linear(f"{hf}.attention.{proj}", (*ours, "attention", proj))
      linear(f"{hf}.attention.dense", (*ours, "attention", "dense"), in_dims=2)
      norm(f"{hf}.attention.LayerNorm", (*ours, "attention", "LayerNorm"))
      linear(f"{hf}.ffn", (*ours, "ffn"))
      linear(f"{hf}.ffn_output", (*ours, "ffn_output"))
      norm(f"{hf}.full_layer_layer_norm", (*ours, "full_layer_layer_norm"))
  if head in ("base", "pretraining", "sequence_classification", "multiple_choice"):
    linear(f"{base}pooler", (*root, "pooler"))

  if "predictions" in _HEAD_PREFIXES[head]:
    linear("predictions.dense", ("predictions", "dense"))
    norm("predictions.LayerNorm", ("predictions", "LayerNorm"))
    table["predictions.bias"] = Entry(("predictions", "bias"), None)
  if "sop_classifier" in _HEAD_PREFIXES[head]:
    linear("sop_classifier.classifier", ("sop_classifier",))
  for name in ("classifier", "qa_outputs"):
    if name in _HEAD_PREFIXES[head]:
      linear(name, (name,))
  return table


def create_module(config: AlbertConfig, head: str = "base", num_labels: int | None = None,
                  **options: Any) -> nn.Module:
  """The flax module for `head`; `options` are model options (dtype, scan_layers, ...)."""
  if head not in HEADS:
    raise ValueError(f"Unknown head {head!r}; choose one of {sorted(HEADS)}.")
  if num_labels is not None:
    options["num_labels"] = num_labels
  return HEADS[head](config, **options)


def abstract_params(module: nn.Module) -> Params:
  """Shapes and dtypes of `module`'s parameters (no memory allocated)."""
  ids = jnp.zeros((1, 1, 4) if module.__class__.__name__ == "AlbertForMultipleChoice"
                  else (1, 4), jnp.int32)
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0), ids))
  return nn.unbox(variables["params"])


def _to_numpy(t: Any) -> np.ndarray:
  if hasattr(t, "detach"):  # a torch tensor, without importing torch
    t = t.detach().cpu()
    if str(t.dtype) == "torch.bfloat16":
      t = t.float()
    return t.numpy()
  return np.asarray(t)


def _num_labels(state: Mapping[str, Any], head: str) -> int | None:
  name = {"sequence_classification": "classifier.weight",
          "token_classification": "classifier.weight"}.get(head)
  return None if name is None or name not in state else int(np.shape(state[name])[0])


def _set(tree: Params, path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: Params, path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def params_from_hf_state_dict(state_dict: Mapping[str, Any], config: AlbertConfig,
                              head: str = "base", dtype: Any = np.float32) -> Params:
  """Maps an HF transformers ALBERT state dict (torch tensors or numpy arrays) to params.

  `head` names the HF class the state dict came from (`"pretraining"` for
  `AlbertForPreTraining`, ...; see `albert_jax.heads.HEADS`). For `"base"` the keys may carry
  the `albert.` prefix or not. Every tensor is checked against the shape the config implies;
  a missing or misshapen tensor is a ValueError naming it.
  """
  state = dict(state_dict)
  if head == "base" and any(k.startswith("albert.") for k in state):
    state = {k[len("albert."):]: v for k, v in state.items() if k.startswith("albert.")}
  table = hf_parameter_table(config, head)
  module = create_module(config, head, num_labels=_num_labels(state, head))
  expected = abstract_params(module)

  missing = [k for k in table if k not in state]
  if missing:
    raise ValueError(f"State dict for head {head!r} is missing {len(missing)} tensor(s), "
                     f"e.g. {missing[:3]}; is it an ALBERT checkpoint of that head and config?")
  params: Params = {}
  for name, entry in table.items():
    value = _to_numpy(state[name])
    shape = tuple(_get(expected, entry.path).shape)
    hf_shape = _hf_shape(shape, entry)
    if tuple(value.shape) != hf_shape:
      raise ValueError(f"Tensor {name!r} has shape {tuple(value.shape)}; the config implies "
                       f"{hf_shape}. Check that config.json belongs to these weights.")
    if entry.in_dims is not None:  # HF Linear (out, in) -> our (in..., out...)
      value = value.T
    _set(params, entry.path, np.asarray(value.reshape(shape), dtype=dtype))

  known = set(table) | set(_DERIVED) | {f"albert.{d}" for d in _DERIVED}
  unused = sorted(k for k in state if k not in known)
  if unused:
    logging.info("Ignored %d tensor(s) not used by head %r: %s", len(unused), head, unused[:5])
  return params


def _hf_shape(shape: tuple[int, ...], entry: Entry) -> tuple[int, ...]:
  """HF's layout of one of our tensors: Linear weights (out, in); biases flat."""
  if entry.in_dims is not None:
    return (int(np.prod(shape[entry.in_dims:])), int(np.prod(shape[:entry.in_dims])))
  return (int(np.prod(shape)),) if entry.flat else shape


def params_to_hf_state_dict(params: Params, config: AlbertConfig,
                            head: str = "base") -> dict[str, np.ndarray]:
  """The inverse of `params_from_hf_state_dict`: numpy arrays under HF's names.

  The MLM decoder's tied copies (`predictions.decoder.*`) are included, as HF saves them.
  """
  out: dict[str, np.ndarray] = {}
  for name, entry in hf_parameter_table(config, head).items():
    value = np.asarray(_get(params, entry.path), dtype=np.float32)
    if entry.in_dims is not None:
      value = value.reshape(_hf_shape(value.shape, entry)[::-1]).T
    elif entry.flat:
      value = value.reshape(-1)
    out[name] = np.ascontiguousarray(value)
  if "predictions.bias" in out:
    out["predictions.decoder.weight"] = out["albert.embeddings.word_embeddings.weight"]
    out["predictions.decoder.bias"] = out["predictions.bias"]
  return out
