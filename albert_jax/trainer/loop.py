"""The train loop both trainers run, and its progress report.

`run` steps a jitted `train_step` over micro-batches (several per optimizer step with
gradient accumulation), and every N optimizer steps logs the mean train metrics, evaluates,
and saves a checkpoint with the data position; at the last step it calls the trainer's
`finish` (final evaluation, export). What differs between trainers comes in as hooks:

  batches     an iterator of (sharded micro-batch, data position after it)
  evaluate    (step, state) -> {tag: metrics}; the first tag's metrics pick the best checkpoint
  finish      (step, state, data position) -> (result, {tag: metrics}), at the last step
  record      (step, tag, metrics) -> None: one more sink for every metric (e.g. a JSONL file)
  batch_stats () -> metrics about the batches since the last call (padding_fraction,
              compiled_shapes), logged with the train metrics

SIGTERM (preemption) or Ctrl-C during training finishes the step in flight, writes a
checkpoint at that step, waits for it, and raises `preemption.Preempted` (the CLI exits 75);
every process of a multi-host run agrees on that step (`StopRequests.agreed`, once per step).
A multi-host run's `albert_jax.watchdog` hears of each completed step (`config.step_timeout`),
and is paused around evaluation, the final save of a preempted run and `finish`.
A NaN or infinite loss or gradient norm stops the run (`NonFiniteLoss`) before anything
computed from it is logged as good, evaluated or saved.
`Reporter` shows a progress bar (loss, steps/s, ETA) on stderr and writes TensorBoard scalars.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

from albert_jax import distributed, preemption, train, watchdog
from albert_jax.checkpoint import Checkpoints
from albert_jax.errors import UserError
from albert_jax.events import EventWriter

Metrics = Mapping[str, float]
_ON_THE_BAR = ("loss", "lr", "padding_fraction", "compiled_shapes")  # train metrics shown
Tagged = Mapping[str, Metrics]  # {"train": {...}} or {"eval_validation": {...}}


def is_due(step: int, every: int | None, last: int) -> bool:
  """True every `every` steps (never if `every` is falsy) and at step `last`."""
  return step == last or bool(every) and step % every == 0


class NonFiniteLoss(UserError):
  """The train loss or gradient norm became NaN or infinite: the run stops, saving nothing."""


def check_finite(unchecked: list[tuple[int, Metrics]], ckpts: Checkpoints, config: Any) -> None:
  """Raises NonFiniteLoss at the first (step, train metrics) whose loss or grad_norm is not
  finite, naming the step, the last good checkpoint and what to try."""
  for step, metrics in jax.device_get(unchecked):
    bad = {k: float(metrics[k]) for k in ("loss", "grad_norm") if k in metrics}
    if all(np.isfinite(v) for v in bad.values()):
      continue
    values = ", ".join(f"{k} {v}" for k, v in bad.items())
    last = ckpts.latest_step()
    saved = (
      f"the last good checkpoint is step {last} in {ckpts.directory}"
      if last is not None
      else "no checkpoint was written"
    )
    raise NonFiniteLoss(
      f"{values} at step {step}: training diverged and stops without saving ({saved}). "
      f"Start again in a new --workdir with a lower learning_rate (now {config.learning_rate}) "
      "or more warmup_steps, and check the data (token ids must be below the model's "
      "vocab_size)."
    )


class Reporter:
  """Progress bar on stderr and TensorBoard event files in `logdir`."""

  def __init__(
    self,
    logdir: str | os.PathLike,
    total_steps: int,
    initial_step: int = 0,
    desc: str = "train",
    enabled: bool = True,
  ):
    from tqdm.auto import tqdm  # noqa: PLC0415

    # Disabled (other processes of a multi-host run): shows and writes nothing.
    self._writer = EventWriter(logdir) if enabled else None
    self._bar = tqdm(
      total=total_steps,
      initial=initial_step,
      desc=desc,
      unit="step",
      dynamic_ncols=True,
      disable=not enabled,
    )

  def advance(self, steps: int = 1) -> None:
    self._bar.update(steps)

  def scalars(self, step: int, metrics: Metrics, prefix: str = "") -> None:
    """Writes `metrics` to TensorBoard as `prefix/name`; train metrics also go to the bar."""
    if self._writer is None:
      return
    self._writer.scalars(
      step, {f"{prefix}/{name}" if prefix else name: value for name, value in metrics.items()}
    )
    if prefix == "train":
      self._bar.set_postfix({k: f"{float(v):.4g}" for k, v in metrics.items() if k in _ON_THE_BAR})
    self._writer.flush()

  def write(self, line: str) -> None:
    """Prints a line without breaking the progress bar."""
    self._bar.write(line, file=sys.stderr)  # stdout carries results only

  def close(self) -> None:
    self._bar.close()
    if self._writer is not None:
      self._writer.close()


@dataclasses.dataclass
class Result:
  state: train.TrainState
  step: int  # optimizer steps done
  train_metrics: dict[str, float] | None  # the last logged means (None if nothing was logged)
  finished: Any  # what `finish` returned; None before the last step


def run(
  config: Any,
  state: train.TrainState,
  train_step: Callable,
  batches: Iterator[tuple[train.Batch, Mapping[str, Any]]],
  position: Mapping[str, Any],
  *,
  num_train_steps: int,
  schedule: Callable[[int], Any],
  ckpts: Checkpoints,
  dropout_rng: jax.Array,
  logdir: str,
  desc: str,
  evaluate: Callable[[int, train.TrainState], Tagged] | None = None,
  finish: Callable[[int, train.TrainState, Any], tuple[Any, Tagged]] | None = None,
  record: Callable[[int, str, Metrics], None] | None = None,
  stop_at_step: int | None = None,
  batch_stats: Callable[[], Metrics] | None = None,
) -> Result:
  """Trains from `state` (a new or restored one) to `num_train_steps` optimizer steps.

  config: the run config (grad_accum_steps, log_every_steps, eval_every_steps,
  checkpoint_every_steps). `train_step(state, batch, dropout_rng) -> (state, metrics)`; the
  state counts micro-batches. `stop_at_step` ends after that step's checkpoint, as a
  preempted job would. `position` is the state's data position, where `batches` continues.
  """
  accum, total = config.grad_accum_steps, num_train_steps
  step = int(state.step) // accum
  reporter = Reporter(
    logdir, total, initial_step=step, desc=desc, enabled=distributed.is_main_process()
  )

  def report(tagged: Tagged, position: Any) -> None:
    for i, (tag, metrics) in enumerate(tagged.items()):
      reporter.scalars(step, metrics, tag)
      if record is not None:
        record(step, tag, metrics)
      if tag != "train":
        text = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
        reporter.write(f"step {step}: {tag} {text}")
      if i == 0 and tag != "train" and metrics:  # no metrics without labels
        ckpts.save_if_best(step, state, position, metrics)

  def stop_here(stop: preemption.StopRequests, saved: bool) -> None:
    """Writes the checkpoint at `step` (unless just saved), waits for it, raises Preempted."""
    check_finite(unchecked, ckpts, config)
    if not saved:
      ckpts.save(step, state, position)
    ckpts.wait_until_finished()
    reporter.write(f"{stop.received}: stopped after step {step}; checkpoint {step} is written.")
    raise preemption.Preempted(step, stop.received or "a stop signal")

  result = Result(state, step, None, None)
  dog = watchdog.running()  # several processes: the step timeout starts after the first step
  if dog is not None:
    dog.step_timeout = float(getattr(config, "step_timeout", 0) or 0)
    dog.resumed(step)
  history, tick, ticked_step = [], time.perf_counter(), step
  unchecked: list[tuple[int, Metrics]] = []  # (step, metrics) not yet checked to be finite
  try:
    with preemption.StopRequests() as stop:
      while step < total and (stop_at_step is None or step < stop_at_step):
        for _ in range(accum):
          batch, position = next(batches)
          state, metrics = train_step(state, batch, dropout_rng)
          history.append(metrics)
          unchecked.append((step + 1, metrics))
        step += 1
        reporter.advance()
        ckpts.check()  # a background save that failed (a full disk) stops the run here
        logs = is_due(step, config.log_every_steps, total)
        evaluating = evaluate is not None and is_due(step, config.eval_every_steps, total)
        saved = is_due(step, config.checkpoint_every_steps, total) or step == stop_at_step
        if logs or evaluating or saved:  # nothing diverged is reported, evaluated or saved
          check_finite(unchecked, ckpts, config)
          unchecked.clear()
        if logs:
          means = {k: float(np.mean([m[k] for m in jax.device_get(history)])) for k in history[0]}
          now = time.perf_counter()
          means["lr"] = float(schedule(step - 1))  # the rate of this step's update
          means["steps_per_second"] = (step - ticked_step) / (now - tick)
          if batch_stats is not None:
            means.update(batch_stats())
          report({"train": means}, position)
          result.train_metrics, history, tick, ticked_step = means, [], now, step
        if evaluating:
          with watchdog.paused():
            report(evaluate(step, state), position)
        if saved:
          ckpts.save(step, state, position)
        if jax.process_count() > 1:  # the step's collectives complete before the processes
          jax.block_until_ready(metrics)  # wait on each other in `agreed` (else: deadlock)
        if step < total and stop.agreed():  # at the last step: finish, the work is done
          with watchdog.paused():
            stop_here(stop, saved)
        if dog is not None:
          dog.progress(step)
    result.state, result.step = state, step
    if step == total and finish is not None:
      with watchdog.paused():
        result.finished, tagged = finish(step, state, position)
        report(tagged, position)
    return result
  finally:
    if dog is not None:
      dog.done()
    reporter.close()
