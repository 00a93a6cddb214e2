"""Google's original ALBERT checkpoints (TF1) -> HF-named state dicts.

Google released ALBERT as TF1 checkpoints (`model.ckpt-best.{index,data-*}` with
`albert_config.json` and `30k-clean.model`, usually in a `.tar.gz`) and as TF-Hub modules, whose
variables carry a `module/` prefix. This module reads such a checkpoint and renames its
variables to HF transformers' names, transposing kernels from TF's (in, out) to HF's (out, in)
layout, so that `albert_jax.weights.hf.params_from_hf_state_dict` -- one table, one set of shape
checks -- builds the parameter tree for both sources. Optimizer slots (`adam_m`, `adam_v`) and
`global_step` are skipped; variables with no HF counterpart are reported, never silently mapped.

TensorFlow is imported only when a checkpoint is read.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import re
from pathlib import Path

import numpy as np

from albert_jax.errors import UserError

log = logging.getLogger(__name__)

CONFIG_FILE_NAME = "albert_config.json"
HUB_PREFIX = "module/"
PREFERRED_PREFIX = "model.ckpt-best"  # the checkpoint Google's tarballs ship

# Training state, not model weights: LAMB/Adam slots, step counters.
_SKIPPED = re.compile(r"(^|.*/)(global_step|adam_m|adam_v|beta1_power|beta2_power)$")

# Variables stored as HF stores them (embeddings, biases, the SOP weight already (out, in)).
_PLAIN = {
  "bert/embeddings/word_embeddings": "albert.embeddings.word_embeddings.weight",
  "bert/embeddings/position_embeddings": "albert.embeddings.position_embeddings.weight",
  "bert/embeddings/token_type_embeddings": "albert.embeddings.token_type_embeddings.weight",
  "cls/predictions/output_bias": "predictions.bias",
  "cls/seq_relationship/output_weights": "sop_classifier.classifier.weight",
  "cls/seq_relationship/output_bias": "sop_classifier.classifier.bias",
  # Google's fine-tuning scripts (classifier_utils.py) name their classifier this way.
  "output_weights": "classifier.weight",
  "output_bias": "classifier.bias",
}
# Dense layers (`kernel` (in, out), `bias`) and LayerNorms (`gamma`, `beta`), by TF scope.
_DENSE = {
  "bert/encoder/embedding_hidden_mapping_in": "albert.encoder.embedding_hidden_mapping_in",
  "bert/pooler/dense": "albert.pooler",
  "cls/predictions/transform/dense": "predictions.dense",
}
_NORM = {
  "bert/embeddings/LayerNorm": "albert.embeddings.LayerNorm",
  "cls/predictions/transform/LayerNorm": "predictions.LayerNorm",
}
# Inside `bert/encoder/transformer/group_{g}/inner_group_{i}/`.
_LAYER = re.compile(r"bert/encoder/transformer/group_(\d+)/inner_group_(\d+)/(.+)")
_LAYER_DENSE = {
  "attention_1/self/query": "attention.query",
  "attention_1/self/key": "attention.key",
  "attention_1/self/value": "attention.value",
  "attention_1/output/dense": "attention.dense",
  "ffn_1/intermediate/dense": "ffn",
  "ffn_1/intermediate/output/dense": "ffn_output",
}
_LAYER_NORM = {"LayerNorm": "attention.LayerNorm", "LayerNorm_1": "full_layer_layer_norm"}


def hf_name(tf_name: str) -> tuple[str, bool] | None:
  """The HF state-dict name of TF variable `tf_name` (without `module/`) and whether its
  value must be transposed; None for a variable HF has no counterpart of."""
  if tf_name in _PLAIN:
    return _PLAIN[tf_name], False
  if "/" not in tf_name:
    return None
  scope, leaf = tf_name.rsplit("/", 1)
  dense, norm = _DENSE, _NORM
  prefix = ""
  if layer := _LAYER.fullmatch(scope):
    group, inner, scope = layer.groups()
    prefix = f"albert.encoder.albert_layer_groups.{group}.albert_layers.{inner}."
    dense, norm = _LAYER_DENSE, _LAYER_NORM
  if scope in dense and leaf in ("kernel", "bias"):
    return f"{prefix}{dense[scope]}.{'weight' if leaf == 'kernel' else 'bias'}", leaf == "kernel"
  if scope in norm and leaf in ("gamma", "beta"):
    return f"{prefix}{norm[scope]}.{'weight' if leaf == 'gamma' else 'bias'}", False
  return None


@dataclasses.dataclass(frozen=True)
class TfCheckpoint:
  """A TF checkpoint's weights under HF names, and what was left out."""

  state_dict: dict[str, np.ndarray]  # HF names, HF layouts
  prefix: str  # the checkpoint read (`.../model.ckpt-best`)
  hub_module: bool  # variables had the TF-Hub `module/` prefix
  skipped: int  # optimizer slots and step counters
  unknown: tuple[str, ...]  # variables with no HF counterpart


def is_tf_checkpoint(path: str | os.PathLike) -> bool:
  """Whether `path` is a TF checkpoint prefix, or a directory with `albert_config.json` or a
  checkpoint (`*.index`, also under `variables/` as TF-Hub modules keep it)."""
  path = Path(path)
  if Path(f"{path}.index").is_file():
    return True
  return path.is_dir() and ((path / CONFIG_FILE_NAME).is_file() or bool(_index_files(path)))


def _index_files(directory: Path) -> list[str]:
  found = glob.glob(str(directory / "*.index")) + glob.glob(str(directory / "variables/*.index"))
  return sorted(found)


def find_checkpoint(path: str | os.PathLike) -> str:
  """The checkpoint prefix to read for `path` (a prefix, or a directory).

  In a directory: `model.ckpt-best` if present, else the one the `checkpoint` file names, else
  the only `*.index` there (or in `variables/`). Several candidates are an error naming them.
  """
  path = Path(path)
  if Path(f"{path}.index").is_file():
    return str(path)
  if not path.is_dir():
    raise FileNotFoundError(f"TF checkpoint {path} does not exist (no {path}.index either).")
  if (path / f"{PREFERRED_PREFIX}.index").is_file():
    return str(path / PREFERRED_PREFIX)
  candidates = [name[: -len(".index")] for name in _index_files(path)]
  if (path / "checkpoint").is_file():
    # The `checkpoint` file may hold absolute paths from where the checkpoint was written: only
    # its name is trusted, looked up in this directory.
    latest = _tf().train.latest_checkpoint(str(path))
    if latest and (path / f"{Path(latest).name}.index").is_file():
      return str(path / Path(latest).name)
  if len(candidates) == 1:
    return candidates[0]
  if not candidates:
    raise FileNotFoundError(
      f"No TF checkpoint in {path}: expected {PREFERRED_PREFIX}.index or another *.index "
      f"file; found {sorted(os.listdir(path))}."
    )
  raise UserError(
    f"{path} holds several TF checkpoints {[Path(c).name for c in candidates]}; "
    f"pass the one you want as its prefix, e.g. {candidates[-1]}."
  )


def find_config(prefix: str) -> Path | None:
  """`albert_config.json` next to the checkpoint (or one level up, for TF-Hub's `variables/`)."""
  here = Path(prefix).parent
  for directory in (here, here.parent):
    if (directory / CONFIG_FILE_NAME).is_file():
      return directory / CONFIG_FILE_NAME
  return None


def read_tf_checkpoint(path: str | os.PathLike) -> TfCheckpoint:
  """Reads every model variable of the checkpoint at `path` (prefix or directory), renamed to
  HF's state-dict names with HF's layouts. Corrupt or truncated files are a UserError."""
  prefix = find_checkpoint(path)
  tf = _tf()
  try:
    reader = tf.train.load_checkpoint(prefix)
    names = sorted(reader.get_variable_to_shape_map())
  except Exception as e:  # TF raises OpErrors (DataLoss, NotFound...) and others
    raise UserError(
      f"Cannot read TF checkpoint {prefix}: {_message(e)}. The .index/.data "
      "files are truncated, corrupt or incomplete; copy or extract them again."
    ) from None
  hub_module = any(name.startswith(HUB_PREFIX) for name in names)
  state: dict[str, np.ndarray] = {}
  unknown, skipped = [], 0
  for name in names:
    bare = name[len(HUB_PREFIX) :] if name.startswith(HUB_PREFIX) else name
    if _SKIPPED.fullmatch(bare):
      skipped += 1
      continue
    mapped = hf_name(bare)
    if mapped is None:
      unknown.append(name)
      continue
    hf, transpose = mapped
    if hf in state:
      raise UserError(
        f"TF checkpoint {prefix} holds {hf!r} twice (as {name!r} and another "
        "name); it mixes a TF-Hub module and a plain checkpoint."
      )
    try:
      value = np.asarray(reader.get_tensor(name))
    except Exception as e:  # TF raises OpErrors, IndexError (short read), ...
      raise UserError(
        f"Cannot read variable {name!r} of TF checkpoint {prefix}: {_message(e)}. "
        "The data file is truncated or corrupt; copy or extract it again."
      ) from None
    state[hf] = np.ascontiguousarray(value.T) if transpose else value
  if unknown:
    log.info(
      "TF checkpoint %s: %d variable(s) with no HF ALBERT counterpart were ignored, e.g. %s",
      prefix,
      len(unknown),
      unknown[:5],
    )
  if not state:
    raise UserError(
      f"TF checkpoint {prefix} has no ALBERT variables (bert/embeddings/..., "
      f"bert/encoder/...); its variables are e.g. {names[:5]}."
    )
  return TfCheckpoint(state, prefix, hub_module, skipped, tuple(unknown))


def _message(e: Exception) -> str:
  text = " ".join(str(getattr(e, "message", None) or e).split())[:300]
  return f"{type(e).__name__}: {text}"


def _tf():
  """TensorFlow, imported on first use (the rest of albert_jax does not need it)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    import tensorflow as tf
  except ImportError as e:
    raise UserError(
      "Reading Google's TF checkpoints needs TensorFlow: pip install "
      "tensorflow-cpu (or convert on a machine that has it)."
    ) from e
  return tf
