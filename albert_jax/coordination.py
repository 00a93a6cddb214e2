"""The coordination service's key-value store: how the processes of one job talk outside XLA.

`jax.distributed.initialize` starts a coordination service (in process 0) and connects every
process to it. Its key-value store carries what must not go through an XLA collective: the
stop flag every process agrees on (`albert_jax.preemption`), and the heartbeats and failure
notes of `albert_jax.watchdog`. Orbax's barriers, `jax.experimental.multihost_utils` and
JAX's preemption sync manager use the same client.

JAX 0.10 has no public accessor for that client: `jax.distributed` exports `initialize`,
`is_initialized` and `shutdown` only, and Orbax's public `multihost` module does not return it
either. `client()` therefore reads it where `jax.experimental.multihost_utils` itself does
(its module attribute `distributed`, i.e. `jax._src.distributed.global_state.client`) without
importing `jax._src`, and fails loudly, naming the path, if a JAX release moves it;
tests/test_failures.py pins the path, so an upgrade that moves it fails there first.
"""

from __future__ import annotations

from typing import Any

WHERE = "jax.experimental.multihost_utils.distributed.global_state.client"


def client() -> Any | None:
  """The distributed runtime client (`key_value_set`, `key_value_dir_get`,
  `blocking_key_value_get`, ...) of this process; None when JAX runs as one process."""
  import jax  # noqa: PLC0415
  from jax.experimental import multihost_utils  # noqa: PLC0415

  if not jax.distributed.is_initialized():
    return None
  try:
    found = multihost_utils.distributed.global_state.client
  except AttributeError as e:
    raise RuntimeError(
      f"This JAX ({jax.__version__}) moved the coordination service's client away from "
      f"{WHERE}; albert_jax.coordination.client must learn the new place."
    ) from e
  if found is None:
    raise RuntimeError(f"jax.distributed is initialized but {WHERE} is None.")
  return found
