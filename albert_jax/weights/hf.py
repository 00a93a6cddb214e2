"""HF transformers' ALBERT state dicts <-> albert_jax parameter trees.

One table, built from the config, says for every HF tensor where it lives in our tree and how
its layout differs: HF `Linear.weight` is (out, in), our kernels are (in, ..., out, ...) with
attention kernels split into heads: query/key/value (H, N, D), output dense (N, D, H).
The same table drives both directions, so import and export cannot drift apart. Google's TF1
checkpoints are first renamed to HF's names (`albert_jax.weights.tf1`), then go through the
same table and the same shape checks. Which parameter groups a head has comes from the head
registry, `albert_jax.heads.HEADS`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from albert_jax.config import AlbertConfig
from albert_jax.errors import UserError
from albert_jax.heads import HEADS, abstract_params, create_module, has_num_labels, head_spec

Params = dict[str, Any]

# Tensors HF stores that are not parameters of their own: tied copies and buffers.
_DERIVED = ("predictions.decoder.weight", "predictions.decoder.bias", "embeddings.position_ids")
# The parts a checkpoint may hold, named as in HF and in our trees, and a tensor that shows each.
PARTS = {
  "albert": "embeddings.word_embeddings.weight",
  "pooler": "pooler.weight",
  "predictions": "predictions.dense.weight",  # the MLM head
  "sop_classifier": "sop_classifier.classifier.weight",  # sentence-order prediction
  "classifier": "classifier.weight",
  "qa_outputs": "qa_outputs.weight",
}


@dataclasses.dataclass(frozen=True)
class Entry:
  path: tuple[str, ...]  # where the tensor lives in our tree
  in_dims: int | None = None  # Linear weight: how many leading kernel dims are input
  flat: bool = False  # HF stores it flat (biases); ours may be split into heads


def hf_parameter_table(config: AlbertConfig, head: str) -> dict[str, Entry]:
  """HF state-dict name -> `Entry`, for every parameter of `head` (HF's `AlbertFor*`)."""
  parts = head_spec(head).hf_parts
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
  if "pooler" in parts:
    linear(f"{base}pooler", (*root, "pooler"))

  if "predictions" in parts:
    linear("predictions.dense", ("predictions", "dense"))
    norm("predictions.LayerNorm", ("predictions", "LayerNorm"))
    table["predictions.bias"] = Entry(("predictions", "bias"), None)
  if "sop_classifier" in parts:
    linear("sop_classifier.classifier", ("sop_classifier",))
  for name in ("classifier", "qa_outputs"):
    if name in parts:
      linear(name, (name,))
  return table


def _to_numpy(t: Any) -> np.ndarray:
  if hasattr(t, "detach"):  # a torch tensor, without importing torch
    t = t.detach().cpu()
    if str(t.dtype) == "torch.bfloat16":
      t = t.float()
    return t.numpy()
  return np.asarray(t)


def num_labels(state: Mapping[str, Any], head: str) -> int | None:
  """The classifier width of an HF state dict of `head`, for heads that take `num_labels`."""
  if not has_num_labels(head) or "classifier.weight" not in state:
    return None
  return int(np.shape(state["classifier.weight"])[0])


def _set(tree: Params, path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: Params, path: tuple[str, ...]) -> Any:
  for i, key in enumerate(path):
    if not isinstance(tree, Mapping) or key not in tree:
      raise UserError(
        f"The parameter tree has no {'/'.join(path[: i + 1])}; is it the tree of "
        "the head it is used as?"
      )
    tree = tree[key]
  return tree


def params_from_hf_state_dict(
  state_dict: Mapping[str, Any], config: AlbertConfig, head: str = "base", dtype: Any = np.float32
) -> Params:
  """Maps an HF transformers ALBERT state dict (torch tensors or numpy arrays) to params.

  `head` names the HF class the state dict came from (`"pretraining"` for
  `AlbertForPreTraining`, ...; see `albert_jax.heads.HEADS`). For `"base"` the keys may carry
  the `albert.` prefix or not. Every tensor is checked against the shape the config implies;
  a missing or misshapen tensor is a UserError naming it.
  """
  state = dict(state_dict)
  if head == "base" and any(k.startswith("albert.") for k in state):
    state = {k[len("albert.") :]: v for k, v in state.items() if k.startswith("albert.")}
  table = hf_parameter_table(config, head)
  module = create_module(config, head, num_labels=num_labels(state, head))
  expected = abstract_params(module)

  missing = [k for k in table if k not in state]
  if missing:
    raise UserError(
      f"State dict for head {head!r} is missing {len(missing)} tensor(s), "
      f"e.g. {missing[:3]}; is it an ALBERT checkpoint of that head and config?"
    )
  params = _params_from_table(state, table, expected, dtype)

  known = set(table) | set(_DERIVED) | {f"albert.{d}" for d in _DERIVED}
  unused = sorted(k for k in state if k not in known)
  layers = [k for k in unused if "albert_layer_groups." in k]
  if layers:  # more groups or inner layers than the config has: the config is not theirs
    raise UserError(
      f"Tensor(s) {layers[:3]} belong to no layer of the config "
      f"(num_hidden_groups={config.num_hidden_groups}, inner_group_num="
      f"{config.inner_group_num}). Check that the config belongs to these weights."
    )
  if unused:
    logging.info("Ignored %d tensor(s) not used by head %r: %s", len(unused), head, unused[:5])
  return params


def _params_from_table(
  state: Mapping[str, Any], table: Mapping[str, Entry], expected: Params, dtype: Any
) -> Params:
  params: Params = {}
  for name, entry in table.items():
    value = _to_numpy(state[name])
    shape = tuple(_get(expected, entry.path).shape)
    hf_shape = _hf_shape(shape, entry)
    if tuple(value.shape) != hf_shape:
      raise UserError(
        f"Tensor {name!r} has shape {tuple(value.shape)}; the config implies "
        f"{hf_shape}. Check that the config belongs to these weights."
      )
    if entry.in_dims is not None:  # HF Linear (out, in) -> our (in..., out...)
      value = value.T
    _set(params, entry.path, np.asarray(value.reshape(shape), dtype=dtype))
  return params


def _hf_shape(shape: tuple[int, ...], entry: Entry) -> tuple[int, ...]:
  """HF's layout of one of our tensors: Linear weights (out, in); biases flat."""
  if entry.in_dims is not None:
    return (int(np.prod(shape[entry.in_dims :])), int(np.prod(shape[: entry.in_dims])))
  return (int(np.prod(shape)),) if entry.flat else shape


def params_to_hf_state_dict(
  params: Params, config: AlbertConfig, head: str = "base"
) -> dict[str, np.ndarray]:
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


# ---- heads and the parts of a checkpoint ----------------------------------------------------


def parts_found(names: Iterable[str]) -> list[str]:
  """Which of `PARTS` the HF state-dict `names` hold, in `PARTS` order."""
  bare = {n[len("albert.") :] if n.startswith("albert.") else n for n in names}
  return [part for part, probe in PARTS.items() if probe in bare]


def detect_head(names: Iterable[str], architectures: Sequence[str] | None = None) -> str:
  """The head of an HF checkpoint: from config.json's `architectures` when it names an ALBERT
  class, else from the parts its tensors hold (the richest head they make complete)."""
  by_class = {spec.hf_class: head for head, spec in HEADS.items()}
  for arch in architectures or ():
    if arch in by_class:
      return by_class[arch]
  parts = set(parts_found(names))
  if {"predictions", "sop_classifier"} <= parts:
    return "pretraining"
  if "predictions" in parts:
    return "masked_lm"
  if "qa_outputs" in parts:
    return "question_answering"
  if "classifier" in parts:
    # A classifier on the pooled output (sequence classification, or multiple choice, which
    # only config.json's `architectures` tells apart) or on every token (no pooler).
    return "sequence_classification" if "pooler" in parts else "token_classification"
  return "base"


def unused_pooler(
  state: Mapping[str, Any], config: AlbertConfig, head: str, dtype: Any = np.float32
) -> Params | None:
  """The pooler (`{"kernel", "bias"}`) of a checkpoint whose head does not use it (HF's
  `AlbertForMaskedLM` copies of the released weights keep it), so that loading the encoder
  later finds it; None if `head` has its own pooler or the state dict has none."""
  if head == "base" or "pooler" in head_spec(head).hf_parts:
    return None
  pooler = {
    k: e
    for k, e in hf_parameter_table(config, "pretraining").items()
    if k.startswith("albert.pooler.")
  }
  if not all(k in state for k in pooler):
    return None
  h = config.hidden_size
  expected = {
    "albert": {
      "pooler": {
        "kernel": jax.ShapeDtypeStruct((h, h), dtype),
        "bias": jax.ShapeDtypeStruct((h,), dtype),
      }
    }
  }
  return _params_from_table(state, pooler, expected, dtype)["albert"]["pooler"]
