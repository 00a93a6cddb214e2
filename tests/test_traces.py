"""Traced prediction programs kept with the compilation cache (`albert_jax.traces`).

A tiny random text-classification model whose module counts its traces: the first Runner on
an empty cache directory traces each shape of its plan once and keeps it; a new Runner (a new
jitted function, JAX's in-memory caches cleared: as a new process) traces nothing and gives
the same numbers bit for bit, as does one with the cache off. A damaged kept program is traced
again with one warning; a model that differs only where the parameters' shapes do not show it
gets its own programs; a function `jax.export` refuses is lowered as traced; and a second
process on the first's cache directory traces nothing.
"""

import dataclasses
import json
import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from albert_jax import compilation, traces
from albert_jax.config import AlbertConfig
from albert_jax.heads import create_module, init_params
from albert_jax.pipelines import base
from tests.runs import TINY

ROOT = Path(__file__).resolve().parent.parent
# rows of several lengths: a plan of a few bucket shapes
LENGTHS = np.array([5, 9, 13, 6, 10, 30, 7, 12, 28, 8] * 3)


class Counted:
  """A flax module's `apply`, counting its traces (the prediction program calls it once a
  trace); its repr is the module's, as the traces' key reads it."""

  def __init__(self, module):
    self.module, self.traced = module, 0

  def __repr__(self) -> str:
    return repr(self.module)

  def apply(self, *args, **kwargs):
    self.traced += 1
    return self.module.apply(*args, **kwargs)


def _model(**overrides):
  config = AlbertConfig(vocab_size=100, **{**TINY, **overrides})
  module = create_module(config, "sequence_classification", num_labels=3)
  params = jax.jit(init_params, static_argnums=0)(module, jax.random.key(0))
  return types.SimpleNamespace(config=config, module=Counted(module), params=params)


def _rows(seed=0):
  rng = np.random.default_rng(seed)
  return [{"input_ids": rng.integers(5, 100, n).tolist()} for n in LENGTHS]


def _predict(model) -> tuple[np.ndarray, int]:
  """(logits of every row, the model's traces), as a new process would: a new Runner, JAX's
  in-memory caches cleared."""
  jax.clear_caches()
  model.module.traced = 0
  runner = base.Runner(model, base.logits, max_tokens=128)
  logits = np.stack([r["logits"] for r in runner(_rows())])
  assert runner._programs.fallbacks == 0
  return logits, model.module.traced


def _kept(cache):
  return sorted(cache.glob(f"{traces._PREFIX}*"))


@pytest.fixture
def own_cache(tmp_path):
  saved = jax.config.jax_compilation_cache_dir
  jax.config.update("jax_compilation_cache_dir", str(tmp_path))
  compilation.setup()
  yield tmp_path
  jax.config.update("jax_compilation_cache_dir", saved)
  compilation.setup()


@pytest.fixture(scope="module")
def model():
  return _model()


def test_a_new_process_compiles_its_plan_without_tracing(model, own_cache):
  runner = base.Runner(model, base.logits, max_tokens=128)
  shapes = {(len(b.indices), b.length) for b in runner.plan(LENGTHS)}
  cold, cold_traces = _predict(model)
  assert cold_traces == len(_kept(own_cache)) == len(shapes) > 1  # one each, each kept
  assert not list(own_cache.glob(".*.tmp"))  # no temporary file left behind
  warm, warm_traces = _predict(model)
  assert warm_traces == 0
  np.testing.assert_array_equal(warm, cold)
  compilation.setup(False)  # the cache off: traced again, the same numbers
  try:
    off, off_traces = _predict(model)
  finally:
    compilation.setup()
  assert off_traces == len(shapes)
  np.testing.assert_array_equal(off, cold)


def test_a_damaged_program_is_traced_again_with_one_warning(model, own_cache, caplog):
  cold, _ = _predict(model)
  first, second, *_ = _kept(own_cache)
  first.write_bytes(first.read_bytes()[:-100])  # truncated
  data = bytearray(second.read_bytes())
  data[-50] ^= 0xFF  # one byte flipped
  second.write_bytes(bytes(data))
  traces._warned.clear()
  with caplog.at_level(logging.WARNING, logger="albert_jax.traces"):
    again, traced = _predict(model)
  assert traced == 2  # the two damaged ones
  damaged = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
  assert len(damaged) == 2  # one line each
  assert any(str(first) in m for m in damaged) and any(str(second) in m for m in damaged)
  np.testing.assert_array_equal(again, cold)
  assert _predict(model)[1] == 0  # replaced whole


def test_a_model_that_differs_only_in_its_config_gets_its_own_programs(model, own_cache):
  first, _ = _predict(model)
  other = _model(hidden_act="relu")  # the same parameters' shapes
  other.params = model.params  # and values
  compilation.setup(False)
  try:
    expected, _ = _predict(other)  # computed without any kept program
  finally:
    compilation.setup()
  got, traced = _predict(other)
  assert traced > 0
  np.testing.assert_array_equal(got, expected)
  assert not np.array_equal(got, first)


def test_the_key_holds_the_source_and_the_arguments(monkeypatch):
  args = (jax.ShapeDtypeStruct((2, 8), jnp.int32),)
  key = traces._key("f", args)
  assert traces._key("f", (jax.ShapeDtypeStruct((2, 16), jnp.int32),)) != key
  assert traces._key("f", (jax.ShapeDtypeStruct((2, 8), jnp.float32),)) != key
  assert traces._key("g", args) != key
  monkeypatch.setattr(traces, "_source_digest", lambda: "an edited albert_jax")
  assert traces._key("f", args) != key


def test_a_function_export_refuses_is_lowered_as_traced(own_cache, caplog):
  @jax.jit
  def with_callback(x):
    return jax.pure_callback(np.sin, jax.ShapeDtypeStruct(x.shape, x.dtype), x) + 1

  programs = compilation.Programs(
    with_callback, lambda x: x.shape, "callback", traced_as="a host callback"
  )
  x = np.linspace(0, 1, 4, dtype=np.float32)
  traces._warned.clear()
  with caplog.at_level(logging.WARNING, logger="albert_jax.traces"):
    programs.add([(x.shape, (jax.ShapeDtypeStruct(x.shape, x.dtype),))])
    got = programs(x)
  np.testing.assert_allclose(np.asarray(got), np.sin(x) + 1, rtol=1e-6)
  assert [r.getMessage() for r in caplog.records if "not kept traced" in r.getMessage()]
  assert not _kept(own_cache)


def test_config_fields_the_key_reads_are_plain(model):
  """The module's repr names every config field (what the key distinguishes models by)."""
  text = repr(model.module)
  for field in dataclasses.fields(model.module.module.config):
    assert f"{field.name}=" in text


# A process that predicts with the tiny model, counting `jax.export` traces; prints
# {"exported": count} and saves the logits.
PROCESS = """
import json, sys
import jax, numpy as np
from albert_jax import compilation, traces
from albert_jax.heads import create_module, init_params
from albert_jax.config import AlbertConfig
from albert_jax.pipelines import base
from tests.test_traces import LENGTHS, TINY, _rows
compilation.setup()
count, export = [0], traces.export.export
def counted(*a, **k):
  count[0] += 1
  return export(*a, **k)
traces.export.export = counted
config = AlbertConfig(vocab_size=100, **TINY)
module = create_module(config, "sequence_classification", num_labels=3)
params = jax.jit(init_params, static_argnums=0)(module, jax.random.key(0))
model = type("Model", (), dict(config=config, module=module, params=params))
out = base.Runner(model, base.logits, max_tokens=128)(_rows())
np.save(sys.argv[1], np.stack([r["logits"] for r in out]))
print(json.dumps({"exported": count[0]}))
"""


def test_a_second_process_traces_nothing(tmp_path):
  """The keys hold across processes (no address or other per-process value in them)."""
  env = {**os.environ, "ALBERT_JAX_CACHE": str(tmp_path / "cache")}
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the product's own cache setup, on a fresh directory
  counts = []
  for name in ("first", "second"):
    done = subprocess.run(
      [sys.executable, "-c", PROCESS, str(tmp_path / f"{name}.npy")],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    counts.append(json.loads(done.stdout.splitlines()[-1])["exported"])
  assert counts[0] == len(_kept(tmp_path / "cache")) > 1 and counts[1] == 0
  np.testing.assert_array_equal(np.load(tmp_path / "second.npy"), np.load(tmp_path / "first.npy"))


def test_the_serialization_jax_export_needs_is_a_dependency():
  """jax.export serializes with flatbuffers, which jax itself does not require: the package's
  own install (the README's first command, no test extras) must bring it."""
  import importlib.metadata
  import re

  names = {
    re.split(r"[\s<>=;!~\[]", r, maxsplit=1)[0].lower()
    for r in importlib.metadata.requires("albert_jax")
  }
  assert "flatbuffers" in names
