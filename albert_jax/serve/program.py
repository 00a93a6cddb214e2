"""The model as one function for serialization: (params, input_ids, attention_mask,
token_type_ids) -> the head's raw outputs, batch and length symbolic.

`params` is the parameter tree flattened to `/`-joined paths (`albert/embeddings/...`): a flat
dict of arrays, as `params.npz` and the SavedModel's variables hold it. The outputs are float32
whatever the compute dtype.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from albert_jax.errors import UserError
from albert_jax.weights.pretrained import Pretrained, from_pretrained

# The raw outputs each exportable head returns (multiple choice takes [B, C, L]: not served).
OUTPUTS = {
  "base": ("last_hidden_state", "pooler_output"),
  "pretraining": ("prediction_logits", "sop_logits"),
  "masked_lm": ("logits",),
  "sequence_classification": ("logits",),
  "token_classification": ("logits",),
  "question_answering": ("start_logits", "end_logits"),
}
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def load(checkpoint: str | os.PathLike, dtype: str = "float32") -> Pretrained:
  """The model to export, computing in `dtype` (its parameters stay as stored)."""
  if dtype not in DTYPES:
    raise UserError(f"--dtype={dtype}: choose one of {', '.join(DTYPES)}.")
  model = from_pretrained(checkpoint, strict=True, dtype=DTYPES[dtype])
  if model.head not in OUTPUTS:
    raise UserError(
      f"{checkpoint} has head {model.head!r}, which takes [batch, choices, length] inputs; "
      f"serving exports the heads {', '.join(OUTPUTS)}."
    )
  return model


def check_platforms(platforms: str | tuple[str, ...]) -> tuple[str, ...]:
  """`cpu,cuda,tpu` -> ("cpu", "cuda", "tpu"), each one checked."""
  names = (
    tuple(p.strip() for p in platforms.split(",")) if isinstance(platforms, str) else platforms
  )
  bad = [p for p in names if p not in PLATFORMS]
  if bad or not names:
    raise UserError(f"--platforms={','.join(names)}: give some of {', '.join(PLATFORMS)}.")
  return names


def flat_params(model: Pretrained) -> dict[str, np.ndarray]:
  """The parameters as host arrays under `/`-joined paths."""
  flat = flatten_dict(jax.device_get(model.params))
  return {"/".join(path): np.asarray(leaf) for path, leaf in flat.items()}


def function(model: Pretrained):
  """`f(params, input_ids, attention_mask, token_type_ids) -> {output: float32 array}`:
  inputs int32 [B, L], outputs [B, ...] named as in `OUTPUTS`."""
  names = OUTPUTS[model.head]

  def f(params: dict[str, Any], input_ids, attention_mask, token_type_ids):
    tree = unflatten_dict({tuple(k.split("/")): v for k, v in params.items()})
    out = model.module.apply({"params": tree}, input_ids, attention_mask, token_type_ids)
    return {name: getattr(out, name).astype(jnp.float32) for name in names}

  return f


def constraints(model: Pretrained) -> list[str]:
  """What the symbolic length may be: at most the model's positions."""
  return [f"l <= {model.config.max_position_embeddings}"]


def input_specs(model: Pretrained) -> list[jax.ShapeDtypeStruct]:
  """The three inputs, int32 [b, l] with `b` and `l` symbolic (`constraints`)."""
  shape = jax.export.symbolic_shape("b, l", constraints=constraints(model))
  return [jax.ShapeDtypeStruct(shape, jnp.int32) for _ in INPUTS]


def label_names(model: Pretrained) -> list[str]:
  """The stored label names by id (`id2label`), else HF's `LABEL_<i>` (as the pipelines)."""
  stored = model.metadata.get("id2label") or {}
  return [stored.get(str(i), f"LABEL_{i}") for i in range(model.num_labels or 0)]
