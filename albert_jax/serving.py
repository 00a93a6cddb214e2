"""Run an exported StableHLO model with jax and numpy alone: no albert_jax, flax or tokenizer.

`python -m albert_jax.export --format stablehlo --model DIR --output OUT` writes OUT/ with

  token_ids.stablehlo  the model as a `jax.export` program: (params, input_ids,
                       attention_mask, token_type_ids) -> the head's raw outputs; batch and
                       length are symbolic, inputs int32 [batch, length]
  params.npz           the parameters, one array per `/`-joined tree path
  serving.json         head, labels, max length, platforms, outputs
  albert_serving.py    a copy of this file, so a process without albert_jax can load OUT

    import sys; sys.path.insert(0, "OUT")
    import albert_serving
    model = albert_serving.load("OUT")
    out = model.token_ids(input_ids, attention_mask, token_type_ids)  # {name: np.ndarray}

Without this file, the same in four lines:

    exported = jax.export.deserialize(open("OUT/token_ids.stablehlo", "rb").read())
    params = dict(np.load("OUT/params.npz"))
    out = exported.call(params, input_ids, attention_mask, token_type_ids)

The token ids come from ALBERT's tokenizer (`albert_jax.AlbertTokenizer`, or HF's
`AlbertTokenizer` with the exported `spiece.model`: the same ids).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

PROGRAM_SUFFIX = ".stablehlo"
PARAMS_FILE = "params.npz"
MANIFEST_FILE = "serving.json"
LOADER_FILE = "albert_serving.py"


class Served:
  """An exported model: `signatures` by name, and `serving.json` as `manifest`."""

  def __init__(self, directory: str | os.PathLike):
    directory = Path(directory)
    self.manifest: dict[str, Any] = json.loads((directory / MANIFEST_FILE).read_text())
    with np.load(directory / PARAMS_FILE) as stored:
      self.params = {name: jax.device_put(stored[name]) for name in stored.files}
    self.signatures = {
      name: jax.export.deserialize((directory / f"{name}{PROGRAM_SUFFIX}").read_bytes())
      for name in self.manifest["signatures"]
    }

  def token_ids(
    self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None
  ) -> dict[str, np.ndarray]:
    """The head's raw outputs for int32 [batch, length] inputs (mask 1, types 0 if None)."""
    ids = np.asarray(input_ids, np.int32)
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, np.int32)
    types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids, np.int32)
    out = self.signatures["token_ids"].call(self.params, ids, mask, types)
    return {name: np.asarray(value) for name, value in out.items()}


def load(directory: str | os.PathLike) -> Served:
  """The model exported into `directory` (see the module docstring)."""
  return Served(directory)
