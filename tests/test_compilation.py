"""The persistent compilation cache and the step programs compiled ahead of time.

One tiny bucketed fine-tuning run (fsdp over conftest's 8 devices), in this process, on a
cache directory of its own (the session's cache, conftest.py, is set aside): run cold (every
train and eval program compiled and written), again with JAX's in-memory caches cleared (every
one read back, none compiled), and with the cache off; the three end bit for bit alike. Then
damaged entries, an unwritable directory, and the run as two processes sharing one fresh
directory.
"""

import json
import logging
import os
from pathlib import Path

import jax
import numpy as np
import pytest
from jax._src import compilation_cache as jax_cache

from albert_jax import compilation
from albert_jax.trainer import finetune
from tests.localhost import start_processes, succeed
from tests.runs import (
  TINY_FLAGS,
  assert_trees_equal,
  finetune_command,
  load_config,
  read,
  restore,
  train_state,
)

STEPS = 2
PREDICTIONS = os.path.join("predictions", "validation", "SST-2.tsv")
OVERRIDES = {  # the tiny model on the bundled SST-2 sample, bucketed, over an fsdp mesh
  **TINY_FLAGS,
  "mesh.shape.data": 1,
  "mesh.shape.fsdp": -1,
  "max_seq_length": 32,
  "batch_size": 8,
  "num_train_steps": STEPS,
  "warmup_steps": 1,
  "max_train_examples": 24,
  "max_eval_examples": 12,
  "eval_every_steps": 0,
  "checkpoint_every_steps": STEPS,
  "batching": "bucket",
  "max_buckets": 3,
  "bucket_multiple": 2,  # the sample's sentences have 8 to 14 tokens: several buckets
  "bucket_cost_steps": 0,  # all three in so short a run (the choice: tests/test_bucket_choice.py)
  "export": "none",
}
TOL = 1e-6  # absolute, two processes against one (f32 sums over gloo vs in-process)


def _run(workdir: Path, clear: bool = True, **fields):
  """(metrics, the compilations it made); with `clear`, JAX's in-memory caches cleared first:
  what is not compiled comes from the persistent cache."""
  if clear:
    jax.clear_caches()
  with compilation.CompileLog() as log:
    metrics = finetune.run(load_config("sst2_sample", {**OVERRIDES, **fields}), str(workdir))
  return metrics, log


def _assert_same_run(a: Path, b: Path) -> None:
  assert json.loads(read(a / "metrics.json")) == json.loads(read(b / "metrics.json"))
  assert read(a / PREDICTIONS) == read(b / PREDICTIONS)
  assert_trees_equal(train_state(a, STEPS), train_state(b, STEPS))


@pytest.fixture(scope="module")
def own_cache(tmp_path_factory):
  """This module's cache directory as the user's `jax_compilation_cache_dir`, then back."""
  saved = jax.config.jax_compilation_cache_dir
  path = tmp_path_factory.mktemp("xla")
  jax.config.update("jax_compilation_cache_dir", str(path))
  yield path
  jax.config.update("jax_compilation_cache_dir", saved)
  compilation.setup()  # the session's cache again
  jax.clear_caches()


@pytest.fixture(scope="module")
def runs(own_cache, tmp_path_factory):
  """{"cold", "warm", "off"}: (workdir, metrics, compile log) of the three runs."""
  root = tmp_path_factory.mktemp("runs")
  out = {}
  for name, cache in (("cold", True), ("warm", True), ("off", False)):
    metrics, log = _run(root / name, compilation_cache=cache)
    out[name] = (root / name, metrics, log)
  compilation.setup()  # on again for the tests that follow
  return out


def _entries(cache: Path, name: str) -> list[Path]:
  return sorted(cache.glob(f"jit_{name}-*-cache"))


def test_second_run_compiles_no_step_and_ends_bit_for_bit(runs, own_cache):
  (cold, _, cold_log), (warm, _, warm_log), (off, _, off_log) = (
    runs[k] for k in ("cold", "warm", "off")
  )
  buckets = json.loads(read(cold / "buckets.json"))["buckets"]
  train, evals = cold_log.compiled("train_step"), cold_log.compiled("predict_step")
  assert 1 < train <= len(buckets) and 1 <= evals <= len(buckets)  # every shape, ahead
  assert len(_entries(own_cache, "train_step")) == train  # each written to the cache
  assert len(_entries(own_cache, "predict_step")) == evals
  assert not list(own_cache.glob(".*-*"))  # no temporary file left behind
  # the second run: every train and eval program read back, none compiled
  assert warm_log.compiled("train_step") == warm_log.compiled("predict_step") == 0
  assert warm_log.from_cache("train_step") == train
  assert warm_log.from_cache("predict_step") == evals
  assert warm_log.compiled() == 0  # nor anything else
  # the cache off: everything compiled, nothing read
  assert off_log.from_cache() == 0 and off_log.compiled("train_step") == train
  _assert_same_run(cold, warm)
  _assert_same_run(cold, off)


def test_damaged_entries_are_compiled_again_with_one_warning_each(
  runs, own_cache, tmp_path, caplog
):
  truncated, corrupted = _entries(own_cache, "train_step")[:2]
  truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
  data = bytearray(corrupted.read_bytes())
  data[len(data) // 2 : len(data) // 2 + 64] = bytes(range(64))  # garbage in the middle
  corrupted.write_bytes(bytes(data))

  with caplog.at_level(logging.WARNING, logger="albert_jax.compilation"):
    _, log = _run(tmp_path / "run")
  warnings = [r.getMessage() for r in caplog.records if r.name == "albert_jax.compilation"]
  assert len(warnings) == 2, warnings
  for damaged in (truncated, corrupted):
    assert sum(str(damaged) in w and "damaged" in w for w in warnings) == 1
  assert all("\n" not in w for w in warnings)  # one line each
  assert log.compiled("train_step") == 2  # those two; the rest read back
  assert log.from_cache("train_step") == len(_entries(own_cache, "train_step")) - 2
  _assert_same_run(runs["cold"][0], tmp_path / "run")
  for replaced in (truncated, corrupted):  # rewritten whole: they decompress again
    jax_cache.decompress_executable(replaced.read_bytes())


def test_unwritable_cache_directory_warns_once_and_runs_without(own_cache, tmp_path, caplog):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  jax.config.update("jax_compilation_cache_dir", str(blocker / "xla"))
  try:
    with caplog.at_level(logging.WARNING, logger="albert_jax.compilation"):
      assert compilation.setup() is None
      # a shorter run (two programs to compile, without a cache); setting up again: no warning
      one_shape = dict(batching="max_length", num_train_steps=1, checkpoint_every_steps=1)
      metrics, log = _run(tmp_path / "run", clear=False, **one_shape)
  finally:
    jax.config.update("jax_compilation_cache_dir", str(own_cache))
    compilation.setup()
  warnings = [r.getMessage() for r in caplog.records if r.name == "albert_jax.compilation"]
  assert len(warnings) == 1 and str(blocker / "xla") in warnings[0], warnings
  assert log.from_cache() == 0 and log.compiled("train_step") == 1
  assert not list(blocker.parent.glob("**/*-cache"))  # nothing written anywhere
  assert metrics["step"] == 1 and 0 <= metrics["validation"]["accuracy"] <= 1


def test_default_directory_and_the_users_own(monkeypatch, tmp_path):
  saved = jax.config.jax_compilation_cache_dir
  try:
    jax.config.update("jax_compilation_cache_dir", None)  # no directory of the user's
    monkeypatch.setenv(compilation.ENV, str(tmp_path / "ours"))
    assert compilation.setup() == str(tmp_path / "ours")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0  # small programs too
    monkeypatch.delenv(compilation.ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compilation.setup() == str(tmp_path / "home" / ".cache" / "albert_jax" / "xla")
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "users"))  # the user's wins
    assert compilation.setup() == str(tmp_path / "users")
    assert compilation.setup(False) is None and not jax.config.jax_enable_compilation_cache
  finally:
    jax.config.update("jax_compilation_cache_dir", saved)
    compilation.setup()


def test_the_private_cache_names_are_where_we_use_them(monkeypatch, tmp_path):
  """`compilation` installs its cache through private JAX names (the module doc says why):
  this fails first when a JAX release moves them (setup would then keep JAX's own cache)."""
  assert compilation._jax_cache is jax_cache  # found through the public module's functions
  assert all(hasattr(jax_cache, name) for name in compilation.PRIVATE_NAMES)
  saved = jax.config.jax_compilation_cache_dir
  try:
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.setenv(compilation.ENV, str(tmp_path / "ours"))
    assert compilation.setup() == str(tmp_path / "ours")
    assert isinstance(jax_cache._cache, compilation.WholeEntryCache)
    assert jax_cache._cache._path == tmp_path / "ours"
  finally:
    jax.config.update("jax_compilation_cache_dir", saved)
    compilation.setup()


def test_two_processes_share_a_fresh_cache_directory(runs, tmp_path):
  """Both processes of the run (4 devices each) on one empty directory (process 0 writes, both
  read): both succeed, with the results of the run without a cache in this process."""
  cache = tmp_path / "xla"
  command = finetune_command(tmp_path / "two", OVERRIDES)
  # no directory of the user's: the processes use $ALBERT_JAX_CACHE
  env = {"JAX_COMPILATION_CACHE_DIR": "", compilation.ENV: str(cache)}
  stdouts = succeed(start_processes(command, 2, env))
  assert _entries(cache, "train_step") and not list(cache.glob(".*-*"))
  off, metrics, _ = runs["off"]
  assert json.loads(stdouts[0]) == metrics and stdouts[1] == ""
  a = restore(tmp_path / "two" / "checkpoints" / str(STEPS) / "state")
  b = restore(off / "checkpoints" / str(STEPS) / "state")
  diffs = [float(np.abs(x - y).max()) for x, y in zip(*map(jax.tree.leaves, (a, b)), strict=True)]
  assert max(diffs) <= TOL
