"""A training run's checkpoint as a model source: a fine-tuning or pretraining workdir, or one of
its step directories (`WORKDIR/checkpoints/<step>`, `WORKDIR/best/<step>`), so runs made before
`WORKDIR/export/` existed load with `albert_jax.from_pretrained` and `python -m albert_jax.export`
(a workdir that has `export/` loads that instead).

A workdir gives its best step (`best/`), else its latest (`checkpoints/`). What the parameters
are comes from the run config (`WORKDIR/config.json`): fine-tuning's task names the head and
labels, and the model is its preset with `model_overrides` (from_scratch) or the one it started
from; pretraining's is `pretraining_model_config`. The trainers read these functions too, so a
run and its loader agree by construction (and this package imports no trainer). The parameters
are the
`params` of the checkpoint's train state, restored by Orbax without the optimizer state, once
the step's files match the checksums the run recorded (`albert_jax.checkpoint`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
from flax.traverse_util import flatten_dict, unflatten_dict

from albert_jax import checksums
from albert_jax.config import AlbertConfig
from albert_jax.errors import UserError
from albert_jax.heads import has_num_labels
from albert_jax.tokenizer import MODEL_FILE_NAMES, AlbertTokenizer
from albert_jax.weights import converted

RUN_CONFIG = "config.json"
EXPORT_DIR = "export"  # what a run exports; a workdir with one loads it
STATE_ITEM = "state"
Path_ = tuple[str, ...]
# Loads a model's config and tokenizer by name (`from_pretrained(name, head="base")`, given by
# the loader that opens a run: the model a fine-tuning run started from).
LoadBase = Callable[[str], Any]


def _is_step(path: Path) -> bool:
  return (path / STATE_ITEM).is_dir() and path.name.isdigit()


def is_run(path: str | os.PathLike) -> bool:
  """Whether `path` is a training workdir with checkpoints, or one of its step directories."""
  path = Path(path)
  if _is_step(path):
    return (path.parent.parent / RUN_CONFIG).is_file()
  return (path / RUN_CONFIG).is_file() and any(
    (path / kind).is_dir() for kind in ("checkpoints", "best")
  )


def step_directory(path: Path) -> Path:
  """The step directory `path` names: itself, or a workdir's best, else latest, step."""
  if _is_step(path):
    return path
  for kind in ("best", "checkpoints"):
    steps = sorted((p for p in (path / kind).glob("*") if _is_step(p)), key=lambda p: int(p.name))
    if steps:
      return steps[-1]
  raise UserError(f"{path} is a training workdir without a checkpoint; train first.")


class RunCheckpoint:
  """A source for `from_pretrained`: config, tokenizer, metadata, and the params of one step."""

  def __init__(self, path: Path, load_base: LoadBase):
    self.step_dir = step_directory(path)
    checksums.verify_recorded(
      self.step_dir, f"The checkpoint {self.step_dir} is damaged; load another step directory."
    )
    workdir = self.step_dir.parent.parent
    run = ml_collections.ConfigDict(converted.read_json(workdir / RUN_CONFIG))
    if "task" in run:
      self.config, self.tokenizer, self.metadata = _finetune(run, load_base)
    else:
      self.config, self.tokenizer, self.metadata = _pretrain(run)
    self.metadata.update(
      source=str(self.step_dir), step=int(self.step_dir.name), tokenizer="source"
    )
    self.state_dir = (self.step_dir / STATE_ITEM).absolute()

  def shapes(self) -> dict[Path_, tuple[int, ...]]:
    import orbax.checkpoint as ocp

    try:
      tree = ocp.PyTreeCheckpointer().metadata(self.state_dir).item_metadata.tree["params"]
    except Exception as e:  # orbax raises many types for a damaged checkpoint
      raise UserError(f"Cannot read the checkpoint {self.state_dir}: {e}.") from None
    return {path: tuple(leaf.shape) for path, leaf in flatten_dict(tree).items()}

  def read(self, selection: dict[Path_, jax.ShapeDtypeStruct]) -> dict[Path_, jax.Array]:
    import orbax.checkpoint as ocp

    if not selection:
      return {}
    item = {"params": unflatten_dict(selection)}
    args = ocp.args.PyTreeRestore(
      item=item,
      partial_restore=True,
      restore_args=ocp.checkpoint_utils.construct_restore_args(item),
    )
    try:
      restored = ocp.PyTreeCheckpointer().restore(self.state_dir, args=args)
    except Exception as e:  # as above
      raise UserError(f"Cannot restore the checkpoint {self.state_dir}: {e}.") from None
    return flatten_dict(restored["params"])


def model_overrides(run: ml_collections.ConfigDict) -> dict[str, Any]:
  """The run config's `model_overrides` that are set."""
  return {k: v for k, v in run.model_overrides.items() if v is not None}


def task_metadata(task) -> dict[str, Any]:
  """What albert_jax.json records of a fine-tuning task: its name, labels and their names."""
  num_labels = task.num_labels if has_num_labels(task.head) else None
  names = task.label_names if num_labels and len(task.label_names) == num_labels else ()
  return {
    "task": task.name,
    "num_labels": num_labels,
    "id2label": {str(i): name for i, name in enumerate(names)} or None,
  }


def pretraining_model_config(run: ml_collections.ConfigDict) -> AlbertConfig:
  """A pretraining run's architecture: `init_from`'s config.json, else the preset; then
  `model_overrides`."""
  overrides = model_overrides(run)
  if run.init_from:
    path = os.path.join(run.init_from, converted.HF_CONFIG_FILE)
    if not converted.is_converted(run.init_from) or not os.path.isfile(path):
      raise UserError(
        f"init_from={run.init_from!r} is not a directory written by "
        "`python -m albert_jax.convert` (no albert_jax.json / config.json); convert the "
        "checkpoint first."
      )
    return dataclasses.replace(AlbertConfig.from_json_file(path), **overrides)
  try:
    return AlbertConfig.from_name(run.model, **overrides)
  except ValueError as e:
    raise UserError(f"model={run.model!r}, model_overrides: {e}") from None


def pretraining_vocab_file(run: ml_collections.ConfigDict) -> str | None:
  """A pretraining run's SentencePiece model: vocab_file, else init_from's, else None (the
  bundled one)."""
  if run.vocab_file:
    return run.vocab_file
  if run.init_from:
    for name in MODEL_FILE_NAMES:
      if os.path.isfile(path := os.path.join(run.init_from, name)):
        return path
  return None


def _finetune(
  run: ml_collections.ConfigDict, load_base: LoadBase
) -> tuple[AlbertConfig, AlbertTokenizer, dict]:
  from albert_jax.data import tasks

  task = tasks.get_task(run.task)
  if run.get("label_names"):
    task = tasks.with_labels(task, run.label_names)
  if run.from_scratch:
    config = AlbertConfig.from_name(run.model.split("/")[-1], **model_overrides(run))
    tokenizer = AlbertTokenizer()
  else:  # the model it started from: a directory, or a hub name converted into the cache
    start = load_base(run.model)
    config, tokenizer = start.config, start.tokenizer
  return config, tokenizer, {"head": task.head, **task_metadata(task)}


def _pretrain(run: ml_collections.ConfigDict) -> tuple[AlbertConfig, AlbertTokenizer, dict]:
  vocab = pretraining_vocab_file(run)
  tokenizer = AlbertTokenizer(vocab) if vocab else AlbertTokenizer()
  return pretraining_model_config(run), tokenizer, {"head": "pretraining", "num_labels": None}
