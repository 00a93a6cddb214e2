"""Reading a checkpoint from wherever it is into memory, and converting it to a directory.

A source is an HF model directory (`config.json` + `model.safetensors` or `pytorch_model.bin`),
a TF checkpoint directory or prefix (`albert_config.json`, `model.ckpt-best.*`,
`30k-clean.model`; TF-Hub `module/` names too), a `.tar.gz` of either, or an HF hub name
(`albert-large-v2`), downloaded into the hub's usual cache. `load_source` reads any of them
into a `Converted`; `convert` writes that as a converted directory
(`albert_jax.weights.converted`). An HF directory that `albert_jax.export` wrote records the
sha256 of its files (`checksums.json`); they are verified before the weights are read.
"""

from __future__ import annotations

import os
import re
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from albert_jax import checksums, files
from albert_jax.config import AlbertConfig
from albert_jax.errors import UserError
from albert_jax.heads import head_spec
from albert_jax.tokenizer import MODEL_FILE_NAMES, AlbertTokenizer
from albert_jax.weights import hf, tf1
from albert_jax.weights.converted import (
  HF_CONFIG_FILE,
  Converted,
  check_vocab,
  is_converted,
  metadata,
  read_json,
  write_converted,
)

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


def convert(
  source: str | os.PathLike,
  output: str | os.PathLike,
  head: str | None = None,
  overwrite: bool = False,
  albert_config: str | AlbertConfig | None = None,
) -> Converted:
  """Reads `source` (see `load_source`) and writes the converted directory `output`."""
  files.refuse_existing(output, overwrite)  # before the work, and again before the rename
  converted = load_source(source, head, albert_config)
  with files.atomic_directory(output, overwrite) as tmp:
    write_converted(tmp, converted)
  return converted


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


# ---- the HF hub -----------------------------------------------------------------------------


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


# ---- local sources ----------------------------------------------------------------------------


def is_hf_model_dir(path: str | os.PathLike) -> bool:
  path = Path(path)
  return (path / HF_CONFIG_FILE).is_file() and any((path / f).is_file() for f in _WEIGHT_FILES)


def _extract(archive: Path, into: Path) -> Path:
  """Extracts `archive` and returns the directory in it that holds the checkpoint."""
  try:
    with tarfile.open(archive, "r:*") as tar:
      tar.extractall(into, filter="data")
  except (tarfile.TarError, EOFError, OSError) as e:
    raise UserError(
      f"Cannot extract {archive}: {e}. The archive is truncated or corrupt; download it again."
    ) from None
  for directory in sorted([into, *(p for p in into.rglob("*") if p.is_dir())]):
    if is_hf_model_dir(directory) or (directory / tf1.CONFIG_FILE_NAME).is_file():
      return directory
  for directory in sorted([into, *(p for p in into.rglob("*") if p.is_dir())]):
    if tf1.is_tf_checkpoint(directory):
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
  config = _config_override(albert_config)
  if head is not None:
    head_spec(head)  # an unknown head is a UserError
  if is_converted(path):
    raise UserError(
      f"{path} is already converted; load it with albert_jax.from_pretrained({str(path)!r})."
    )
  if is_hf_model_dir(path):
    checksums.verify_recorded(path, "Export (or download) the model again.")
    hf_config = read_json(path / HF_CONFIG_FILE)
    config = config or AlbertConfig.from_dict(hf_config)
    state = load_hf_state_dict(path)
    architectures = hf_config.get("architectures")
    fmt = "hf-hub" if hub else "hf"
  elif tf1.is_tf_checkpoint(path):
    ckpt = tf1.read_tf_checkpoint(path)
    if config is None:
      config_file = tf1.find_config(ckpt.prefix)
      if config_file is None:
        raise FileNotFoundError(
          f"No {tf1.CONFIG_FILE_NAME} next to TF checkpoint {ckpt.prefix}; pass its "
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

  head = head or hf.detect_head(state, architectures)
  try:
    params = hf.params_from_hf_state_dict(state, config, head)
  except UserError as e:
    raise UserError(
      f"{source}: {e} (To start a new head from these weights, convert them as "
      "they are and load with from_pretrained(DIR, head=...).)"
    ) from None
  if (pooler := hf.unused_pooler(state, config, head, np.float32)) is not None:
    params["albert"]["pooler"] = pooler
  num_labels = hf.num_labels(state, head)
  id2label = hf_config.get("id2label")
  if num_labels is None or not isinstance(id2label, dict) or len(id2label) != num_labels:
    id2label = None
  tokenizer, tokenizer_source = _tokenizer(path)
  check_vocab(tokenizer, config, str(source), own=tokenizer_source == "source")
  meta = metadata(
    head,
    params,
    state,
    num_labels=num_labels,
    id2label=id2label,
    source=source,
    source_format=fmt,
    tokenizer=tokenizer_source,
  )
  return Converted(config, params, head, tokenizer, meta)


def _tokenizer(path: Path) -> tuple[AlbertTokenizer, str]:
  """The source's SentencePiece model if it has one, else the bundled 30k-clean one."""
  if any((path / name).is_file() for name in MODEL_FILE_NAMES):
    return AlbertTokenizer.from_pretrained(path), "source"
  return AlbertTokenizer(), "bundled"


# ---- HF weight files ----------------------------------------------------------------------------


def load_hf_state_dict(directory: str | os.PathLike) -> dict[str, Any]:
  """The tensors of an HF model directory: `model.safetensors`, else `pytorch_model.bin`
  (sharded `*.index.json` variants too). Unreadable files are a UserError naming them."""
  directory = Path(directory)
  for name in _WEIGHT_FILES:
    if not (directory / name).is_file():
      continue
    if name.endswith(".index.json"):
      shards = sorted(set(read_json(directory / name).get("weight_map", {}).values()))
      paths = [directory / shard for shard in shards]
    else:
      paths = [directory / name]
    state: dict[str, Any] = {}
    for path in paths:
      state.update(_read_weights(path))
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
      raise UserError(f"Cannot read {file}. {hint} ({_brief(e)})") from None
  import torch

  try:
    return torch.load(file, map_location="cpu", weights_only=True)
  except Exception as e:  # pickle and zip errors of every kind
    raise UserError(f"Cannot read {file}. {hint} ({_brief(e)})") from None
