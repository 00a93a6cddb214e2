"""ALBERT weights from HF transformers and Google's TF release -> albert_jax, and back.

One table, built from the config, says for every HF tensor where it lives in our tree and how
its layout differs: HF `Linear.weight` is (out, in), our kernels are (in, ..., out, ...) with
attention kernels split into heads: query/key/value (H, N, D), output dense (N, D, H).
The same table drives both directions, so import and export cannot drift apart. Google's TF1
checkpoints are first renamed to HF's names (`albert_jax.tf_checkpoint`), then go through the
same table and the same shape checks.

`python -m albert_jax.convert --source SRC --output DIR` writes a converted directory:

  DIR/params/           Orbax checkpoint of the parameter tree (plain arrays, HF-like names)
  DIR/config.json       the ALBERT config, HF's format
  DIR/albert_jax.json   head, num_labels, id2label, source, parameter count, parts found
  DIR/spiece.model      the SentencePiece model (+ tokenizer_config.json)

SRC is an HF model directory (`config.json` + `model.safetensors` or `pytorch_model.bin`), a
TF checkpoint directory or prefix (`albert_config.json`, `model.ckpt-best.*`, `30k-clean.model`;
TF-Hub `module/` names too), a `.tar.gz` of either, or an HF hub name (`albert-large-v2`),
downloaded into the hub's usual cache. The write is atomic: DIR appears complete or not at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax.traverse_util import flatten_dict

from albert_jax.config import AlbertConfig
from albert_jax.heads import HEADS
from albert_jax.tokenizer import MODEL_FILE_NAMES, AlbertTokenizer

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


def create_module(
  config: AlbertConfig, head: str = "base", num_labels: int | None = None, **options: Any
) -> nn.Module:
  """The flax module for `head`; `options` are model options (dtype, scan_layers, ...)."""
  if head not in HEADS:
    raise ValueError(f"Unknown head {head!r}; choose one of {sorted(HEADS)}.")
  if num_labels is not None:
    options["num_labels"] = num_labels
  return HEADS[head](config, **options)


def init_params(module: nn.Module, rng: jax.Array) -> Params:
  """Freshly initialized parameters of `module` (plain arrays; jit it to place them)."""
  ids = jnp.zeros(
    (1, 1, 4) if module.__class__.__name__ == "AlbertForMultipleChoice" else (1, 4), jnp.int32
  )
  return nn.unbox(module.init(rng, ids)["params"])


def abstract_params(module: nn.Module) -> Params:
  """Shapes and dtypes of `module`'s parameters (no memory allocated)."""
  return jax.tree.map(lambda leaf: leaf, _abstract_params(module))  # a fresh tree each call


@functools.lru_cache(maxsize=32)
def _abstract_params(module: nn.Module) -> Params:  # tracing a model costs ~0.1-1 s
  return jax.eval_shape(lambda: init_params(module, jax.random.key(0)))


def _to_numpy(t: Any) -> np.ndarray:
  if hasattr(t, "detach"):  # a torch tensor, without importing torch
    t = t.detach().cpu()
    if str(t.dtype) == "torch.bfloat16":
      t = t.float()
    return t.numpy()
  return np.asarray(t)


def _num_labels(state: Mapping[str, Any], head: str) -> int | None:
  name = {
    "sequence_classification": "classifier.weight",
    "token_classification": "classifier.weight",
  }.get(head)
  return None if name is None or name not in state else int(np.shape(state[name])[0])


def _set(tree: Params, path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: Params, path: tuple[str, ...]) -> Any:
  for i, key in enumerate(path):
    if not isinstance(tree, Mapping) or key not in tree:
      raise ValueError(
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
  a missing or misshapen tensor is a ValueError naming it.
  """
  state = dict(state_dict)
  if head == "base" and any(k.startswith("albert.") for k in state):
    state = {k[len("albert.") :]: v for k, v in state.items() if k.startswith("albert.")}
  table = hf_parameter_table(config, head)
  module = create_module(config, head, num_labels=_num_labels(state, head))
  expected = abstract_params(module)

  missing = [k for k in table if k not in state]
  if missing:
    raise ValueError(
      f"State dict for head {head!r} is missing {len(missing)} tensor(s), "
      f"e.g. {missing[:3]}; is it an ALBERT checkpoint of that head and config?"
    )
  params = _params_from_table(state, table, expected, dtype)

  known = set(table) | set(_DERIVED) | {f"albert.{d}" for d in _DERIVED}
  unused = sorted(k for k in state if k not in known)
  layers = [k for k in unused if "albert_layer_groups." in k]
  if layers:  # more groups or inner layers than the config has: the config is not theirs
    raise ValueError(
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
      raise ValueError(
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

# Our head name -> the HF class (and `architectures` entry) with the same parameters.
HF_ARCHITECTURES = {
  "base": "AlbertModel",
  "pretraining": "AlbertForPreTraining",
  "masked_lm": "AlbertForMaskedLM",
  "sequence_classification": "AlbertForSequenceClassification",
  "token_classification": "AlbertForTokenClassification",
  "question_answering": "AlbertForQuestionAnswering",
  "multiple_choice": "AlbertForMultipleChoice",
}
# The parts a checkpoint may hold, named as in HF and in our trees, and a tensor that shows each.
PARTS = {
  "albert": "embeddings.word_embeddings.weight",
  "pooler": "pooler.weight",
  "predictions": "predictions.dense.weight",  # the MLM head
  "sop_classifier": "sop_classifier.classifier.weight",  # sentence-order prediction
  "classifier": "classifier.weight",
  "qa_outputs": "qa_outputs.weight",
}


def parts_found(names: Iterable[str]) -> list[str]:
  """Which of `PARTS` the HF state-dict `names` hold, in `PARTS` order."""
  bare = {n[len("albert.") :] if n.startswith("albert.") else n for n in names}
  return [part for part, probe in PARTS.items() if probe in bare]


def detect_head(names: Iterable[str], architectures: Sequence[str] | None = None) -> str:
  """The head of an HF checkpoint: from config.json's `architectures` when it names an ALBERT
  class, else from the parts its tensors hold (the richest head they make complete)."""
  by_class = {cls: head for head, cls in HF_ARCHITECTURES.items()}
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


def _extra_params(state: Mapping[str, Any], config: AlbertConfig, head: str, dtype: Any) -> Params:
  """The pooler of a checkpoint whose head does not use it (HF's `AlbertForMaskedLM` copies of
  the released weights keep it), so that loading the encoder later finds it."""
  table = hf_parameter_table(config, head)
  if head == "base" or "albert.pooler.weight" in table:
    return {}
  pooler = {
    k: e
    for k, e in hf_parameter_table(config, "pretraining").items()
    if k.startswith("albert.pooler.")
  }
  if not all(k in state for k in pooler):
    return {}
  h = config.hidden_size
  expected = {
    "albert": {
      "pooler": {
        "kernel": jax.ShapeDtypeStruct((h, h), dtype),
        "bias": jax.ShapeDtypeStruct((h,), dtype),
      }
    }
  }
  return _params_from_table(state, pooler, expected, dtype)


def _merge(tree: Params, extra: Params) -> Params:
  for key, value in extra.items():
    if isinstance(value, dict):
      _merge(tree.setdefault(key, {}), value)
    else:
      tree[key] = value
  return tree


def parameter_count(params: Params) -> int:
  return int(sum(np.prod(np.shape(leaf)) for leaf in jax.tree.leaves(params)))


# ---- reading a source -----------------------------------------------------------------------


class Converted(NamedTuple):
  """A checkpoint read into memory: what `convert` writes and `from_pretrained` loads."""

  config: AlbertConfig
  params: Params  # numpy arrays; the head's tree, plus the pooler if the head does not use it
  head: str
  tokenizer: AlbertTokenizer
  metadata: dict[str, Any]  # what albert_jax.json holds


METADATA_FILE = "albert_jax.json"
PARAMS_DIR = "params"
HF_CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "pytorch_model.bin"
_WEIGHT_FILES = (
  SAFETENSORS_FILE,
  f"{SAFETENSORS_FILE}.index.json",
  TORCH_FILE,
  f"{TORCH_FILE}.index.json",
)
_HUB_FILES = ["config.json", "spiece.model", "tokenizer_config.json"]
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_RELEASED = re.compile(r"albert-(base|large|xlarge|xxlarge)-v[12]")


def is_converted(path: str | os.PathLike) -> bool:
  """Whether `path` is a directory written by `convert`."""
  return (Path(path) / METADATA_FILE).is_file()


def is_hf_model_dir(path: str | os.PathLike) -> bool:
  path = Path(path)
  return (path / HF_CONFIG_FILE).is_file() and any((path / f).is_file() for f in _WEIGHT_FILES)


def hub_repo_id(name: str) -> str | None:
  """The HF hub repository of `name`, or None if `name` cannot be one.

  The released checkpoints live under the `albert/` organisation; their old bare names
  (`albert-large-v2`) are accepted.
  """
  name = str(name)
  if not _HUB_ID.fullmatch(name) or name.endswith((".tar.gz", ".tgz")):
    return None
  return f"albert/{name}" if _RELEASED.fullmatch(name) else name


def hub_download(name: str) -> Path:
  """Downloads HF hub model `name` (config, weights, tokenizer) with `snapshot_download` into
  the hub's usual cache (or finds it there) and returns its directory."""
  repo_id = hub_repo_id(name)
  if repo_id is None:
    raise FileNotFoundError(f"{name!r} does not exist and is not an HF hub model name.")
  from huggingface_hub import snapshot_download

  try:
    path = Path(snapshot_download(repo_id, allow_patterns=[*_HUB_FILES, "model.safetensors*"]))
    if not is_hf_model_dir(path):  # an older repository: PyTorch weights only
      path = Path(snapshot_download(repo_id, allow_patterns=[*_HUB_FILES, "pytorch_model.bin*"]))
  except Exception as e:  # offline, unknown repository, gated, network errors...
    raise FileNotFoundError(
      f"Could not get {repo_id!r} from the HF hub ({_brief(e)}). {name!r} is not a local path "
      "either. On a machine "
      f"with network, download it (`hf download {repo_id}`) or Google's TF release (.tar.gz), "
      "then pass that directory or file as the source; if this machine has network, unset "
      "HF_HUB_OFFLINE."
    ) from None
  if not is_hf_model_dir(path):
    raise FileNotFoundError(
      f"HF hub repository {repo_id!r} has no config.json with "
      f"model.safetensors or pytorch_model.bin (got {os.listdir(path)})."
    )
  return path


def load_source(
  source: str | os.PathLike,
  head: str | None = None,
  albert_config: str | AlbertConfig | None = None,
) -> Converted:
  """Reads any supported checkpoint (see the module docstring) into memory.

  Args:
    source: an HF model directory, a TF checkpoint directory or prefix, a `.tar.gz` of either,
      or an HF hub name.
    head: the head to convert (a key of `albert_jax.heads.HEADS`); None detects it from
      config.json's `architectures` and the tensor names. Its tensors must all be there.
    albert_config: a config (an `AlbertConfig`, a JSON file, or a preset name such as
      `albert-base-v2`) replacing the source's own, for sources that have none.
  """
  path = Path(source)
  if str(source).endswith((".tar.gz", ".tgz")) and path.is_file():
    with tempfile.TemporaryDirectory(prefix="albert_jax-extract-") as tmp:
      root = _extract(path, Path(tmp))
      return _load_local(root, str(source), head, albert_config)
  if path.exists() or Path(f"{path}.index").is_file():
    return _load_local(path, str(source), head, albert_config)
  return _load_local(hub_download(str(source)), str(source), head, albert_config, hub=True)


def _extract(archive: Path, into: Path) -> Path:
  """Extracts `archive` and returns the directory in it that holds the checkpoint."""
  from albert_jax import tf_checkpoint

  try:
    with tarfile.open(archive, "r:*") as tar:
      tar.extractall(into, filter="data")
  except (tarfile.TarError, EOFError, OSError) as e:
    raise ValueError(
      f"Cannot extract {archive}: {e}. The archive is truncated or corrupt; download it again."
    ) from None
  for directory in sorted([into, *(p for p in into.rglob("*") if p.is_dir())]):
    if is_hf_model_dir(directory) or (directory / tf_checkpoint.CONFIG_FILE_NAME).is_file():
      return directory
  for directory in sorted([into, *(p for p in into.rglob("*") if p.is_dir())]):
    if tf_checkpoint.is_tf_checkpoint(directory):
      return directory
  raise FileNotFoundError(
    f"{archive} holds no HF model (config.json + weights) and no TF "
    "checkpoint (albert_config.json, *.index)."
  )


def _config_override(albert_config: str | AlbertConfig | None) -> AlbertConfig | None:
  if albert_config is None or isinstance(albert_config, AlbertConfig):
    return albert_config
  if Path(albert_config).is_file():
    return AlbertConfig.from_json_file(albert_config)
  return AlbertConfig.from_name(str(albert_config))


def _load_local(
  path: Path,
  source: str,
  head: str | None,
  albert_config: str | AlbertConfig | None,
  hub: bool = False,
) -> Converted:
  from albert_jax import tf_checkpoint

  config = _config_override(albert_config)
  if head is not None and head not in HEADS:
    raise ValueError(f"Unknown head {head!r}; choose one of {sorted(HEADS)}.")
  if is_converted(path):
    raise ValueError(
      f"{path} is already converted; load it with albert_jax.from_pretrained({str(path)!r})."
    )
  if is_hf_model_dir(path):
    hf_config = read_json(path / HF_CONFIG_FILE)
    config = config or AlbertConfig.from_dict(hf_config)
    state = load_hf_state_dict(path)
    architectures = hf_config.get("architectures")
    fmt = "hf-hub" if hub else "hf"
  elif tf_checkpoint.is_tf_checkpoint(path):
    ckpt = tf_checkpoint.read_tf_checkpoint(path)
    if config is None:
      config_file = tf_checkpoint.find_config(ckpt.prefix)
      if config_file is None:
        raise FileNotFoundError(
          f"No {tf_checkpoint.CONFIG_FILE_NAME} next to TF checkpoint {ckpt.prefix}; pass its "
          "config (--albert_config=FILE, or a preset name such as albert-base-v2)."
        )
      config = AlbertConfig.from_json_file(config_file)
    state, hf_config, architectures = ckpt.state_dict, {}, None
    fmt = "tf-hub-module" if ckpt.hub_module else "tf"
    path = Path(ckpt.prefix).parent
  else:
    listing = sorted(os.listdir(path)) if path.is_dir() else "not a directory"
    raise FileNotFoundError(
      f"{source} holds neither an HF model (config.json + model.safetensors or "
      f"pytorch_model.bin) nor a TF checkpoint (albert_config.json + model.ckpt-*.index); "
      f"found: {listing}."
    )

  head = head or detect_head(state, architectures)
  try:
    params = params_from_hf_state_dict(state, config, head)
  except ValueError as e:
    raise ValueError(
      f"{source}: {e} (To start a new head from these weights, convert them as "
      "they are and load with from_pretrained(DIR, head=...).)"
    ) from None
  params = _merge(params, _extra_params(state, config, head, np.float32))
  num_labels = _num_labels(state, head)
  id2label = hf_config.get("id2label")
  if num_labels is None or not isinstance(id2label, dict) or len(id2label) != num_labels:
    id2label = None
  tokenizer, tokenizer_source = _tokenizer(path)
  metadata = {
    "head": head,
    "num_labels": num_labels,
    "id2label": id2label,
    "source": source,
    "source_format": fmt,
    "parameter_count": parameter_count(params),
    "heads_found": parts_found(state),
    "tokenizer": tokenizer_source,
  }
  return Converted(config, params, head, tokenizer, metadata)


def read_json(path: Path) -> dict[str, Any]:
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); fix it or download it again.") from None


def _tokenizer(path: Path) -> tuple[AlbertTokenizer, str]:
  """The source's SentencePiece model if it has one, else the bundled 30k-clean one."""
  if any((path / name).is_file() for name in MODEL_FILE_NAMES):
    return AlbertTokenizer.from_pretrained(path), "source"
  return AlbertTokenizer(), "bundled"


def load_hf_state_dict(directory: str | os.PathLike) -> dict[str, Any]:
  """The tensors of an HF model directory: `model.safetensors`, else `pytorch_model.bin`
  (sharded `*.index.json` variants too). Unreadable files are a ValueError naming them."""
  directory = Path(directory)
  for name in _WEIGHT_FILES:
    if not (directory / name).is_file():
      continue
    if name.endswith(".index.json"):
      shards = sorted(set(read_json(directory / name).get("weight_map", {}).values()))
      files = [directory / shard for shard in shards]
    else:
      files = [directory / name]
    state: dict[str, Any] = {}
    for file in files:
      state.update(_read_weights(file))
    return state
  raise FileNotFoundError(
    f"No weights in {directory}: expected one of {', '.join(_WEIGHT_FILES)}; "
    f"found {sorted(os.listdir(directory))}."
  )


def _brief(e: BaseException) -> str:
  """An exception as one short line (some libraries write paragraphs)."""
  return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


def _read_weights(file: Path) -> dict[str, Any]:
  hint = "The file is truncated or corrupt; download or save it again."
  if not file.is_file():
    raise FileNotFoundError(f"Weights file {file} is missing (named by its index). {hint}")
  if file.suffix == ".safetensors":
    from safetensors.numpy import load_file

    try:
      return load_file(file)
    except Exception as e:  # safetensors raises its own error types for bad headers and data
      raise ValueError(f"Cannot read {file}. {hint} ({_brief(e)})") from None
  import torch

  try:
    return torch.load(file, map_location="cpu", weights_only=True)
  except Exception as e:  # pickle and zip errors of every kind
    raise ValueError(f"Cannot read {file}. {hint} ({_brief(e)})") from None


# ---- the converted directory ----------------------------------------------------------------


def write_converted(directory: str | os.PathLike, converted: Converted) -> None:
  """Writes `converted` into the existing, empty `directory` (see the module docstring)."""
  import orbax.checkpoint as ocp

  directory = Path(directory)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory.absolute() / PARAMS_DIR, converted.params)
  converted.config.to_json_file(directory / HF_CONFIG_FILE)
  converted.tokenizer.save_pretrained(directory)
  (directory / METADATA_FILE).write_text(json.dumps(converted.metadata, indent=2) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
  """Yields a fresh sibling `PATH.tmp-XXXX` to write into; on success it becomes `path`.

  On any error (Ctrl-C included) the temporary directory is removed and `path` is untouched.
  An existing `path` is refused unless `overwrite`; then it is kept until the new one is
  complete, and replaced by two renames.
  """
  path = Path(path)
  refuse_existing(path, overwrite)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f"{path.name}.tmp-", dir=path.parent))
  try:
    os.chmod(tmp, 0o755)
    yield tmp
    refuse_existing(path, overwrite)
    _replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def refuse_existing(path: str | os.PathLike, overwrite: bool) -> None:
  """Raises FileExistsError for an existing output path, unless `overwrite`."""
  if Path(path).exists() and not overwrite:
    raise FileExistsError(
      f"Output {path} already exists; pass --overwrite to replace it (it is "
      "kept until the new one is complete), or choose another output."
    )


def _replace(new: Path, path: Path) -> None:
  if not path.exists():
    os.replace(new, path)
    return
  old = Path(tempfile.mkdtemp(prefix=f"{path.name}.old-", dir=path.parent))
  os.replace(path, old / path.name)
  try:
    os.replace(new, path)
  except BaseException:
    os.replace(old / path.name, path)
    raise
  finally:
    shutil.rmtree(old, ignore_errors=True)


def convert(
  source: str | os.PathLike,
  output: str | os.PathLike,
  head: str | None = None,
  overwrite: bool = False,
  albert_config: str | AlbertConfig | None = None,
) -> Converted:
  """Reads `source` (see `load_source`) and writes the converted directory `output`."""
  refuse_existing(Path(output), overwrite)  # before the work, and again before the rename
  converted = load_source(source, head, albert_config)
  with atomic_directory(output, overwrite) as tmp:
    write_converted(tmp, converted)
  return converted


def save_params(
  output: str | os.PathLike,
  params: Params,
  config: AlbertConfig,
  head: str,
  *,
  tokenizer: AlbertTokenizer | None = None,
  num_labels: int | None = None,
  id2label: Mapping[str, str] | None = None,
  source: str = "albert_jax",
  overwrite: bool = False,
) -> Converted:
  """Writes `params` of `head` (e.g. after fine-tuning) as a converted directory, which
  `from_pretrained` loads and `python -m albert_jax.export` turns into an HF model."""
  if head not in HEADS:
    raise ValueError(f"Unknown head {head!r}; choose one of {sorted(HEADS)}.")
  params = jax.tree.map(np.asarray, jax.device_get(nn.unbox(params)))
  expected = abstract_params(create_module(config, head, num_labels))
  got = {k: np.shape(v) for k, v in flatten_dict(params, sep="/").items()}
  want = {k: tuple(v.shape) for k, v in flatten_dict(expected, sep="/").items()}
  wrong = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
  if wrong:
    raise ValueError(
      f"params do not match head {head!r} (num_labels={num_labels}) of this "
      f"config at {len(wrong)} place(s), e.g. "
      f"{[(k, got.get(k), want.get(k)) for k in wrong[:3]]} (got, expected)."
    )
  hf_names = params_to_hf_state_dict(params, config, head)
  metadata = {
    "head": head,
    "num_labels": num_labels,
    "id2label": dict(id2label) if id2label else None,
    "source": source,
    "source_format": "albert_jax",
    "parameter_count": parameter_count(params),
    "heads_found": parts_found(hf_names),
    "tokenizer": "source" if tokenizer is not None else "bundled",
  }
  converted = Converted(config, params, head, tokenizer or AlbertTokenizer(), metadata)
  with atomic_directory(output, overwrite) as tmp:
    write_converted(tmp, converted)
  return converted


def summary(converted: Converted, output: str | os.PathLike) -> str:
  m = converted.metadata
  labels = f", num_labels {m['num_labels']}" if m["num_labels"] is not None else ""
  return (
    f"Converted {m['source']} ({m['source_format']}) -> {output}\n"
    f"  head: {m['head']}{labels}; parts found: {', '.join(m['heads_found'])}\n"
    f"  parameters: {m['parameter_count']:,}; tokenizer: {m['tokenizer']}"
  )


# ---- command line ---------------------------------------------------------------------------


def parse_flags(flag_values: flags.FlagValues, argv: Sequence[str], usage: str) -> list[str]:
  """Parses `argv` into `flag_values` (a fresh FlagValues per call: no global flag state, so
  several CLIs can be called in one process); returns the positional arguments. --help prints
  `usage` and the flags, then exits."""
  if any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv[1:]):
    print(f"{usage}\n\n{flag_values.get_help()}")
    raise SystemExit(0)
  try:
    return flag_values(list(argv))[1:]
  except flags.Error as e:
    raise ValueError(f"{e}\n\nUsage: {usage}") from None


def run_cli(main: Any) -> None:
  """Runs `main(sys.argv)`; the errors albert_jax raises for bad input print as one line."""
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  logging.getLogger("albert_jax").setLevel(logging.INFO)  # ours, not every library's
  try:
    sys.exit(main(sys.argv))
  except (ValueError, OSError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


_USAGE = "python -m albert_jax.convert --source SRC --output DIR [--head HEAD] [--overwrite]"


def main(argv: Sequence[str]) -> int:
  """`python -m albert_jax.convert`; see the module docstring."""
  fv = flags.FlagValues()
  flags.DEFINE_string(
    "source",
    None,
    "HF model dir, TF checkpoint dir/prefix, .tar.gz, or HF hub name (albert-large-v2).",
    flag_values=fv,
  )
  flags.DEFINE_string(
    "output", None, "Directory to write (must not exist, see --overwrite).", flag_values=fv
  )
  flags.DEFINE_enum(
    "head", None, list(HEADS), "Head to convert; default: detected.", flag_values=fv
  )
  flags.DEFINE_bool("overwrite", False, "Replace an existing output directory.", flag_values=fv)
  flags.DEFINE_string(
    "albert_config",
    None,
    "Config JSON file or preset name, for sources without one.",
    flag_values=fv,
  )
  rest = parse_flags(fv, argv, _USAGE)
  if rest or fv.source is None or fv.output is None:
    raise ValueError(
      f"Pass --source and --output (and no positional arguments: {rest}).\nUsage: {_USAGE}"
    )
  converted = convert(fv.source, fv.output, fv.head, fv.overwrite, fv.albert_config)
  print(summary(converted, fv.output))
  return 0


if __name__ == "__main__":
  run_cli(main)
