"""Checkpoints of a training run with Orbax: the train state and the data position.

Each checkpoint is a step directory with named items:
  state     the train state's arrays: {"step", "params", "opt_state"} (an Orbax PyTree)
  data      where the input pipeline stands, a JSON dict (e.g. {"epoch": 2, "index": 96})
  metrics   the eval metrics it was saved with (JSON; best checkpoints only)

`Checkpoints` keeps the latest `keep` checkpoints in `directory` and, separately, the one with
the best eval metric in `best_directory`. Orbax writes each step to a temporary directory and
renames it when complete, so a run killed mid-save leaves the previous checkpoint intact.
A save that fails in the background (a full disk) is reported as an `OSError` naming the
checkpoint, the directory and the checkpoint still intact, at the next `check()` (the train
loop calls it every step), save, wait or close.

Once a save is known to be complete (at the next `check()`, save, wait or close), the sha256 of
every file of its step directory is recorded in `<step>/checksums.json` (`albert_jax.checksums`);
`restore` verifies them first, so a damaged file is a UserError naming it. A checkpoint without
that file (written by an older version, or a run killed between the save and the record) is
restored unchecked.

Restoring needs a target: `abstract_state(state)` (or `jax.eval_shape` of the function that
builds the state). The arrays are placed by `target_shardings` (a TrainState of shardings, or
one sharding for all), else by the target's own shardings, else on the first device -- so a run
can resume on a different mesh than it was saved from.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from albert_jax import checksums
from albert_jax.train import TrainState

Json = dict[str, Any]
_BETTER = {"max": lambda new, old: new > old, "min": lambda new, old: new < old}


def abstract_state(state: TrainState) -> TrainState:
  """The state with every array replaced by a `jax.ShapeDtypeStruct` (keeping shardings)."""

  def leaf(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))

  return jax.tree.map(leaf, state)


def _arrays(state: TrainState) -> Json:
  return {"step": state.step, "params": state.params, "opt_state": state.opt_state}


def _with_shardings(target: Any, shardings: Any) -> Any:
  """`target`'s leaves as ShapeDtypeStructs carrying a sharding Orbax can restore onto."""
  default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  if isinstance(shardings, TrainState):
    shardings = _arrays(shardings)
  if shardings is None or isinstance(shardings, jax.sharding.Sharding):
    one = shardings
    return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=one or getattr(x, "sharding", None) or default
      ),
      target,
    )
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), target, shardings
  )


def _barriers(prefix: str) -> ocp.options.MultiprocessingOptions:
  """Orbax's multi-process options with the barriers' names starting with `prefix`."""
  return ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=prefix)


def _step_directory(manager: ocp.CheckpointManager, step: int) -> Path:
  return Path(manager.directory) / str(step)


def _verify(manager: ocp.CheckpointManager, step: int) -> None:
  """Raises a UserError naming a file of checkpoint `step` that does not match its checksum."""
  earlier = [s for s in manager.all_steps() if s < step]
  directory = _step_directory(manager, step)
  remedy = (
    f"Delete {directory} to resume from checkpoint {max(earlier)} (the one before it)"
    if earlier
    else f"Delete {directory} to start the run again from step 0"
  ) + ", or start a new run in another --workdir."
  checksums.verify_recorded(directory, f"Checkpoint {step} is damaged. {remedy}")


class Checkpoints:
  """Latest-N and best-by-metric checkpoints of one run (Orbax `CheckpointManager`s).

  Args:
    directory: where the latest checkpoints go (`<directory>/<step>/{state,data}`).
    keep: how many of the latest to keep.
    best_directory: where the best checkpoint goes; None to keep no best checkpoint.
    best_metric: the key of the eval metrics that decides "best".
    best_mode: "max" (accuracy, F1) or "min" (a loss).
    name: tells this object's multi-process barriers from those of others saving at the same
      time (the same on every process, unique among them).
  """

  def __init__(
    self,
    directory: str | os.PathLike,
    *,
    keep: int = 2,
    best_directory: str | os.PathLike | None = None,
    best_metric: str | None = None,
    best_mode: str = "max",
    name: str = "latest",
  ):
    if keep < 1:
      raise ValueError(f"keep={keep}: keep at least one checkpoint.")
    if best_mode not in _BETTER:
      raise ValueError(f"best_mode={best_mode!r}: use 'max' or 'min'.")
    if best_directory is not None and not best_metric:
      raise ValueError("best_directory needs best_metric, the eval metric that ranks checkpoints.")
    self.best_metric, self.best_mode = best_metric, best_mode
    self._saving: dict[int, int] = {}  # id(manager) -> the step it saves (or saved last)
    self._unrecorded: dict[int, int] = {}  # id(manager) -> a saved step without checksums yet
    # Managers may save the same step at once (the last step is often the best; several
    # seeds' best states): on several processes their barriers would share a name
    # ("async_write_complete.<step>") and the second to arrive fails with "Barrier ... is
    # already ongoing". A prefix each keeps them apart.
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, multiprocessing_options=_barriers(name)
    )
    self._latest = ocp.CheckpointManager(
      os.fspath(directory), options=options, item_names=("state", "data")
    )
    self._best = None
    if best_directory is not None:
      options = ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True, multiprocessing_options=_barriers(f"{name}_best")
      )
      self._best = ocp.CheckpointManager(
        os.fspath(best_directory), options=options, item_names=("state", "data", "metrics")
      )

  @contextlib.contextmanager
  def _reported(self, manager: ocp.CheckpointManager) -> Any:
    """Turns a failed (background) save of `manager` into an OSError that says what to do."""
    try:
      yield
    except OSError as e:
      step, directory = self._saving.get(id(manager)), os.fspath(manager.directory)
      intact = manager.latest_step()
      what = "no space left on device" if e.errno == errno.ENOSPC else e.strerror or str(e)
      raise OSError(
        e.errno,
        f"checkpoint {step} could not be written to {directory}: {what} ({e}). "
        + (f"Checkpoint {intact} is intact; " if intact is not None else "")
        + "free space (or fix the directory) and rerun the same command to resume.",
      ) from e

  def check(self) -> None:
    """Raises the error of a background save that failed (see `_reported`); else returns."""
    for manager in filter(None, (self._latest, self._best)):
      if not manager.is_saving_in_progress():
        self._finish(manager)  # returns at once, or raises the save's error

  def _finish(self, manager: ocp.CheckpointManager) -> None:
    """Waits for `manager`'s save; records the checksums of the step it completed."""
    with self._reported(manager):
      manager.wait_until_finished()
    step = self._unrecorded.pop(id(manager), None)
    if step is not None and (directory := _step_directory(manager, step)).is_dir():
      checksums.write(directory, main_only=True)

  @property
  def directory(self) -> str:
    """Where the latest checkpoints are."""
    return os.fspath(self._latest.directory)

  # ---- saving --------------------------------------------------------------------------------

  def save(self, step: int, state: TrainState, data_position: Mapping[str, Any]) -> None:
    """Saves `state` and the data position as checkpoint `step` (asynchronously)."""
    self._finish(self._latest)  # the previous save's error, and its checksums
    with self._reported(self._latest):
      self._latest.save(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave(_arrays(state)), data=ocp.args.JsonSave(dict(data_position))
        ),
        force=True,
      )
    self._saving[id(self._latest)] = self._unrecorded[id(self._latest)] = step

  def best_metrics(self) -> Json | None:
    """The metrics of the best checkpoint so far (None if there is none)."""
    if self._best is None or (step := self._best.latest_step()) is None:
      return None
    restored = self._best.restore(step, args=ocp.args.Composite(metrics=ocp.args.JsonRestore()))
    return dict(restored["metrics"])

  def save_if_best(
    self, step: int, state: TrainState, data_position: Mapping[str, Any], metrics: Mapping[str, Any]
  ) -> bool:
    """Saves to the best directory if `metrics[best_metric]` beats the best so far."""
    if self._best is None:
      return False
    if self.best_metric not in metrics:
      raise KeyError(
        f"best_metric={self.best_metric!r} is not among the eval metrics "
        f"{sorted(metrics)}; set it to one of them."
      )
    best = self.best_metrics()
    value = float(metrics[self.best_metric])
    if best is not None and not _BETTER[self.best_mode](value, float(best[self.best_metric])):
      return False
    self._finish(self._best)
    with self._reported(self._best):
      self._best.save(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave(_arrays(state)),
          data=ocp.args.JsonSave(dict(data_position)),
          metrics=ocp.args.JsonSave({k: float(v) for k, v in metrics.items()}),
        ),
        force=True,
      )
    self._saving[id(self._best)] = self._unrecorded[id(self._best)] = step
    return True

  # ---- restoring -----------------------------------------------------------------------------

  def latest_step(self) -> int | None:
    return self._latest.latest_step()

  def best_step(self) -> int | None:
    return None if self._best is None else self._best.latest_step()

  def restore(
    self,
    target: TrainState,
    *,
    step: int | None = None,
    best: bool = False,
    target_shardings: Any = None,
  ) -> tuple[TrainState, Json]:
    """(state, data position) of checkpoint `step` (default: the latest; `best`: the best one).

    `target` is an abstract state (`abstract_state`); its static fields (module, optimizer,
    head) are kept. `target_shardings` places the arrays: a TrainState (or a dict
    `{"step", "params", "opt_state"}`) of shardings, or one sharding for every array.
    """
    manager = self._best if best else self._latest
    if manager is None:
      raise ValueError("No best checkpoints are kept here (best_directory was not given).")
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {manager.directory} to restore.")
    self._finish(manager)  # a save of this step in flight: complete and record it first
    _verify(manager, step)
    arrays = _with_shardings(_arrays(target), target_shardings)
    restored = manager.restore(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardRestore(arrays), data=ocp.args.JsonRestore()),
    )
    return target.replace(**restored["state"]), dict(restored["data"])

  def wait_until_finished(self) -> None:
    for manager in filter(None, (self._latest, self._best)):
      self._finish(manager)

  def close(self) -> None:
    try:
      self.wait_until_finished()
    finally:
      self._latest.close()
      if self._best is not None:
        self._best.close()

  def __enter__(self) -> Checkpoints:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
