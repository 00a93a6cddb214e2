"""A fine-tuning run of several seeds in one program (`config.seeds = R > 1`): `run(setup)`.

`albert_jax.trainer.finetune.run` hands over here once the config, the model and the data are
loaded. The replicas (`albert_jax.trainer.seeds`) train as one stacked state through the same
train loop (`albert_jax.trainer.loop`), by way of its hooks; besides what a one-seed run
writes, the workdir holds:
  best/replica_<k>/<step>/  replica k's best evaluated state (of the seed it runs now)
  metrics.json   the best replica's final metrics (today's fields), "best_seed", "seeds" (per
                 replica: seed, best_step, best, the final metrics per split, restarts, and
                 why it collapsed once no restarts were left, else None) and
                 "summary" ({split: {metric: mean, std, min, max, median}} over the replicas)
  tb/            train and eval curves: the mean over the replicas (`train/loss`,
                 `eval_validation/accuracy`) and each replica's (`train/loss/replica_<k>`,
                 `eval_validation/replica_<k>/accuracy`)
  predictions/   the best replica's
  export/        the best replica (`export=best`: its best step); with `export_seeds=all` also
                 export/seed_<seed>/ for every replica
The replicas' bookkeeping (`seeds.Replicas`) rides in every checkpoint's data position under
"replicas", so a resumed run restarts the same replicas at the same steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from albert_jax import distributed, sharding
from albert_jax.checkpoint import Checkpoints, abstract_state
from albert_jax.data import batching, tasks
from albert_jax.data.order import data_fingerprint, resume_position
from albert_jax.files import write_json
from albert_jax.heads import MODEL_INPUTS
from albert_jax.trainer import evaluation, export, loop, programs, seeds
from albert_jax.trainer.batches import TARGETS, BatchStats, gather, train_batches
from albert_jax.trainer.state import fresh_states

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Setup:
  """What `finetune.run` prepared: the checked config, the model, the data, the optimizer."""

  config: Any
  workdir: str
  task: Any
  mesh: jax.sharding.Mesh
  rules: sharding.Rules
  module: Any
  tokenizer: Any
  train_arrays: dict[str, np.ndarray]
  eval_sets: list[evaluation.EvalSet]
  buckets: tuple[int, ...] | None
  total: int  # optimizer steps
  warmup: int
  schedule: Callable
  tx: Any
  sample: dict[str, np.ndarray]  # one example's model inputs (shapes)
  put: Callable  # shards a host batch
  load_params: Callable[[int], Any] | None  # seed -> pretrained params; None: from scratch
  eval_batch: int


def run(s: Setup, params: Any = None) -> dict[str, Any] | None:
  """Trains `s.config.seeds` replicas; returns the final metrics (as metrics.json). `params`:
  the pretrained parameters loaded for `config.seed` (replica 0), if any."""
  config, n, head = s.config, s.config.seeds, s.task.head
  one = sharding.abstract_train_state(s.module, s.tx, head, s.sample, s.mesh, s.rules)
  abstract = seeds.abstract_stacked(one, n, s.rules)
  shardings = sharding.shardings_of(abstract)
  create = fresh_states(s.module, s.tx, head, s.sample, one)  # its programs compiled once

  def fresh(seed: int, loaded: Any = None):
    """The single-seed run's initial state for `seed`."""
    load = None
    if s.load_params is not None:
      loaded = s.load_params(seed) if loaded is None else loaded
      load = lambda _: loaded  # noqa: E731
    return create(jax.random.fold_in(jax.random.key(seed), 0), load)

  ckpts = Checkpoints(os.path.join(s.workdir, "checkpoints"), keep=config.keep_checkpoints)
  with ckpts, contextlib.ExitStack() as stores:
    if (step := ckpts.latest_step()) is not None:
      state, saved = ckpts.restore(abstract)
      book = seeds.Replicas.from_json(saved["replicas"])
      logger.info("Resuming %d seeds %s from the checkpoint of step %d.", n, book.seeds, step)
    else:
      max_restarts = n if config.max_restarts is None else config.max_restarts
      book, saved = seeds.Replicas.start(config.seed, n, max_restarts), None
      states = [fresh(seed, params if k == 0 else None) for k, seed in enumerate(book.seeds)]
      state = seeds.stack(states, shardings)
      del states
    params = None
    hooks = _Hooks(s, book, fresh, shardings, int(state.step), step or 0)
    for store in hooks.best:
      stores.enter_context(store)
    fingerprint = data_fingerprint(gather(s.train_arrays, MODEL_INPUTS + TARGETS, slice(None)))
    position = resume_position(saved, fingerprint, config.allow_data_change)
    micro = config.batch_size // config.grad_accum_steps
    stats = BatchStats(batching.row_lengths(s.train_arrays["attention_mask"]))
    hooks.step_fn, hooks.predict_fn = programs.compile_ahead(  # every shape, concurrently
      hooks.step_fn,
      hooks.predict_fn,
      state,
      programs.train_templates(
        config, s.train_arrays, micro, position, s.buckets, s.total * config.grad_accum_steps
      ),
      programs.eval_templates(s.eval_sets, s.eval_batch, s.buckets),
      s.mesh,
      s.rules,
      rng=hooks.rngs,
    )
    stream = train_batches(config, s.train_arrays, micro, position, s.buckets, s.put, stats)
    result = loop.run(
      config,
      state,
      hooks.train_step,
      hooks.batches(stream, fingerprint),
      hooks.position_of({**position.to_json(), "data": fingerprint}),
      num_train_steps=s.total,
      schedule=s.schedule,
      ckpts=ckpts,
      dropout_rng=hooks.rngs,
      logdir=os.path.join(s.workdir, "tb"),
      desc=f"{config.task} x{n}",
      evaluate=hooks.evaluate if config.eval_every_steps else None,
      finish=hooks.finish,
      batch_stats=stats.read,
    )
    if result.finished is not None and config.export != "none":
      hooks.export(result)
  return result.finished


def check_memory(config, module, tx, head: str, sample, mesh, rules) -> None:
  """Refuses `config.seeds` replicas whose estimated memory exceeds a device's
  (`seeds.memory_estimate`), from shapes alone: nothing is allocated or compiled."""
  one = sharding.abstract_train_state(module, tx, head, sample, mesh, rules)
  abstract = seeds.abstract_stacked(one, config.seeds, rules)
  estimate = seeds.memory_estimate(abstract, module.config, config, mesh, rules)
  seeds.check_memory(estimate, config.seeds, jax.local_devices()[0])


class _Hooks:
  """The train loop's hooks for the replicas: the vmapped step with restarts, evaluation of
  every replica, the final metrics and the export."""

  def __init__(self, s: Setup, book: seeds.Replicas, fresh, shardings, micro: int, resumed: int):
    self.s, self.book, self.fresh = s, book, fresh
    self.n = s.config.seeds
    self.micro = micro  # micro-batches done (the state's step)
    self.step_fn = seeds.jit_train_step(shardings, s.mesh, s.rules)
    self.predict_fn = seeds.jit_predict_step(shardings, s.mesh, s.rules)
    self.replace = seeds.replace_replica(shardings)
    self.rngs = seeds.dropout_rngs(book.seeds, s.mesh)
    self.position: dict[str, Any] = {}
    self.chance: float | None = None
    self.best = [self._best_store(k, resumed) for k in range(self.n)]

  # ---- the data position carries the bookkeeping -------------------------------------------

  def position_of(self, position: dict[str, Any]) -> dict[str, Any]:
    """`position` with the bookkeeping; the loop saves this dict with the next checkpoint."""
    self.position = {**position, "replicas": self.book.to_json()}
    return self.position

  def _sync(self) -> None:
    """The bookkeeping changed: the position the loop holds gets the new one."""
    self.position["replicas"] = self.book.to_json()

  def batches(self, stream, fingerprint):
    for batch, after in stream:
      yield batch, self.position_of({**after, "data": fingerprint})

  # ---- training ------------------------------------------------------------------------------

  def train_step(self, state, batch, _rng):
    """One micro-batch for every replica. Restarts due are done first (at an optimizer step's
    start); a replica whose loss or gradient norm is not finite is marked for restart. The loop
    gets the mean metrics of the finite replicas, and each replica's (`loss/replica_<k>`)."""
    accum = self.s.config.grad_accum_steps
    if self.micro % accum == 0 and any(r is not None for r in self.book.pending):
      state = self._restart(state, self.micro // accum)
    state, metrics = self.step_fn(state, batch, self.rngs)
    metrics = jax.device_get(metrics)  # {name: [R]}
    finite = np.isfinite(metrics["loss"]) & np.isfinite(metrics["grad_norm"])
    self.micro += 1
    for k in np.flatnonzero(~finite):
      loss, norm = metrics["loss"][k], metrics["grad_norm"][k]
      step = -(-self.micro // accum)
      self.book.mark(int(k), f"loss {loss}, grad_norm {norm} at step {step}")
    if not finite.all():
      self._sync()
    out = {}
    for name, values in metrics.items():
      out[name] = np.mean(values[finite]) if finite.any() else np.float32("nan")
      out.update({f"{name}/replica_{k}": values[k] for k in range(self.n)})
    return state, out

  def _restart(self, state, step: int):
    for k in range(self.n):
      if (seed := self.book.restart(k, step)) is not None:
        state = self.replace(state, self.fresh(seed), jnp.int32(k))
    self.rngs = seeds.dropout_rngs(self.book.seeds, self.s.mesh)
    self._sync()
    return state

  # ---- evaluation ----------------------------------------------------------------------------

  def _evaluate(self, state, eval_set):
    s = self.s
    return evaluation.evaluate_replicas(
      self.predict_fn, state, eval_set, s.eval_batch, s.put, s.task, s.config, s.buckets
    )

  def _record(self, step: int, state, metrics: list[dict[str, float]]) -> None:
    """Each replica's first-split metrics: its best so far is saved, collapse counted."""
    s = self.s
    if not metrics[0]:  # a split without labels
      return
    if self.chance is None:
      kwargs = evaluation.postprocess_kwargs(s.config)
      self.chance = seeds.chance_level(
        s.task, s.eval_sets[0], s.config.best_metric, s.config.best_mode, kwargs
      )
    for k, m in enumerate(metrics):
      if self.book.pending[k] is not None:  # diverged: restarts before the next step
        continue
      if self.book.evaluated(k, step, m, s.config, self.chance, s.warmup):
        self._save_best(k, step, state, m)
    self._sync()

  def _tagged(self, split: str, metrics: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    if not metrics[0]:
      return {f"eval_{split}": {}}
    tagged = {f"eval_{split}": seeds.mean_metrics(metrics)}
    tagged.update({f"eval_{split}/replica_{k}": m for k, m in enumerate(metrics)})
    return tagged

  def evaluate(self, step: int, state):
    if step == self.s.total:  # `finish` evaluates every split
      return {}
    eval_set = self.s.eval_sets[0]
    metrics = [m for _, m in self._evaluate(state, eval_set)]
    self._record(step, state, metrics)
    return self._tagged(eval_set.split, metrics)

  def finish(self, step: int, state, position):
    """Every replica on every split: metrics.json, the best replica's predictions."""
    s, book = self.s, self.book
    per_split = {e.split: self._evaluate(state, e) for e in s.eval_sets}
    final = [{split: out[k][1] for split, out in per_split.items()} for k in range(self.n)]
    first = s.eval_sets[0].split
    self._record(step, state, [f[first] for f in final])
    best = self.best_replica(final)
    if distributed.is_main_process():
      for split, out in per_split.items():
        directory = os.path.join(s.workdir, "predictions")
        tasks.write_predictions(s.task, out[best][0], directory, split)
    results: dict[str, Any] = {"step": step, **final[best], "best_seed": book.seeds[best]}
    results["seeds"] = [
      {
        "seed": book.seeds[k],
        "best_step": None if book.best[k] is None else book.best[k]["step"],
        "best": None if book.best[k] is None else book.best[k]["metrics"],
        **final[k],
        "restarts": book.restarts[k],
        "collapsed": book.collapsed[k],
      }
      for k in range(self.n)
    ]
    results["summary"] = seeds.summaries(final) if final[0][first] else {}
    write_json(os.path.join(s.workdir, "metrics.json"), results, main_only=True)
    tagged = {}
    for split in per_split:
      tagged.update(self._tagged(split, [f[split] for f in final]))
    return results, tagged

  def best_replica(self, final: list[dict[str, dict[str, float]]]) -> int:
    """The replica with the best `best_metric`: its best evaluation's, else its final one's."""
    config, first = self.s.config, self.s.eval_sets[0].split
    if not final[0][first]:
      return 0
    values = []
    for k in range(self.n):
      metrics = final[k][first] if self.book.best[k] is None else self.book.best[k]["metrics"]
      values.append(float(metrics[config.best_metric]))
    pick = np.nanargmax if config.best_mode == "max" else np.nanargmin
    return int(pick(values))

  # ---- each replica's best state -------------------------------------------------------------

  def _best_store(self, k: int, resumed: int) -> Checkpoints:
    """best/replica_<k>: one checkpoint, the replica's best evaluated state. A resumed run
    drops what the interrupted one saved after its checkpoint (it evaluates those steps
    again)."""
    directory = os.path.join(self.s.workdir, "best", f"replica_{k}")
    if distributed.is_main_process() and os.path.isdir(directory):
      for name in os.listdir(directory):
        if name.isdigit() and int(name) > resumed:
          shutil.rmtree(os.path.join(directory, name))
    return Checkpoints(directory, keep=1, name=f"best_replica_{k}")

  def _save_best(self, k: int, step: int, state, metrics) -> None:
    seed = self.book.seeds[k]
    self.best[k].save(step, seeds.unstack(state, k), {"seed": seed, "metrics": metrics})

  def export(self, result: loop.Result) -> None:
    """export/: the best replica; with export_seeds=all also export/seed_<seed>/ each."""
    s, book = self.s, self.book
    best = book.seeds.index(result.finished["best_seed"])
    every = s.config.export_seeds == "all"
    directory = os.path.join(s.workdir, "export")
    for k in [best] + ([k for k in range(self.n) if k != best] if every else []):
      state, step = seeds.unstack(result.state, k), result.step
      metrics = {e.split: result.finished["seeds"][k][e.split] for e in s.eval_sets}
      store = self.best[k]
      store.wait_until_finished()
      if s.config.export == "best" and book.best[k] is not None and book.best[k]["step"] != step:
        state, _ = store.restore(abstract_state(state))
        step, metrics = book.best[k]["step"], {s.eval_sets[0].split: book.best[k]["metrics"]}
      meta = export.run_metadata(s.config, s.workdir, s.task, step, metrics)
      meta["seed"] = book.seeds[k]
      if k == best:
        export.write(directory, state, s.module.config, s.tokenizer, meta)
      if every:
        target = os.path.join(directory, f"seed_{book.seeds[k]}")
        export.write(target, state, s.module.config, s.tokenizer, meta)
