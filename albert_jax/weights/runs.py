"""A training run's checkpoint as a model source: a fine-tuning or pretraining workdir, or one of
its step directories (`WORKDIR/checkpoints/<step>`, `WORKDIR/best/<step>`), so runs made before
`WORKDIR/export/` existed load with `albert_jax.from_pretrained` and `python -m albert_jax.export`
(a workdir that has `export/` loads that instead).

A workdir gives its best step (`best/`), else its latest (`checkpoints/`). What the parameters
are comes from the run config (`WORKDIR/config.json`): fine-tuning's task names the head and
labels, and the model is its preset with `model_overrides` (from_scratch) or the one it started
from; pretraining's is `albert_jax.trainer.pretrain.model_config`. The parameters are the
`params` of the checkpoint's train state, restored by Orbax without the optimizer state, once
the step's files match the checksums the run recorded (`albert_jax.checkpoint`).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import ml_collections
from flax.traverse_util import flatten_dict, unflatten_dict

from albert_jax import checksums
from albert_jax.config import AlbertConfig
from albert_jax.errors import UserError
from albert_jax.tokenizer import AlbertTokenizer
from albert_jax.weights import converted

RUN_CONFIG = "config.json"
EXPORT_DIR = "export"  # what a run exports; a workdir with one loads it
STATE_ITEM = "state"
Path_ = tuple[str, ...]


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

  def __init__(self, path: Path):
    self.step_dir = step_directory(path)
    checksums.verify_recorded(
      self.step_dir, f"The checkpoint {self.step_dir} is damaged; load another step directory."
    )
    workdir = self.step_dir.parent.parent
    run = ml_collections.ConfigDict(converted.read_json(workdir / RUN_CONFIG))
    if "task" in run:
      self.config, self.tokenizer, self.metadata = _finetune(run)
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


def _finetune(run: ml_collections.ConfigDict) -> tuple[AlbertConfig, AlbertTokenizer, dict]:
  from albert_jax.data import tasks
  from albert_jax.trainer import config as config_lib
  from albert_jax.trainer import finetune

  task = tasks.get_task(run.task)
  if run.get("label_names"):
    task = tasks.with_labels(task, run.label_names)
  if run.from_scratch:
    overrides = config_lib.model_overrides(run)
    config = AlbertConfig.from_name(run.model.split("/")[-1], **overrides)
    tokenizer = AlbertTokenizer()
  else:  # the model it started from: a directory, or a hub name converted into the cache
    from albert_jax.weights.pretrained import from_pretrained

    start = from_pretrained(run.model, head="base", strict=False)
    config, tokenizer = start.config, start.tokenizer
  return config, tokenizer, {"head": task.head, **finetune.task_metadata(task)}


def _pretrain(run: ml_collections.ConfigDict) -> tuple[AlbertConfig, AlbertTokenizer, dict]:
  from albert_jax.trainer import pretrain

  vocab = pretrain._vocab_file(run)
  tokenizer = AlbertTokenizer(vocab) if vocab else AlbertTokenizer()
  return pretrain.model_config(run), tokenizer, {"head": "pretraining", "num_labels": None}
