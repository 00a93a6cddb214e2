"""albert_jax weights -> an HF transformers model directory.

`export(checkpoint, output)` loads anything `albert_jax.from_pretrained` loads (a converted
directory, typically) and writes what `AlbertFor*.save_pretrained` writes, so
`transformers.AutoModel*.from_pretrained` (and the `Albert*` classes) load it without missing
or unexpected keys:

  config.json         ALBERT config, `architectures` naming the HF class of the stored head
                      (`AlbertForSequenceClassification`, ...), `num_labels` via `id2label`
  model.safetensors   float32 tensors under HF's names. The MLM decoder's weight and bias are
                      tied to the word embeddings and `predictions.bias` in HF and left out,
                      as HF's own save does (safetensors refuses shared tensors)
  spiece.model        the SentencePiece model (+ tokenizer_config.json)
  checksums.json      the sha256 of every other file (`albert_jax.checksums`); albert_jax
                      verifies them when it reads the directory (HF ignores the file)

The directory is written next to `output` and renamed into place when complete.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from albert_jax import checksums, files
from albert_jax.heads import HEADS
from albert_jax.weights import hf
from albert_jax.weights.converted import HF_CONFIG_FILE
from albert_jax.weights.pretrained import Pretrained, from_pretrained
from albert_jax.weights.sources import SAFETENSORS_FILE

# Tied to other tensors in HF; `save_pretrained` drops them and `from_pretrained` re-ties them.
TIED = ("predictions.decoder.weight", "predictions.decoder.bias")


def hf_config_dict(model: Pretrained) -> dict[str, Any]:
  """The `config.json` HF transformers needs to rebuild `model`'s head."""
  d = model.config.to_hf_dict()
  d["architectures"] = [HEADS[model.head].hf_class]
  d["tie_word_embeddings"] = True
  if model.num_labels is not None:
    stored = model.metadata.get("id2label")
    if not isinstance(stored, dict) or len(stored) != model.num_labels:
      stored = {str(i): f"LABEL_{i}" for i in range(model.num_labels)}
    d["id2label"] = {str(k): v for k, v in stored.items()}
    d["label2id"] = {v: int(k) for k, v in stored.items()}
    if model.num_labels == 1 and model.head == "sequence_classification":
      d["problem_type"] = "regression"  # HF's pipeline then returns the raw score, as ours
  return d


def hf_state_dict(model: Pretrained) -> dict[str, np.ndarray]:
  """`model`'s parameters under HF's names, without the tied copies."""
  params = jax.device_get(model.params)
  state = hf.params_to_hf_state_dict(params, model.config, model.head)
  return {name: value for name, value in state.items() if name not in TIED}


def export(
  checkpoint: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False
) -> Pretrained:
  """Writes the HF model directory `output` for `checkpoint` (see the module docstring)."""
  from safetensors.numpy import save_file

  files.refuse_existing(output, overwrite)  # before the work, and again before the rename
  model = from_pretrained(checkpoint, strict=True)
  state = hf_state_dict(model)
  with files.atomic_directory(output, overwrite) as tmp:
    files.write_json(tmp / HF_CONFIG_FILE, hf_config_dict(model))
    save_file(state, str(tmp / SAFETENSORS_FILE), metadata={"format": "pt"})
    model.tokenizer.save_pretrained(tmp)
    checksums.write(tmp)  # verified when albert_jax reads the directory back
  return model
