"""Running as several processes (TPU pod slices, multi-node GPU): start-up and data shares.

Every process runs the same program. `initialize()` joins them into one JAX system (call it
first, before anything touches a device); afterwards `jax.devices()` lists every device of every
process and a mesh spans them all. Each process then loads only its rows of each global batch
(`process_batch_slice`), and `albert_jax.sharding.shard_batch` assembles the global arrays.
Logs and files are written by the main process only (`is_main_process`); Orbax checkpoints
are saved by all processes together (each writes its own shards).

How processes find each other, in order:
  1. arguments of `initialize`, else the environment variables ALBERT_JAX_COORDINATOR
     (host:port of process 0), ALBERT_JAX_NUM_PROCESSES, ALBERT_JAX_PROCESS_ID
     (`launch/gpu_slurm.sh` and `launch/gpu_multinode.sh` set them);
  2. on a Cloud TPU VM (libtpu installed, TPU chips attached), JAX's own detection of the
     slice's workers (no arguments needed);
  3. otherwise a single process: nothing to do.

A multi-process run also starts `albert_jax.watchdog`: a process that dies, hangs or raises
ends the others within a minute, with a line naming it and a documented exit code
(docs/troubleshooting.md). JAX's own heartbeat timeout (which aborts with SIGABRT and no name)
is set longer than the watchdog's, so the watchdog speaks first.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
import sys

import jax
import numpy as np

from albert_jax import coordination, sharding, watchdog

ENV_COORDINATOR = "ALBERT_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "ALBERT_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "ALBERT_JAX_PROCESS_ID"
# JAX declares a silent process dead (and aborts every process) after this; longer than the
# watchdog's peer timeout, so that the watchdog's exit, which names the process, comes first.
# (shutdown_timeout_seconds stays JAX's 300 s: at a normal exit the others wait in that
# barrier for process 0's final export; a failing process skips it, see albert_jax.watchdog.)
HEARTBEAT_TIMEOUT_S = 4 * int(watchdog.PEER_TIMEOUT_S)


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"Environment variable {name}={value!r} must be an integer.") from None


def _on_cloud_tpu_vm() -> bool:
  """libtpu installed and TPU chips attached (v4: /dev/accel*; v5e and later: /dev/vfio/*)."""
  chips = glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
  return bool(chips) and importlib.util.find_spec("libtpu") is not None


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> None:
  """Joins the processes of a multi-process run (see the module docstring); else a no-op.

  Safe to call twice. Must run before the first JAX computation.
  """
  if jax.distributed.is_initialized():
    return
  coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
  num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
  process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    if num_processes == 1 and coordinator_address is None:
      return
    if None in explicit:
      raise ValueError(
        f"A multi-process run needs all of coordinator_address, num_processes and process_id "
        f"(or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}); got "
        f"coordinator_address={coordinator_address!r}, num_processes={num_processes!r}, "
        f"process_id={process_id!r}."
      )
    if not 0 <= process_id < num_processes:
      raise ValueError(f"process_id={process_id} must be in [0, num_processes={num_processes}).")
    jax.distributed.initialize(
      coordinator_address,
      num_processes,
      process_id,
      heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
    )
  elif _on_cloud_tpu_vm():  # JAX finds the slice's workers itself (one or several)
    jax.distributed.initialize(heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
  else:
    return
  _stdout_for_results_only()
  _start_watchdog()
  logging.info(
    "Process %d of %d; %d local of %d devices.",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )


def _start_watchdog() -> None:
  """Starts the watchdog of a multi-process run, and makes an uncaught exception tell the
  other processes (as `cli.run` does for a user error) instead of leaving them waiting."""
  if jax.process_count() == 1:
    return
  watchdog.start(coordination.client(), jax.process_index(), jax.process_count())
  previous = sys.excepthook

  def tell_the_others(kind, value, tb):
    previous(kind, value, tb)  # the traceback first
    watchdog.fail(f"{kind.__name__}: {value}", 1)

  sys.excepthook = tell_the_others


def _stdout_for_results_only() -> None:
  """Sends the C-level stdout (fd 1) of a multi-process run to stderr and keeps Python's
  `sys.stdout` on the command's stdout: the CPU backend's gloo prints "[Gloo] Rank i is
  connected ..." to fd 1 whenever it sets up a communicator, and a command's stdout holds its
  result alone."""
  if jax.process_count() == 1:
    return
  sys.stdout.flush()
  results = os.dup(1)
  os.dup2(2, 1)
  sys.stdout = open(results, "w", buffering=1, encoding=sys.stdout.encoding or "utf-8")


def is_main_process() -> bool:
  """True on the process that logs and writes files (process 0)."""
  return jax.process_index() == 0


def process_batch_slice(
  global_batch_size: int,
  mesh: jax.sharding.Mesh | None = None,
  rules: sharding.Rules = sharding.RULES,
) -> slice:
  """The rows of each global batch this process loads and passes to `shard_batch`.

  With a mesh, the rows are those its devices hold under the batch sharding (processes that hold
  the same rows, e.g. across a "tensor" axis, get the same slice); without one, the batch is cut
  into `process_count` equal parts.
  """
  if mesh is None:
    count, index = jax.process_count(), jax.process_index()
    if global_batch_size % count:
      raise ValueError(
        f"Global batch size {global_batch_size} is not divisible by the {count} processes."
      )
    rows = global_batch_size // count
    return slice(index * rows, (index + 1) * rows)
  sharding.check_batch_size(global_batch_size, mesh, rules)
  held = sharding.process_batch_shards(mesh, rules)
  if held != list(range(held[0], held[-1] + 1)):
    raise ValueError(
      f"This process holds batch shards {held}, not a contiguous run; order the "
      f"mesh's devices by process (make_mesh does)."
    )
  rows = global_batch_size // sharding.num_batch_shards(mesh, rules)
  return slice(held[0] * rows, (held[-1] + 1) * rows)


def process_rows(
  global_batch: dict[str, np.ndarray],
  mesh: jax.sharding.Mesh,
  rules: sharding.Rules = sharding.RULES,
) -> dict[str, np.ndarray]:
  """This process's rows of a global host batch, ready for `sharding.shard_batch`.

  For pipelines where every process builds the same global batch (same seed and order) and
  only its share goes to its devices: `shard_batch(process_rows(batch, mesh), mesh)`.
  """
  rows = process_batch_slice(len(next(iter(global_batch.values()))), mesh, rules)
  return {k: v[rows] for k, v in global_batch.items()}
