"""The converted directory: what `python -m albert_jax.convert` and `save_params` write, and
what `albert_jax.from_pretrained` loads.

  DIR/params/           Orbax checkpoint of the parameter tree (plain arrays, HF-like names)
  DIR/config.json       the ALBERT config, HF's format
  DIR/albert_jax.json   head, num_labels, id2label, source, parameter count, parts found
  DIR/spiece.model      the SentencePiece model (+ tokenizer_config.json)

albert_jax.json also holds the sha256 of every other file (`checksums`); loading verifies
them, so a damaged or altered file is an error naming it, not wrong numbers.

Directories are written through `albert_jax.files.atomic_directory`: they appear complete or
not at all.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np
from flax.traverse_util import flatten_dict

from albert_jax import checksums, files
from albert_jax.config import AlbertConfig
from albert_jax.errors import UserError
from albert_jax.heads import abstract_params, create_module, head_spec
from albert_jax.tokenizer import AlbertTokenizer
from albert_jax.weights import hf

Params = dict[str, Any]
log = logging.getLogger(__name__)

METADATA_FILE = "albert_jax.json"
PARAMS_DIR = "params"
HF_CONFIG_FILE = "config.json"


class Converted(NamedTuple):
  """A checkpoint read into memory: what `convert` writes and `from_pretrained` loads."""

  config: AlbertConfig
  params: Params  # numpy arrays; the head's tree, plus the pooler if the head does not use it
  head: str
  tokenizer: AlbertTokenizer
  metadata: dict[str, Any]  # what albert_jax.json holds

  def summary(self, output: str | os.PathLike) -> str:
    """What was converted into `output`, in three lines."""
    m = self.metadata
    labels = f", num_labels {m['num_labels']}" if m["num_labels"] is not None else ""
    return (
      f"Converted {m['source']} ({m['source_format']}) -> {output}\n"
      f"  head: {m['head']}{labels}; parts found: {', '.join(m['heads_found'])}\n"
      f"  parameters: {m['parameter_count']:,}; tokenizer: {m['tokenizer']}"
    )


def check_vocab(tokenizer: AlbertTokenizer, config: AlbertConfig, name: str, own: bool) -> None:
  """The tokenizer must not make ids the model has no embedding for.

  A tokenizer of the model's own (`own`) larger than its `vocab_size` is an error; the
  bundled 30k one (the source has none) or a smaller one is a warning: then the ids of every
  text are checked where they enter the model (`tokenizer.check_token_ids`).
  """
  have, want = tokenizer.vocab_size, config.vocab_size
  if have == want:
    return
  if have > want and own:
    raise UserError(
      f"{name}: its tokenizer has {have} pieces but the model's vocab_size is {want}; ids "
      f"{want} and above have no embedding. Use the spiece.model the model was trained with."
    )
  kind = "its own" if own else "the bundled"
  log.warning(
    "%s: %s tokenizer has %d pieces, the model's vocab_size is %d; %s",
    name,
    kind,
    have,
    want,
    "texts with ids beyond the model's vocabulary will be refused."
    if have > want
    else "the model's last embeddings are never used.",
  )


def is_converted(path: str | os.PathLike) -> bool:
  """Whether `path` is a converted directory."""
  return (Path(path) / METADATA_FILE).is_file()


def parameter_count(params: Params) -> int:
  return int(sum(np.prod(np.shape(leaf)) for leaf in jax.tree.leaves(params)))


def metadata(
  head: str,
  params: Params,
  hf_names: Iterable[str],
  *,
  num_labels: int | None,
  id2label: Mapping[str, str] | None,
  source: str,
  source_format: str,
  tokenizer: str,
) -> dict[str, Any]:
  """The content of albert_jax.json; `hf_names` are the HF tensor names the weights had."""
  return {
    "head": head,
    "num_labels": num_labels,
    "id2label": dict(id2label) if id2label else None,
    "source": source,
    "source_format": source_format,  # hf, hf-hub, tf, tf-hub-module or albert_jax
    "parameter_count": parameter_count(params),
    "heads_found": hf.parts_found(hf_names),
    "tokenizer": tokenizer,  # "source" (the checkpoint's own) or "bundled"
  }


def read_json(path: Path) -> dict[str, Any]:
  """A JSON file of a checkpoint; invalid JSON is a UserError naming the file."""
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise UserError(f"{path} is not valid JSON ({e}); fix it or download it again.") from None


def hf_config(config: AlbertConfig, meta: Mapping[str, Any]) -> dict[str, Any]:
  """config.json: the ALBERT config, with the label names as HF writes them if there are any."""
  d = config.to_hf_dict()
  if id2label := meta.get("id2label"):
    d["id2label"] = {str(k): v for k, v in id2label.items()}
    d["label2id"] = {v: int(k) for k, v in id2label.items()}
  return d


def write_converted(directory: str | os.PathLike, converted: Converted) -> None:
  """Writes `converted` into the existing, empty `directory` (see the module docstring).

  In a multi-process run every process calls it: each writes its shards of the parameters,
  then process 0 alone writes the other files. (Two writers of one file race: one process
  hashing the directory for `albert_jax.json` would meet the other's temporary file, gone by
  the time it is read.) The caller waits for process 0 before using the directory."""
  import orbax.checkpoint as ocp

  directory = Path(directory)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory.absolute() / PARAMS_DIR, converted.params)
  if not files.is_main_process():
    return
  files.write_json(directory / HF_CONFIG_FILE, hf_config(converted.config, converted.metadata))
  converted.tokenizer.save_pretrained(directory)
  sums = checksums.of_files(directory, exclude=(METADATA_FILE,))
  files.write_json(directory / METADATA_FILE, {**converted.metadata, "checksums": sums})


def verify_checksums(directory: str | os.PathLike, meta: Mapping[str, Any]) -> None:
  """Raises a UserError naming the first file of `directory` whose sha256 is not the one
  albert_jax.json records (directories written before checksums were recorded pass)."""
  recorded_in = str(Path(directory) / METADATA_FILE)
  remedy = "Convert (or copy) the model again."
  checksums.verify(directory, meta.get("checksums") or {}, recorded_in, remedy)


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
  head_spec(head)  # an unknown head is a UserError
  params = jax.tree.map(np.asarray, jax.device_get(nn.unbox(params)))
  expected = abstract_params(create_module(config, head, num_labels))
  got = {k: np.shape(v) for k, v in flatten_dict(params, sep="/").items()}
  want = {k: tuple(v.shape) for k, v in flatten_dict(expected, sep="/").items()}
  wrong = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
  if wrong:
    raise UserError(
      f"params do not match head {head!r} (num_labels={num_labels}) of this "
      f"config at {len(wrong)} place(s), e.g. "
      f"{[(k, got.get(k), want.get(k)) for k in wrong[:3]]} (got, expected)."
    )
  meta = metadata(
    head,
    params,
    hf.params_to_hf_state_dict(params, config, head),
    num_labels=num_labels,
    id2label=id2label,
    source=source,
    source_format="albert_jax",
    tokenizer="source" if tokenizer is not None else "bundled",
  )
  converted = Converted(config, params, head, tokenizer or AlbertTokenizer(), meta)
  with files.atomic_directory(output, overwrite) as tmp:
    write_converted(tmp, converted)
  return converted
