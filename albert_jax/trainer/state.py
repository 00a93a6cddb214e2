"""The train state a run starts from, created already sharded on the mesh.

In order: the latest checkpoint in the workdir (a resumed run), else parameters loaded from
elsewhere (pretrained weights), else a random initialization. The abstract state
(`sharding.abstract_train_state`: shapes, dtypes and shardings, no arrays) is the restore
target and the `out_shardings` of the jitted creation, so no full copy is ever made on one host.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax

from albert_jax import sharding, train
from albert_jax.checkpoint import Checkpoints

logger = logging.getLogger(__name__)


def initial_state(
  module: nn.Module,
  tx: Any,
  head: str,
  sample: Mapping[str, Any],
  mesh: jax.sharding.Mesh,
  rules: sharding.Rules,
  ckpts: Checkpoints,
  *,
  init_rng: jax.Array,
  load_params: Callable[[Any], Any] | None = None,
) -> tuple[train.TrainState, dict[str, Any] | None]:
  """(state, the data position saved with it, or None for a new state).

  sample: a batch of the model inputs, for shapes only. load_params: called with the
  parameters' shardings, returns the parameters to start from (placed by those shardings, or
  anywhere: they are moved); None = random weights from `init_rng`.
  """
  abstract = sharding.abstract_train_state(module, tx, head, sample, mesh, rules)
  if (step := ckpts.latest_step()) is not None:
    state, position = ckpts.restore(abstract)
    logger.info(
      "Resuming from the checkpoint of step %d (data epoch %s, example %s).",
      step,
      position.get("epoch"),
      position.get("index"),
    )
    return state, position
  fresh = fresh_states(module, tx, head, sample, abstract)
  return fresh(init_rng, load_params), None


def fresh_states(
  module: nn.Module, tx: Any, head: str, sample: Mapping[str, Any], abstract: train.TrainState
) -> Callable[[jax.Array, Callable[[Any], Any] | None], train.TrainState]:
  """`(init_rng, load_params) -> a new state at step 0` (see `initial_state`), placed as
  `abstract` (its abstract state) says. Its programs (the random initialization,
  the state around loaded parameters) compile once, on first use, for every call after."""
  shardings = sharding.shardings_of(abstract)
  init = sharding.state_initializer(module, tx, head, sample, shardings)
  create = jax.jit(lambda p: train.create_train_state(module, p, tx, head), out_shardings=shardings)

  def fresh(init_rng: jax.Array, load_params: Callable[[Any], Any] | None) -> train.TrainState:
    if load_params is None:
      return init(init_rng)
    return create(load_params(shardings.params))

  return fresh
