"""Prediction's batch plan: every shape compiled ahead, and packed or not chosen by measurement.

A tiny random question-answering model (no files): a call compiles each shape of its plan
before running it, never through the jitted function; with enough batches a shape, the plan
that adds up to less measured time runs, whatever the multiply-add count says; each shape is
timed once and its time kept beside the compilation cache, where a new process reads it
instead of measuring.
"""

import types

import jax
import numpy as np
import pytest

from albert_jax import compilation
from albert_jax.config import AlbertConfig
from albert_jax.data import batching, packing
from albert_jax.heads import create_module
from albert_jax.pipelines import base
from tests.runs import TINY


def _spans(out):
  return {"start_logits": out.start_logits, "end_logits": out.end_logits}


@pytest.fixture(scope="module")
def model():
  config = AlbertConfig(vocab_size=100, **TINY)
  module = create_module(config, "question_answering")
  ids = np.zeros((1, 8), np.int32)
  params = module.init(jax.random.key(0), ids, np.ones_like(ids), ids)["params"]
  return types.SimpleNamespace(config=config, module=module, params=params)


@pytest.fixture
def own_cache(tmp_path):
  saved = jax.config.jax_compilation_cache_dir
  jax.config.update("jax_compilation_cache_dir", str(tmp_path))
  compilation.setup()
  compilation._timings.clear()  # this process's: only the directory's count
  yield tmp_path
  jax.config.update("jax_compilation_cache_dir", saved)
  compilation.setup()


def _rows(lengths, seed=0):
  rng = np.random.default_rng(seed)
  return [{"input_ids": rng.integers(5, 100, n).tolist()} for n in lengths]


# 24 short rows and 4 long ones: several batches a shape either way
LENGTHS = np.array([6, 9, 12, 7, 10, 8] * 4 + [60, 58, 62, 64])


def test_a_call_compiles_every_shape_of_its_plan_ahead(model, own_cache):
  runner = base.Runner(model, _spans, max_tokens=128, pack=False)
  rows = _rows(LENGTHS)
  plan = runner.plan(LENGTHS)
  got = runner(rows)
  shapes = {(len(b.indices), b.length) for b in plan}
  assert set(runner._programs.futures) == {(s,) for s in shapes} and len(shapes) > 1
  assert runner._programs.fallbacks == 0  # no batch went through the jitted function
  first = plan[0]  # its rows as the jitted function computes them: the same program
  jitted = runner._programs._fn(
    model.params, *base._pad([rows[i] for i in first.indices], first.length)
  )
  for k, i in enumerate(first.indices[first.weights > 0]):
    np.testing.assert_array_equal(got[i]["start_logits"], np.asarray(jitted["start_logits"][k]))


@pytest.mark.parametrize("packed_faster", [True, False])
def test_the_plan_measured_faster_runs(model, monkeypatch, packed_faster):
  """The measured times decide, whatever the cost model would choose."""
  runner = base.Runner(model, _spans, max_tokens=128, pack=True)
  monkeypatch.setattr(base, "CALIBRATE_BATCHES_PER_SHAPE", 1)
  monkeypatch.setattr(runner, "_compile", lambda plan, lead: None)

  def seconds(b):  # per batch: packed ones 10x faster or 10x slower than a bucketed one
    if isinstance(b, packing.PackedBatch):
      return 0.1 if packed_faster else 10.0
    return 1.0

  monkeypatch.setattr(runner, "_seconds", seconds)
  plan = runner.plan(LENGTHS)
  kind = packing.PackedBatch if packed_faster else batching.Batch
  assert all(isinstance(b, kind) for b in plan)


def test_each_shape_is_timed_once_and_kept_with_the_cache(model, own_cache, monkeypatch):
  monkeypatch.setattr(base, "CALIBRATE_BATCHES_PER_SHAPE", 1)
  runner = base.Runner(model, _spans, max_tokens=128, pack=True)
  plan = runner.plan(LENGTHS)
  kept = sorted(own_cache.glob("albert_jax-timing-*.json"))  # one a shape of both candidates
  assert len(kept) == len(runner._programs.futures) + len(runner._packed.futures) > 2
  compilation._timings.clear()  # a new process: the directory only

  def no_run(self, key):
    raise AssertionError(f"{key} was run again")

  monkeypatch.setattr(compilation.Programs, "compiled", no_run)
  again = base.Runner(model, _spans, max_tokens=128, pack=True)
  assert [type(b) for b in again.plan(LENGTHS)] == [type(b) for b in plan]
