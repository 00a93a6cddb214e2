"""albert_jax weights -> an HF transformers model directory.

    python -m albert_jax.export --checkpoint DIR --output HF_DIR [--overwrite]

`DIR` is anything `albert_jax.from_pretrained` loads (a converted directory, typically). HF_DIR
gets what `AlbertFor*.save_pretrained` writes, so `transformers.AutoModel*.from_pretrained`
(and the `Albert*` classes) load it without missing or unexpected keys:

  config.json         ALBERT config, `architectures` naming the HF class of the stored head
                      (`AlbertForSequenceClassification`, ...), `num_labels` via `id2label`
  model.safetensors   float32 tensors under HF's names. The MLM decoder's weight and bias are
                      tied to the word embeddings and `predictions.bias` in HF and left out,
                      as HF's own save does (safetensors refuses shared tensors)
  spiece.model        the SentencePiece model (+ tokenizer_config.json)

The directory is written next to HF_DIR and renamed into place when complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from absl import flags

from albert_jax import convert
from albert_jax.pretrained import Pretrained, from_pretrained

# Tied to other tensors in HF; `save_pretrained` drops them and `from_pretrained` re-ties them.
TIED = ("predictions.decoder.weight", "predictions.decoder.bias")


def hf_config_dict(model: Pretrained) -> dict[str, Any]:
  """The `config.json` HF transformers needs to rebuild `model`'s head."""
  d = model.config.to_hf_dict()
  d["architectures"] = [convert.HF_ARCHITECTURES[model.head]]
  d["tie_word_embeddings"] = True
  if model.num_labels is not None:
    stored = model.metadata.get("id2label")
    if not isinstance(stored, dict) or len(stored) != model.num_labels:
      stored = {str(i): f"LABEL_{i}" for i in range(model.num_labels)}
    d["id2label"] = {str(k): v for k, v in stored.items()}
    d["label2id"] = {v: int(k) for k, v in stored.items()}
  return d


def hf_state_dict(model: Pretrained) -> dict[str, np.ndarray]:
  """`model`'s parameters under HF's names, without the tied copies."""
  params = jax.device_get(model.params)
  state = convert.params_to_hf_state_dict(params, model.config, model.head)
  return {name: value for name, value in state.items() if name not in TIED}


def export(
  checkpoint: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False
) -> Pretrained:
  """Writes the HF model directory `output` for `checkpoint` (see the module docstring)."""
  from safetensors.numpy import save_file

  convert.refuse_existing(output, overwrite)  # before the work, and again before the rename
  model = from_pretrained(checkpoint, strict=True)
  state = hf_state_dict(model)
  with convert.atomic_directory(output, overwrite) as tmp:
    (tmp / convert.HF_CONFIG_FILE).write_text(
      json.dumps(hf_config_dict(model), indent=2, sort_keys=True) + "\n"
    )
    save_file(state, str(tmp / convert.SAFETENSORS_FILE), metadata={"format": "pt"})
    model.tokenizer.save_pretrained(tmp)
  return model


_USAGE = "python -m albert_jax.export --checkpoint DIR --output HF_DIR [--overwrite]"


def main(argv: Sequence[str]) -> int:
  """`python -m albert_jax.export`; see the module docstring."""
  fv = flags.FlagValues()
  flags.DEFINE_string(
    "checkpoint",
    None,
    "Converted albert_jax directory (or any source from_pretrained reads).",
    flag_values=fv,
  )
  flags.DEFINE_string("output", None, "HF model directory to write.", flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "Replace an existing output directory.", flag_values=fv)
  rest = convert.parse_flags(fv, argv, _USAGE)
  if rest or fv.checkpoint is None or fv.output is None:
    raise ValueError(
      f"Pass --checkpoint and --output (no positional arguments: {rest}).\nUsage: {_USAGE}"
    )
  model = export(fv.checkpoint, fv.output, fv.overwrite)
  print(
    f"Exported {fv.checkpoint} -> {fv.output}: {convert.HF_ARCHITECTURES[model.head]}, "
    f"{convert.parameter_count(model.params):,} parameters"
  )
  return 0


if __name__ == "__main__":
  convert.run_cli(main)
