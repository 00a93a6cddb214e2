"""Orbax checkpoints: round trip of train state + data position, other meshes, best-by-metric."""

import functools
import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from albert_jax import optim
from albert_jax.checkpoint import Checkpoints, abstract_state
from albert_jax.errors import UserError
from albert_jax.train import TrainState

HEAD = "sequence_classification"


@functools.cache
def _host_state(seed: int) -> TrainState:
  """A small train state (no model: checkpoints only see arrays), as numpy arrays.

  AdamW with accumulation: the optimizer state holds counters, moments and empty masked nodes.
  """
  rng = np.random.default_rng(seed)
  params = {
    "dense": {
      "kernel": rng.normal(size=(8, 6)).astype(np.float32),
      "bias": rng.normal(size=(6,)).astype(np.float32),
    },
    "LayerNorm": {"scale": rng.normal(size=(6,)).astype(np.float32)},
  }
  tx = optim.accumulate(optim.adamw(optim.warmup_linear_decay(1e-3, 10, 2)), 2)
  grads = jax.tree.map(lambda p: p * 0.5, params)
  opt_state = jax.jit(tx.init)(params)
  update = jax.jit(tx.update)
  for _ in range(3):  # non-trivial moments and counters
    _, opt_state = update(grads, opt_state, params)
  state = TrainState(
    step=jnp.asarray(7, jnp.int32),
    params=params,
    opt_state=opt_state,
    apply_fn=None,
    tx=tx,
    head=HEAD,
  )
  return jax.device_get(state)


def _state(mesh_shape=None, seed=0) -> TrainState:
  """`_host_state` on the first device, or sharded over a mesh of `mesh_shape`."""
  state = _host_state(seed)
  if mesh_shape is None:
    return jax.device_put(state, jax.devices()[0])
  mesh = jax.make_mesh(
    tuple(mesh_shape.values()),
    tuple(mesh_shape),
    devices=jax.devices()[: math.prod(mesh_shape.values())],
  )
  kernel_sharding = NamedSharding(mesh, P(*mesh_shape))  # rows split over the mesh
  return jax.tree.map(
    lambda x: jax.device_put(x, kernel_sharding if x.shape == (8, 6) else NamedSharding(mesh, P())),
    state,
  )


def _assert_same(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b, strict=True):
    assert x.shape == y.shape and x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_keeps_latest(tmp_path):
  state = _state()
  ckpts = Checkpoints(tmp_path / "ckpt", keep=2)
  for step in (1, 2, 3):
    ckpts.save(step, state.replace(step=state.step + step), {"epoch": step, "index": 10 * step})
  ckpts.wait_until_finished()
  assert ckpts.latest_step() == 3
  assert sorted(os.listdir(tmp_path / "ckpt")) == ["2", "3"]  # keep=2
  ckpts.close()

  fresh = Checkpoints(tmp_path / "ckpt", keep=2)  # as a restarted process would
  restored, data = fresh.restore(abstract_state(state))
  assert data == {"epoch": 3, "index": 30}
  _assert_same(restored, state.replace(step=state.step + 3))
  assert restored.head == HEAD and restored.tx is state.tx  # static fields from the target
  restored, data = fresh.restore(abstract_state(state), step=2)
  assert data == {"epoch": 2, "index": 20} and int(restored.step) == int(state.step) + 2


def test_restore_onto_another_mesh(tmp_path):
  state = _state({"fsdp": 8})
  assert state.params["dense"]["kernel"].sharding.shard_shape((8, 6)) == (1, 6)  # 8 shards
  with Checkpoints(tmp_path / "ckpt") as ckpts:
    ckpts.save(5, state, {"epoch": 0, "index": 8})
    ckpts.wait_until_finished()

    target = abstract_state(_state({"data": 2}))  # the target's own shardings: another mesh
    restored, _ = ckpts.restore(target)
    _assert_same(restored, state)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(target), strict=True):
      assert got.sharding == want.sharding

    other = jax.make_mesh((4,), ("tensor",), devices=jax.devices()[4:])
    shardings = jax.tree.map(lambda x: NamedSharding(other, P()), abstract_state(state))
    restored, _ = ckpts.restore(abstract_state(state), target_shardings=shardings)
    _assert_same(restored, state)
    assert {leaf.sharding for leaf in jax.tree.leaves(restored)} == {NamedSharding(other, P())}

    one = jax.sharding.SingleDeviceSharding(jax.devices()[3])
    restored, _ = ckpts.restore(abstract_state(state), target_shardings=one)
    _assert_same(restored, state)
    assert {leaf.sharding for leaf in jax.tree.leaves(restored)} == {one}


def test_best_checkpoint_is_kept_by_metric(tmp_path):
  state = _state()
  ckpts = Checkpoints(tmp_path / "ckpt", best_directory=tmp_path / "best", best_metric="acc")
  assert ckpts.best_metrics() is None and ckpts.best_step() is None
  saved = [
    ckpts.save_if_best(
      step,
      state.replace(step=state.step + step),
      {"epoch": 0, "index": step},
      {"acc": acc, "f1": 0.5},
    )
    for step, acc in ((10, 0.6), (20, 0.8), (30, 0.7), (40, 0.8))
  ]
  ckpts.wait_until_finished()
  assert saved == [True, True, False, False]  # a tie does not replace the best
  assert ckpts.best_step() == 20 and ckpts.best_metrics() == {"acc": 0.8, "f1": 0.5}
  assert os.listdir(tmp_path / "best") == ["20"]
  assert ckpts.latest_step() is None  # the latest-N directory is separate
  ckpts.close()

  again = Checkpoints(tmp_path / "ckpt", best_directory=tmp_path / "best", best_metric="acc")
  assert not again.save_if_best(50, state, {"epoch": 0, "index": 0}, {"acc": 0.79, "f1": 0.9})
  restored, data = again.restore(abstract_state(state), best=True)
  assert data == {"epoch": 0, "index": 20}
  _assert_same(restored, state.replace(step=state.step + 20))
  with pytest.raises(KeyError, match="best_metric='acc'"):
    again.save_if_best(60, state, {}, {"accuracy": 1.0})
  again.close()

  lowest = Checkpoints(
    tmp_path / "c2", best_directory=tmp_path / "b2", best_metric="loss", best_mode="min"
  )
  assert [
    lowest.save_if_best(s, state, {}, {"loss": v}) for s, v in ((1, 2.0), (2, 3.0), (3, 1.0))
  ] == [True, False, True]
  lowest.close()


def test_errors(tmp_path):
  state = _state()
  with Checkpoints(tmp_path / "empty") as ckpts:
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
      ckpts.restore(abstract_state(state))
    with pytest.raises(ValueError, match="best_directory"):
      ckpts.restore(abstract_state(state), best=True)
  with pytest.raises(ValueError, match="best_metric"):
    Checkpoints(tmp_path / "x", best_directory=tmp_path / "y")
  with pytest.raises(ValueError, match="best_mode"):
    Checkpoints(tmp_path / "x", best_directory=tmp_path / "y", best_metric="a", best_mode="up")


def test_a_damaged_checkpoint_file_is_an_error_naming_it(tmp_path):
  state = _state()
  with Checkpoints(tmp_path / "ckpt", keep=3) as ckpts:
    for step in (1, 2):
      ckpts.save(step, state.replace(step=state.step + step), {"epoch": 0, "index": step})
  step_2 = tmp_path / "ckpt" / "2"
  recorded = json.loads((step_2 / "checksums.json").read_text())
  assert any(name.startswith("state/") for name in recorded) and "data/metadata" in recorded
  biggest = max(recorded, key=lambda name: (step_2 / name).stat().st_size)
  data = bytearray((step_2 / biggest).read_bytes())
  data[len(data) // 2] ^= 0x01
  (step_2 / biggest).write_bytes(bytes(data))

  fresh = Checkpoints(tmp_path / "ckpt", keep=3)
  with pytest.raises(UserError) as raised:
    fresh.restore(abstract_state(state))
  assert str(raised.value) == (
    f"{step_2 / biggest} does not match its checksum in {step_2 / 'checksums.json'}: the file is "
    f"damaged or was changed. Checkpoint 2 is damaged. Delete {step_2} to resume from "
    "checkpoint 1 (the one before it), or start a new run in another --workdir."
  )
  restored, data = fresh.restore(abstract_state(state), step=1)  # the others are intact
  _assert_same(restored, state.replace(step=state.step + 1))
  (step_2 / "checksums.json").unlink()  # as an older version wrote it: restored unchecked
  restored, data = fresh.restore(abstract_state(state))
  assert data == {"epoch": 0, "index": 2}
  fresh.close()


# Two processes of one JAX system save every step to the latest and to the best directory at
# once (the last step of a run is often its best). Orbax names its write barriers by step
# directory; without a prefix per manager the second save's barrier is "already ongoing" and the
# save times out (it did in CI, at a run's last step).
_BOTH_AT_ONCE = """
import sys
import jax
from albert_jax import distributed
distributed.initialize()
from jax.sharding import NamedSharding, PartitionSpec as P
from albert_jax.checkpoint import Checkpoints
from tests.test_checkpoint import _host_state
mesh = jax.make_mesh((jax.device_count(),), ("data",))
state = jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, P())), _host_state(0))
d = sys.argv[1]
with Checkpoints(d + "/latest", best_directory=d + "/best", best_metric="a") as c:
  for step in range(1, 4):
    c.save(step, state, {"index": step})
    assert c.save_if_best(step, state, {"index": step}, {"a": float(step)})
  print(c.latest_step(), c.best_step())
"""


def test_two_processes_save_one_step_to_latest_and_best_at_once(tmp_path):
  from tests.localhost import start_processes, succeed

  outs = succeed(start_processes([sys.executable, "-c", _BOTH_AT_ONCE, str(tmp_path)]), 240)
  assert [out.split() for out in outs] == [["3", "3"], ["3", "3"]]
  state = _host_state(0)
  for kind in ("latest", "best"):
    restored, data = Checkpoints(tmp_path / kind).restore(abstract_state(_state()))
    assert data == {"index": 3}
    _assert_same(restored, jax.device_put(state, jax.devices()[0]))
