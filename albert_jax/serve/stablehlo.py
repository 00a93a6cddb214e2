"""A model -> `jax.export` StableHLO programs that `albert_jax.serving` runs (see its docstring
for the files). Written into a temporary sibling directory and renamed into place."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import jax
import numpy as np

from albert_jax import files, serving
from albert_jax.serve import program
from albert_jax.weights.pretrained import Pretrained


def exported(model: Pretrained, platforms: tuple[str, ...] = ("cpu",)) -> jax.export.Exported:
  """The `token_ids` program, lowered for every platform in `platforms`."""
  params = program.flat_params(model)
  specs = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in params.items()}
  fn = jax.jit(program.function(model))
  return jax.export.export(fn, platforms=platforms)(specs, *program.input_specs(model))


def manifest(
  model: Pretrained, platforms: tuple[str, ...], dtype: str, outputs: tuple[str, ...]
) -> dict:
  """What `serving.json` says: head, labels, max length, platforms, dtype, signatures."""
  return {
    "head": model.head,
    "labels": program.label_names(model),
    "max_length": model.config.max_position_embeddings,
    "platforms": list(platforms),
    "dtype": dtype,
    "signatures": {"token_ids": {"inputs": list(program.INPUTS), "outputs": list(outputs)}},
  }


def write(
  model: Pretrained,
  output: str | os.PathLike,
  platforms: tuple[str, ...] = ("cpu",),
  dtype: str = "float32",
  overwrite: bool = False,
) -> None:
  """Writes OUT (see `albert_jax.serving`) for `model`, also `spiece.model` for its ids."""
  files.refuse_existing(output, overwrite)
  program_ = exported(model, platforms)
  with files.atomic_directory(output, overwrite) as tmp:
    (tmp / f"token_ids{serving.PROGRAM_SUFFIX}").write_bytes(program_.serialize())
    np.savez(tmp / serving.PARAMS_FILE, **program.flat_params(model))
    outputs = program.OUTPUTS[model.head]
    files.write_json(tmp / serving.MANIFEST_FILE, manifest(model, platforms, dtype, outputs))
    shutil.copyfile(Path(serving.__file__), tmp / serving.LOADER_FILE)
    model.tokenizer.save_pretrained(tmp)


def export(
  checkpoint: str | os.PathLike,
  output: str | os.PathLike,
  platforms: str | tuple[str, ...] = "cpu",
  dtype: str = "float32",
  overwrite: bool = False,
) -> Pretrained:
  """`checkpoint` (anything `from_pretrained` reads) -> StableHLO in `output`."""
  platforms = program.check_platforms(platforms)
  files.refuse_existing(output, overwrite)
  model = program.load(checkpoint, dtype)
  write(model, output, platforms, dtype, overwrite)
  return model
