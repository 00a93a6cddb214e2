"""Writes a trained model in the layout `python -m albert_jax.convert` writes: params/,
config.json, albert_jax.json, spiece.model. `albert_jax.from_pretrained(DIR)` loads it and
`--config.model=DIR` fine-tunes it, with no conversion step.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from typing import Any

import jax

from albert_jax import distributed, train
from albert_jax.config import AlbertConfig
from albert_jax.tokenizer import AlbertTokenizer
from albert_jax.weights import converted, hf, runs


def write(
  directory: str,
  state: train.TrainState,
  albert: AlbertConfig,
  tokenizer: AlbertTokenizer,
  metadata: Mapping[str, Any],
) -> None:
  """Writes the model as `python -m albert_jax.convert` does (params/, config.json,
  albert_jax.json, spiece.model), replacing `directory` only once the new one is complete.

  The head is the state's. Every process takes part (Orbax writes each process's shards of
  the parameters).
  """
  directory = os.path.abspath(directory)
  tmp = f"{directory}.tmp-{int(state.step)}"
  main = distributed.is_main_process()
  if main:
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
  _sync("export-start")
  params, head = state.params, state.head
  names = hf.hf_parameter_table(albert, head)
  meta = {
    "head": head,
    "num_labels": None,
    "id2label": None,
    "parameter_count": converted.parameter_count(params),
    "heads_found": hf.parts_found(names),
    **metadata,
  }
  converted.write_converted(tmp, converted.Converted(albert, params, head, tokenizer, meta))
  _sync("export-written")
  if main:
    old = f"{directory}.old-{int(state.step)}"
    if os.path.exists(directory):
      os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
  _sync("export-done")


def run_metadata(config, workdir: str, task, step: int, metrics) -> dict[str, Any]:
  """What a fine-tuning run records in its export's albert_jax.json: where it came from, the
  step, that step's eval metrics and the task's head and labels."""
  return {
    "source": os.path.abspath(workdir),
    "source_format": "albert_jax.finetune",
    "tokenizer": "bundled" if config.from_scratch else "source",
    "step": step,
    "metrics": metrics,
    **runs.task_metadata(task),
  }


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)
