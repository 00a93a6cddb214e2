"""Several seeds in one program (`--config.seeds=N`, `albert_jax.trainer.seeds`): each replica
is its single-seed twin, a diverged replica restarts with the next seed and leaves the others
alone, an interrupted run resumes bit for bit, a mesh changes nothing, bad input is refused.

The runs are the suite's tiny model on the SST-2 sample, a few steps; the module's fixtures
share them between the tests."""

import json
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import albert_jax
from albert_jax import sharding, train
from albert_jax.data import tasks
from albert_jax.tokenizer import AlbertTokenizer
from albert_jax.trainer import finetune, seeds
from albert_jax.trainer.evaluation import EvalSet
from tests.runs import (
  ROOT,
  TINY_FLAGS,
  assert_trees_equal,
  finetune_command,
  read,
  run_killed,
  saved_state,
  tb_scalars,
  tiny,
  train_state,
)

SEED, N, STEPS, ACCUM = 5, 3, 4, 2  # optimizer steps of ACCUM micro-batches each
# Replica vs twin: the same float32 computation, but the vmapped program reduces in another
# order (batched matmuls) than the unbatched one, as a sharded step does against one device.
# The bound is test_sharding's (derived there) without its term in how far the steps moved a
# tensor: per tensor, PARAM_ULPS float32 ulps of its values, plus Adam's noise floor (lr *
# (1 - b1) * a few ulps of a ~0.1 gradient / eps, per step) for tensors whose gradient is
# rounding noise (e.g. the attention key bias, which softmax ignores).
PARAM_ULPS = 8
EPS32 = float(np.finfo(np.float32).eps)
NOISE_FLOOR = STEPS * 1e-3 * (1 - 0.9) * (4 * EPS32 * 0.1) / 1e-6
# Replica 1's loss and params become NaN in the first micro-batch of optimizer step 3; it
# restarts when that step is done.
POISONED_SEED, POISONED_STEP = SEED + 1, 3


def config(**fields):
  fields = {"num_train_steps": STEPS, "seed": SEED, "grad_accum_steps": ACCUM, **fields}
  return tiny("sst2_sample", **fields)


def metrics_of(workdir) -> dict:
  return json.loads(read(os.path.join(workdir, "metrics.json")))


def assert_replica_close(got: dict, want: dict, what: str):
  """Parameters of one replica against its twin's, tensor by tensor, within the bound above."""
  flat_got, flat_want = ocp.tree.to_flat_dict(got), ocp.tree.to_flat_dict(want)
  assert flat_got.keys() == flat_want.keys()
  worst = 0.0
  for key, w in flat_want.items():
    g, w = np.asarray(flat_got[key], np.float64), np.asarray(w, np.float64)
    bound = PARAM_ULPS * EPS32 * float(np.abs(w).max()) + NOISE_FLOOR
    diff = float(np.abs(g - w).max())
    worst = max(worst, diff / bound)
    assert diff <= bound, (what, key, diff, bound)
  print(f"{what}: largest difference {worst:.3g} of its bound")


def replica(arrays: dict, k: int) -> dict:
  return jax.tree.map(lambda x: np.asarray(x)[k], arrays["params"])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """A seeds=3 run, uninterrupted, every replica exported."""
  workdir = str(tmp_path_factory.mktemp("straight"))
  finetune.run(config(seeds=N, export_seeds="all"), workdir)
  return workdir


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
  """Replica k's twin: the single-seed run --config.seed=SEED+k --config.data_seed=SEED."""
  workdirs = []
  for k in range(N):
    workdir = str(tmp_path_factory.mktemp(f"twin{k}"))
    finetune.run(config(seed=SEED + k, data_seed=SEED), workdir)
    workdirs.append(workdir)
  return workdirs


def test_each_replica_equals_its_single_seed_twin(straight, twins):
  metrics = metrics_of(straight)
  stacked = train_state(straight, STEPS)
  assert [s["seed"] for s in metrics["seeds"]] == [SEED + k for k in range(N)]
  for k, twin in enumerate(twins):
    entry = metrics["seeds"][k]
    assert entry["restarts"] == []
    want = metrics_of(twin)
    assert entry["validation"] == want["validation"]  # the same dev metrics
    assert_replica_close(replica(stacked, k), train_state(twin, STEPS)["params"], f"twin {k}")
  # the best replica's prediction file is its twin's
  best = [s["seed"] for s in metrics["seeds"]].index(metrics["best_seed"])
  tsv = os.path.join("predictions", "validation", "SST-2.tsv")
  assert read(os.path.join(straight, tsv)) == read(os.path.join(twins[best], tsv))
  # the replicas are different models (their seeds differ), trained on the same batches
  a, b = (ocp.tree.to_flat_dict(replica(stacked, k)) for k in (0, 1))
  assert any(not np.array_equal(a[key], b[key]) for key in a)


def test_metrics_summary_and_tensorboard(straight):
  metrics = metrics_of(straight)
  values = [s["validation"]["accuracy"] for s in metrics["seeds"]]
  summary = metrics["summary"]["validation"]["accuracy"]
  assert summary["mean"] == pytest.approx(np.mean(values))
  assert summary["min"] == min(values) and summary["max"] == max(values)
  assert summary["median"] == pytest.approx(np.median(values))
  best = [s for s in metrics["seeds"] if s["seed"] == metrics["best_seed"]][0]
  assert metrics["validation"] == best["validation"] and metrics["step"] == STEPS
  scalars = tb_scalars(straight)
  for k in range(N):
    assert f"train/loss/replica_{k}" in scalars
    assert f"eval_validation/replica_{k}/accuracy" in scalars
  losses = [scalars[f"train/loss/replica_{k}"][1] for k in range(N)]
  assert scalars["train/loss"][1] == pytest.approx(np.mean(losses), rel=1e-6)


def _poison(real_step):
  """train.train_step, except that replica 1 (dropout key of seed POISONED_SEED) gets a NaN
  loss and NaN parameters in the first micro-batch of optimizer step POISONED_STEP."""
  bad = jax.random.key_data(jax.random.fold_in(jax.random.key(POISONED_SEED), 1))

  def step(state, batch, rng):
    new, metrics = real_step(state, batch, rng)
    first = (POISONED_STEP - 1) * ACCUM  # micro-batches before it
    hit = (state.step == first) & jnp.all(jax.random.key_data(rng) == bad)
    params = jax.tree.map(lambda p: jnp.where(hit, jnp.nan, p), new.params)
    return new.replace(params=params), {**metrics, "loss": jnp.where(hit, jnp.nan, metrics["loss"])}

  return step


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory):
  """The seeds=3 run with replica 1 made to diverge at step 3 (and every checkpoint)."""
  workdir = str(tmp_path_factory.mktemp("poisoned"))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(train, "train_step", _poison(train.train_step))
    finetune.run(config(seeds=N, checkpoint_every_steps=1), workdir)
  return workdir


def test_a_diverged_replica_restarts_with_the_next_seed(poisoned, straight, caplog):
  metrics = metrics_of(poisoned)
  entry = metrics["seeds"][1]
  assert entry["seed"] == SEED + N  # the next unused seed
  (restart,) = entry["restarts"]
  assert restart["seed"] == POISONED_SEED and restart["step"] == POISONED_STEP
  assert restart["reason"].startswith("loss nan")
  print("restart:", restart)
  stacked, reference = train_state(poisoned, STEPS), train_state(straight, STEPS)
  assert np.isfinite(np.asarray(stacked["params"]["classifier"]["kernel"])).all()
  for k in (0, 2):  # the others go on as in the run without it
    assert metrics["seeds"][k]["restarts"] == []
    assert metrics["seeds"][k]["validation"] == metrics_of(straight)["seeds"][k]["validation"]
    assert_replica_close(replica(stacked, k), replica(reference, k), f"poisoned run {k}")
  # the restarted replica is seed 8's model now, not seed 6's of the run without the NaN
  kernel = lambda a: np.asarray(a["params"]["classifier"]["kernel"])[1]  # noqa: E731
  assert not np.allclose(kernel(stacked), kernel(reference), atol=1e-2)


def test_killed_run_with_a_restart_resumes_bit_for_bit(poisoned, tmp_path):
  rng = np.random.default_rng()
  at_step = int(rng.integers(1, STEPS + 1))
  print(f"killed at step {at_step}")
  workdir = str(tmp_path / "killed")
  cfg = config(seeds=N, checkpoint_every_steps=1)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(train, "train_step", _poison(train.train_step))
    run_killed(finetune.run, cfg, workdir, at_step=at_step)
    assert not os.path.exists(os.path.join(workdir, "metrics.json"))
    metrics = finetune.run(cfg, workdir)
  assert metrics == metrics_of(poisoned)
  got, got_position = saved_state(workdir, STEPS)
  want, want_position = saved_state(poisoned, STEPS)
  assert got_position == want_position
  assert_trees_equal(got, want)
  for k in range(N):
    best = os.path.join("best", f"replica_{k}")
    step = max(int(p) for p in os.listdir(os.path.join(poisoned, best)) if p.isdigit())
    assert_trees_equal(train_state(workdir, step, best), train_state(poisoned, step, best))


def test_four_seeds_on_four_devices_equal_one_device(tmp_path):
  """4 seeds on a 2 x 2 mesh, the batch split over "data" and the replicas over "fsdp" (two
  per device pair, each sharded as the rule table says otherwise), equal 4 seeds on one
  device."""
  split = [
    [axis, "fsdp" if axis == "replica" else "data" if axis == "batch" else mesh_axes]
    for axis, mesh_axes in sharding.RULES
  ]
  runs = {}
  for name, shape, rules in [("one", {"data": 1}, None), ("mesh", {"data": 2, "fsdp": 2}, split)]:
    workdir = str(tmp_path / name)
    cfg = config(seeds=4, num_train_steps=2, export="none")
    cfg.mesh.shape, cfg.mesh.rules = shape, rules
    runs[name] = (finetune.run(cfg, workdir), train_state(workdir, 2))
  assert runs["mesh"][0] == runs["one"][0]
  for k in range(4):
    got, want = replica(runs["mesh"][1], k), replica(runs["one"][1], k)
    assert_replica_close(got, want, what=f"2 x 2 mesh, replica {k}")


def test_export_the_best_replica_and_all_seeds(straight):
  """export/ is the best replica at its best step; export_seeds=all adds export/seed_<seed>/,
  each replica's best step, loadable as any export."""
  metrics = metrics_of(straight)
  best = [s for s in metrics["seeds"] if s["seed"] == metrics["best_seed"]][0]
  meta = json.loads(read(os.path.join(straight, "export", "albert_jax.json")))
  assert (meta["seed"], meta["step"]) == (best["seed"], best["best_step"])
  for k, entry in enumerate(metrics["seeds"]):
    directory = os.path.join(straight, "export", f"seed_{entry['seed']}")
    model = albert_jax.from_pretrained(directory)
    assert (model.metadata["seed"], model.metadata["step"]) == (entry["seed"], entry["best_step"])
    saved = train_state(straight, entry["best_step"], os.path.join("best", f"replica_{k}"))
    assert_trees_equal(jax.device_get(model.params), saved["params"])


@pytest.mark.parametrize(
  "flags, message",
  [
    ({"seeds": 0}, "seeds=0: must be an integer >= 1"),
    ({"seeds": 2, "export_seeds": "some"}, "export_seeds='some': choose one of best, all"),
    ({"seeds": 100000}, "seeds=100000 needs about"),
  ],
)
def test_bad_input_exits_2_with_one_line(flags, message, tmp_path):
  overrides = {**TINY_FLAGS, "from_scratch": True, "max_seq_length": 32, "mesh.shape.data": 1}
  command = finetune_command(tmp_path / "run", {**overrides, **flags})
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 2, done.stderr[-2000:]
  errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and message in errors[0], done.stderr[-2000:]
  assert done.stderr.strip().splitlines()[-1] == errors[0]
  assert not os.path.exists(tmp_path / "run" / "config.json")  # refused before any output


def test_replicas_at_chance_level_restart(tmp_path):
  """Evaluated every step, a replica whose accuracy is no better than the majority class's at
  steps 1 and 2 (restart_after=2, no warm-up) restarts with the next seed before step 3, and
  only such a replica."""
  workdir = str(tmp_path / "run")
  cfg = config(seeds=2, num_train_steps=3, warmup_steps=0, eval_every_steps=1, export="none")
  metrics = finetune.run(cfg, workdir)
  scalars = tb_scalars(workdir)
  examples = tasks.load_examples(
    tasks.get_task("sst2"), "validation", files={"validation": cfg.eval_file}
  )
  labels = np.asarray([e["label"] for e in examples])
  chance = max(np.mean(labels == c) for c in (0, 1))
  restarted = []
  for k, entry in enumerate(metrics["seeds"]):
    curve = scalars[f"eval_validation/replica_{k}/accuracy"]
    collapsed = all(curve[step] <= chance + 1e-6 for step in (1, 2))
    assert bool(entry["restarts"]) == collapsed, (k, curve, chance)
    if collapsed:
      (restart,) = entry["restarts"]
      assert restart["step"] == 2 and "at chance level" in restart["reason"]
      restarted.append(entry["seed"])
  assert sorted(restarted) == list(range(SEED + 2, SEED + 2 + len(restarted)))
  assert restarted  # tiny models after two steps predict one class: the path is exercised


def test_collapse_at_chance_level_marks_a_restart_after_warmup():
  """A replica whose dev metric is the majority class's for restart_after evaluations in a
  row after the warm-up is marked for restart; a better one is not; the restart takes the
  next unused seed, as long as restarts are left."""
  cfg = config(seeds=2, restart_after=2, max_restarts=1)
  task = tasks.get_task("sst2")
  examples = tasks.load_examples(task, "validation", files={"validation": cfg.eval_file})
  features = tasks.featurize(task, examples, AlbertTokenizer(), 32)
  chance = seeds.chance_level(
    task, EvalSet("validation", examples, features), "accuracy", "max", {}
  )
  labels = np.asarray([e["label"] for e in examples])
  assert chance == max(np.mean(labels == c) for c in (0, 1))  # the majority class's accuracy

  book = seeds.Replicas.start(SEED, 2, max_restarts=1)
  above = chance + 1 / len(labels)  # one more example right
  for step in (1, 2, 3):  # warm-up ends at step 1: only steps 2 and 3 count
    book.evaluated(0, step, {"accuracy": chance}, cfg, chance, warmup=1)
    book.evaluated(1, step, {"accuracy": above if step == 2 else chance}, cfg, chance, warmup=1)
  assert book.pending[0] is not None and "at chance level" in book.pending[0]
  assert book.pending[1] is None and book.at_chance[1] == 1
  assert book.restart(0, step=3) == SEED + 2 and book.seeds == [SEED + 2, SEED + 1]
  assert book.restarts[0] == [{"step": 3, "seed": SEED, "reason": book.restarts[0][0]["reason"]}]
  book.mark(1, "loss nan")  # none left: it goes on, and says why
  assert book.restart(1, step=4) is None and book.seeds[1] == SEED + 1
  assert book.collapsed == [None, "loss nan"] and book.pending == [None, None]
