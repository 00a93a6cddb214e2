"""Logical axis names -> mesh axes: the rule table, meshes, and shardings for states and batches.

The model names only logical axes (see `albert_jax.model`). This module maps them onto a device
mesh with three axes, always present (size 1 when unused):

  data    pure data parallelism: the batch is split, parameters are replicated
  fsdp    the batch is split AND parameters and optimizer state are sharded (ZeRO-3 / FSDP)
  tensor  Megatron-style tensor parallelism: attention heads, FFN width and vocabulary split

One rule table (`RULES`) serves every mesh; a mesh preset is only a shape (`MESH_PRESETS`):
`{"data": -1}`, `{"fsdp": -1}`, `{"data": -1, "tensor": 4}` (-1 = the remaining devices).
Both the shape (a preset name or a dict) and the rules are plain config values
(`config.mesh.shape`, `config.mesh.rules`).

A parameter dimension that a mesh axis does not divide (e.g. vocab 30000 over fsdp 32) is
replicated instead, with one warning at start-up; the number of attention heads and the global
batch must be divisible, or start-up stops with an error naming both numbers.

Typical use (what the entry points do):

  mesh = make_mesh(config.mesh.shape)
  rules = rules_for(config.mesh.rules)
  state = create_sharded_state(module, tx, head, init_rng, sample_batch, mesh, rules)
  train = jit_train_step(shardings_of(state), mesh, rules)
  rng = replicate(dropout_rng, mesh)
  local = distributed.process_rows(global_batch, mesh, rules)  # all rows with one process
  state, metrics = train(state, shard_batch(local, mesh, rules), rng)

`abstract_train_state` is also the restore target of a checkpoint on any mesh.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from albert_jax import axes, train
from albert_jax.heads import HEADS, MODEL_INPUTS

MeshAxes = str | tuple[str, ...] | None
Rules = tuple[tuple[str, MeshAxes], ...]
Batch = dict[str, Any]

MESH_AXES = ("data", "fsdp", "tensor")  # outermost (across hosts) to innermost (fast links)

# (logical axis, mesh axes). Flax reads these in order: a logical axis takes the first rule
# whose mesh axes are not already used by another dimension of the same array.
RULES: Rules = (
  (axes.BATCH, ("data", "fsdp")),  # activations and inputs: split over every data axis
  (axes.LENGTH, None),
  (axes.ACT_HIDDEN, None),
  (axes.ACT_HEADS, "tensor"),
  (axes.ACT_MLP, "tensor"),
  (axes.ACT_VOCAB, "tensor"),
  (axes.HEADS, "tensor"),  # attention heads (Q, K, V and output kernels)
  (axes.MLP, "tensor"),  # FFN width
  (axes.VOCAB, ("tensor", "fsdp")),  # word embeddings and MLM bias
  (axes.HIDDEN, "fsdp"),  # hidden width H: the FSDP axis of almost every kernel
  (axes.EMBEDDING_WIDTH, None),  # factorized embedding width E (128): small, replicated
  (axes.HEAD_DIM, None),  # head width D
  # the seeds of a several-seed run: every device holds every replica (as one would be held);
  # ("replica", "data") with the batch on other axes puts one replica per data shard
  (axes.REPLICA, None),
)
ACTIVATION_AXES = axes.ACTIVATION_AXES
# Axes an uneven split cannot fall back from: the activations are split the same way.
_STRICT_AXES = (axes.HEADS,)

MESH_PRESETS: dict[str, dict[str, int]] = {
  "data": {"data": -1},
  "fsdp": {"fsdp": -1},
  "data_tensor": {"data": -1, "tensor": 4},
}


# ---- meshes and rules -------------------------------------------------------------------------


def mesh_shape(shape: Mapping[str, int] | str, num_devices: int) -> dict[str, int]:
  """All of `MESH_AXES` with sizes; `shape` is a preset name or {axis: size}, -1 = the rest."""
  if isinstance(shape, str):
    if shape not in MESH_PRESETS:
      raise ValueError(
        f"Unknown mesh preset {shape!r}; choose one of {sorted(MESH_PRESETS)} "
        f"or give a shape such as {{'data': 2, 'tensor': 4}}."
      )
    shape = MESH_PRESETS[shape]
  unknown = sorted(set(shape) - set(MESH_AXES))
  if unknown:
    raise ValueError(
      f"Unknown mesh axes {unknown} in mesh shape {dict(shape)}; the mesh axes are {MESH_AXES}."
    )
  sizes = {a: int(shape.get(a, 1)) for a in MESH_AXES}
  rest = [a for a, n in sizes.items() if n == -1]
  if len(rest) > 1 or any(n == 0 or n < -1 for n in sizes.values()):
    raise ValueError(f"Mesh shape {dict(shape)}: sizes must be positive, with at most one -1.")
  known = math.prod(n for n in sizes.values() if n != -1)
  if rest:
    sizes[rest[0]] = max(num_devices // known, 1)
  if math.prod(sizes.values()) != num_devices:
    raise ValueError(
      f"Mesh shape {dict(shape)} needs {math.prod(sizes.values())} devices but "
      f"there are {num_devices}; change the sizes or use -1 for one axis."
    )
  return sizes


def make_mesh(shape: Mapping[str, int] | str, devices: Sequence[Any] | None = None) -> Mesh:
  """A mesh over `devices` (default: all, every process) with axes ("data", "fsdp", "tensor").

  `shape` is a preset name ("data", "fsdp", "data_tensor") or a dict such as
  {"data": 2, "tensor": 4}; missing axes get size 1, one size may be -1 (the rest).
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = mesh_shape(shape, len(devices))
  return jax.make_mesh(
    tuple(sizes.values()), MESH_AXES, devices=devices, axis_types=(AxisType.Auto,) * len(MESH_AXES)
  )


def rules_for(rules: str | Sequence[Sequence[Any]] | None = None) -> Rules:
  """The rule table a config names: None or "default" -> `RULES`; a list of pairs as given.

  Lists (what a config file or command line may give) become tuples; mesh axes are checked.
  """
  if rules is None or rules == "default":
    return RULES
  if isinstance(rules, str):
    raise ValueError(
      f"Unknown rule table {rules!r}; use 'default' or a list of (logical axis, mesh axes) pairs."
    )
  out = []
  for rule in rules:
    if len(rule) != 2 or not isinstance(rule[0], str):
      raise ValueError(f"Rule {rule!r} is not a (logical axis, mesh axes) pair.")
    logical, mesh_axes = rule
    mesh_axes = tuple(mesh_axes) if isinstance(mesh_axes, list | tuple) else mesh_axes
    for a in mesh_axes if isinstance(mesh_axes, tuple) else (mesh_axes,):
      if a is not None and a not in MESH_AXES:
        raise ValueError(f"Rule {rule!r} names mesh axis {a!r}; the mesh axes are {MESH_AXES}.")
    out.append((logical, mesh_axes))
  missing = [a for a in ACTIVATION_AXES if a not in {r[0] for r in out}]
  if missing:
    raise ValueError(
      f"The rule table has no rule for activation axes {missing}; add "
      f"(name, None) to leave them unsharded."
    )
  return tuple(out)


def _axes_size(mesh: Mesh, mesh_axes: MeshAxes) -> int:
  if mesh_axes is None:
    return 1
  names = (mesh_axes,) if isinstance(mesh_axes, str) else mesh_axes
  return math.prod(mesh.shape[a] for a in names)


def batch_axes(rules: Rules = RULES) -> MeshAxes:
  """The mesh axes the batch dimension is split over (the "batch" rule)."""
  return nn.logical_to_mesh_axes((axes.BATCH,), rules)[0]


def num_batch_shards(mesh: Mesh, rules: Rules = RULES) -> int:
  """How many parts the global batch is split into (the size of `batch_axes`)."""
  return _axes_size(mesh, batch_axes(rules))


def batch_sharding(mesh: Mesh, rules: Rules = RULES) -> NamedSharding:
  """Inputs [B, ...]: the batch dimension split over `batch_axes`, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(batch_axes(rules)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch_size: int, mesh: Mesh, rules: Rules = RULES) -> None:
  """Start-up check: the global batch splits evenly over the batch's mesh axes."""
  n = num_batch_shards(mesh, rules)
  if global_batch_size % n:
    raise ValueError(
      f"Global batch size {global_batch_size} is not divisible by {n}, the "
      f"number of batch shards (mesh axes {batch_axes(rules)} of mesh "
      f"{dict(mesh.shape)}); use a multiple of {n}."
    )


# ---- parameter and state shardings ------------------------------------------------------------


def _path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _mesh_spec(
  name: str,
  logical: tuple[str | None, ...],
  shape: tuple[int, ...],
  mesh: Mesh,
  rules: Rules,
  replicated_dims: list[str],
) -> PartitionSpec:
  known = {r[0] for r in rules}
  for axis in logical:
    if axis is not None and axis not in known:
      raise ValueError(
        f"Parameter {name} has logical axis {axis!r} with no rule in the rule "
        f"table; add ({axis!r}, <mesh axes>) or ({axis!r}, None) to replicate."
      )
  spec = list(nn.logical_to_mesh_axes(logical, rules))
  for i, mesh_axes in enumerate(spec):
    n = _axes_size(mesh, mesh_axes)
    if shape[i] % n:
      if logical[i] in _STRICT_AXES:
        raise ValueError(
          f"Parameter {name}: {logical[i]!r} has size {shape[i]}, not divisible "
          f"by mesh axes {mesh_axes} of size {n} (mesh {dict(mesh.shape)}); use a "
          f"mesh whose {mesh_axes} size divides {shape[i]}."
        )
      replicated_dims.append(f"{name} {logical[i]}={shape[i]} over {mesh_axes}={n}")
      spec[i] = None
  return PartitionSpec(*spec)


def param_shardings(boxed_params: Any, mesh: Mesh, rules: Rules = RULES) -> Any:
  """NamedShardings for a boxed (`nn.Partitioned`) parameter tree, abstract or concrete.

  The result has the structure of `nn.unbox(boxed_params)`. A logical axis with no rule, a
  parameter (other than a scalar) without logical names, or a head count the "heads" mesh axes
  do not divide is a ValueError; any other dimension a mesh axis does not divide is replicated
  (logged once).
  """
  is_box = lambda x: isinstance(x, nn.Partitioned)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(boxed_params, is_leaf=is_box)
  replicated_dims: list[str] = []
  out = []
  for path, leaf in leaves:
    name = _path_str(path)
    if is_box(leaf):
      out.append(
        NamedSharding(
          mesh,
          _mesh_spec(
            name, tuple(leaf.names), tuple(leaf.value.shape), mesh, rules, replicated_dims
          ),
        )
      )
    elif np.ndim(leaf) == 0:
      out.append(replicated(mesh))
    else:
      raise ValueError(
        f"Parameter {name} (shape {np.shape(leaf)}) has no logical axis names; "
        f"create it with nn.with_logical_partitioning."
      )
  if replicated_dims:
    logging.warning(
      "Replicated %d parameter dimension(s) the mesh does not divide: %s",
      len(replicated_dims),
      "; ".join(replicated_dims),
    )
  return treedef.unflatten(out)


def state_shardings(
  abstract_state: train.TrainState, params_shardings: Any, mesh: Mesh
) -> train.TrainState:
  """Shardings for every leaf of a TrainState: params as given, the optimizer state mirrors them.

  Optax states hold parameter-shaped subtrees (Adam's moments, MultiSteps' accumulators, masked
  states with some leaves left out), whose key paths end with a parameter's key path. Such a
  leaf of the parameter's shape gets the parameter's sharding; every other leaf (step counts,
  scalars) is replicated.
  """
  by_path: dict[tuple, tuple[tuple[int, ...], NamedSharding]] = {}
  flat_abs = jax.tree_util.tree_flatten_with_path(abstract_state.params)[0]
  flat_sh = jax.tree_util.tree_leaves(params_shardings)
  if len(flat_abs) != len(flat_sh):
    raise ValueError(
      f"params_shardings has {len(flat_sh)} leaves; the state's params have "
      f"{len(flat_abs)}. Were they built from the same module?"
    )
  for (path, leaf), sharding in zip(flat_abs, flat_sh, strict=True):
    by_path[tuple(path)] = (tuple(leaf.shape), sharding)
  lengths = sorted({len(p) for p in by_path}, reverse=True)

  def leaf_sharding(path, leaf):
    path = tuple(path)
    for n in lengths:
      match = by_path.get(path[-n:]) if len(path) >= n else None
      if match is not None and match[0] == tuple(np.shape(leaf)):
        return match[1]
    return replicated(mesh)

  return jax.tree_util.tree_map_with_path(leaf_sharding, abstract_state)


def shardings_of(tree: Any) -> Any:
  """The `.sharding` of every leaf (of arrays or of abstract `jax.ShapeDtypeStruct`s)."""
  return jax.tree.map(lambda x: x.sharding, tree)


def _model_inputs(head: str, batch: Batch) -> dict[str, jax.Array]:
  """Zeros shaped like the model inputs of `batch` (what `train.forward` passes the model)."""
  keys = {k: k for k in MODEL_INPUTS if k in batch} | dict(HEADS[head].extra_inputs)  # arg: key
  return {arg: jnp.zeros(np.shape(batch[k]), batch[k].dtype) for arg, k in keys.items()}


def _check_heads(module: nn.Module, mesh: Mesh, rules: Rules) -> None:
  config = getattr(module, "config", None)
  head_axes = nn.logical_to_mesh_axes((axes.HEADS,), rules)[0]
  n = _axes_size(mesh, head_axes)
  if config is not None and config.num_attention_heads % n:
    raise ValueError(
      f"num_attention_heads={config.num_attention_heads} is not divisible by "
      f"{n}, the size of mesh axes {head_axes} of mesh {dict(mesh.shape)} that split "
      f"the heads; use a mesh whose {head_axes} size divides "
      f"{config.num_attention_heads}."
    )


def abstract_train_state(
  module: nn.Module,
  tx: optax.GradientTransformation,
  head: str,
  sample_batch: Batch,
  mesh: Mesh,
  rules: Rules = RULES,
) -> train.TrainState:
  """The TrainState as `jax.ShapeDtypeStruct`s carrying their shardings (no memory used).

  Also the restore target for a checkpoint: Orbax places each array as its sharding says.
  `sample_batch` gives input shapes only (one example is enough).
  """
  _check_heads(module, mesh, rules)
  inputs = _model_inputs(head, sample_batch)
  boxed = jax.eval_shape(lambda r: module.init(r, **inputs)["params"], jax.random.key(0))
  p_shardings = param_shardings(boxed, mesh, rules)
  abstract = jax.eval_shape(
    lambda p: train.create_train_state(module, p, tx, head), nn.unbox(boxed)
  )
  shardings = state_shardings(abstract, p_shardings, mesh)
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )


def create_sharded_state(
  module: nn.Module,
  tx: optax.GradientTransformation,
  head: str,
  rng: jax.Array,
  sample_batch: Batch,
  mesh: Mesh,
  rules: Rules = RULES,
) -> train.TrainState:
  """A fresh TrainState, each array created directly in its shards (no full copy anywhere)."""
  abstract = abstract_train_state(module, tx, head, sample_batch, mesh, rules)
  return state_initializer(module, tx, head, sample_batch, shardings_of(abstract))(rng)


def state_initializer(
  module: nn.Module,
  tx: optax.GradientTransformation,
  head: str,
  sample_batch: Batch,
  shardings: train.TrainState,
) -> Callable[[jax.Array], train.TrainState]:
  """`rng -> create_sharded_state(..., rng, ...)` as one jitted function whose arrays are placed
  by `shardings` (`shardings_of(abstract_train_state(...))`): every key after the first reuses
  its compiled program (several seeds' states, restarts)."""
  inputs = _model_inputs(head, sample_batch)

  def init(rng):
    params = nn.unbox(module.init(rng, **inputs)["params"])
    return train.create_train_state(module, params, tx, head)

  return jax.jit(init, out_shardings=shardings)


# ---- batches and steps ------------------------------------------------------------------------


def process_batch_shards(
  mesh: Mesh, rules: Rules = RULES, process_index: int | None = None
) -> list[int]:
  """Which of the batch's shards (0 .. number of batch shards - 1) a process's devices hold."""
  process_index = jax.process_index() if process_index is None else process_index
  axes = batch_axes(rules)
  axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
  pos = [mesh.axis_names.index(a) for a in axes]
  held = set()
  for index in np.ndindex(mesh.devices.shape):
    if mesh.devices[index].process_index == process_index:
      held.add(
        int(np.ravel_multi_index([index[p] for p in pos], [mesh.devices.shape[p] for p in pos]))
      )
  return sorted(held)


def shard_batch(local_batch: Batch, mesh: Mesh, rules: Rules = RULES) -> Batch:
  """Global arrays from this process's rows of the global batch (all rows with one process).

  Which rows a process loads: `albert_jax.distributed.process_batch_slice`.
  """
  sharding = batch_sharding(mesh, rules)
  shards = num_batch_shards(mesh, rules)
  local_shards = len(process_batch_shards(mesh, rules))
  out = {}
  for key, value in local_batch.items():
    rows = np.shape(value)[0]
    if rows % local_shards:
      raise ValueError(
        f"Batch key {key!r} has {rows} rows on this process, not divisible by its "
        f"{local_shards} batch shards; the global batch must be a multiple of "
        f"{shards} (mesh {dict(mesh.shape)})."
      )
    check_batch_size(rows // local_shards * shards, mesh, rules)
    out[key] = jax.make_array_from_process_local_data(sharding, np.asarray(value))
  return out


def mesh_from_config(mesh_config) -> tuple[Mesh, Rules]:
  """(mesh, rules) from a run config's `mesh`: {"shape": a preset name or {axis: size},
  "rules": None | "default" | a list of (logical axis, mesh axes) pairs}.

  A shape without -1 uses its number of devices (the first ones, in a one-process run); with
  -1 (every preset), all of them.
  """
  shape = mesh_config.shape
  shape = MESH_PRESETS.get(shape, shape) if isinstance(shape, str) else dict(shape)
  devices = None
  if isinstance(shape, dict) and -1 not in shape.values() and jax.process_count() == 1:
    devices = jax.devices()[: math.prod(shape.values())]
  return make_mesh(shape, devices), rules_for(mesh_config.rules)


def under_mesh(fn: Callable, mesh: Mesh, rules: Rules = RULES) -> Callable:
  """`fn` called with `mesh` and `rules` set, so the model's activation constraints apply.

  For jitted steps of one's own (e.g. an eval that also returns counts): the constraints are
  read while `fn` is traced, i.e. on its first call, or by `.lower(*args)` (a jitted `fn`'s,
  with them set: for compiling ahead of time, `albert_jax.compilation.Programs`).
  """

  def call(*args):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return fn(*args)

  def lower(*args):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return fn.lower(*args)

  call.lower = lower
  return call


def jit_train_step(
  shardings: train.TrainState, mesh: Mesh, rules: Rules = RULES, donate: bool = True
) -> Callable:
  """`train.train_step` jitted for the mesh: (state, batch, rng) -> (state, metrics).

  The batch comes from `shard_batch`; `rng` should be replicated (`replicate`); metrics come
  back replicated, readable on every process.
  """
  step = jax.jit(
    train.train_step,
    in_shardings=(shardings, batch_sharding(mesh, rules), replicated(mesh)),
    out_shardings=(shardings, replicated(mesh)),
    donate_argnums=(0,) if donate else (),
  )
  return under_mesh(step, mesh, rules)


def jit_state_fn(
  fn: Callable, shardings: train.TrainState, mesh: Mesh, rules: Rules = RULES
) -> Callable:
  """`fn(state, batch) -> outputs` jitted for the mesh, outputs replicated (readable on every
  process): `train.eval_step`, `train.predict_step`, or an eval of one's own."""
  step = jax.jit(
    fn,
    in_shardings=(shardings, batch_sharding(mesh, rules)),
    out_shardings=replicated(mesh),
  )
  return under_mesh(step, mesh, rules)


def jit_predict_step(shardings: train.TrainState, mesh: Mesh, rules: Rules = RULES) -> Callable:
  """`train.predict_step` jitted for the mesh; outputs replicated."""
  return jit_state_fn(train.predict_step, shardings, mesh, rules)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Host values that are the same on every process (e.g. an rng key), replicated over the mesh.

  Works with several processes, where `jax.device_put` cannot reach other processes' devices.
  """
  sharding = replicated(mesh)

  def put(x):
    if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
      data = np.asarray(jax.random.key_data(x))
      return jax.random.wrap_key_data(
        jax.make_array_from_process_local_data(sharding, data), impl=jax.random.key_impl(x)
      )
    return jax.make_array_from_process_local_data(sharding, np.asarray(x))

  return jax.tree.map(put, tree)
