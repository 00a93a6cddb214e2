"""How many bucket lengths a fine-tuning run compiles: as many as pay for their compiling over
the run's own steps (albert_jax.trainer.batches.choose_buckets / run_cost)."""

import json
from types import SimpleNamespace

import ml_collections
import numpy as np
import pytest

from albert_jax.data import batching
from albert_jax.errors import UserError
from albert_jax.trainer import batches


def config(**fields):
  c = ml_collections.ConfigDict(
    dict(
      batching="bucket",
      max_buckets=8,
      bucket_multiple=8,
      max_seq_length=256,
      bucket_cost_steps=4.0,
      batch_size=32,
      grad_accum_steps=1,
      eval_every_steps=0,
      seed=0,
      data_seed=None,
    )
  )
  c.update(fields)
  return c


def masks(lengths, width=256):
  return (np.arange(width)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)


def long_tailed(n, seed):
  """70% rows of 5-20 tokens, 20% of 20-120, 10% of 120-256 (the benchmark's shape)."""
  rng = np.random.default_rng(seed)
  kind = rng.choice(3, n, p=[0.7, 0.2, 0.1])
  return rng.integers(np.array([5, 20, 120])[kind], np.array([20, 120, 257])[kind])


TRAIN = {"attention_mask": masks(long_tailed(600, 0))}
EVAL = [
  SimpleNamespace(features=SimpleNamespace(arrays={"attention_mask": masks(long_tailed(100, 1))}))
]
ALL = np.concatenate([long_tailed(600, 0), long_tailed(100, 1)])


def choose(c, steps, workdir, eval_batch=32):
  return batches.choose_buckets(c, TRAIN, EVAL, steps, eval_batch, str(workdir))


def candidates(c):
  return list(
    dict.fromkeys(
      batching.choose_buckets(ALL, k, c.bucket_multiple, c.max_seq_length)
      for k in range(1, c.max_buckets + 1)
    )
  )


def test_a_short_run_compiles_fewer_lengths_than_a_long_one(tmp_path):
  c = config()
  short, long = choose(c, 60, tmp_path), choose(c, 1_000_000, tmp_path)
  assert 1 < len(short) < len(long)  # (60 steps: 3 lengths; 1e6: 7, the 8th saves nothing)
  # the choice is the cheapest candidate by run_cost (the fewest buckets among equals)
  for steps, chosen in ((60, short), (1_000_000, long)):
    costs = [batches.run_cost(c, TRAIN, EVAL, b, steps, 32) for b in candidates(c)]
    assert batches.run_cost(c, TRAIN, EVAL, chosen, steps, 32) == min(costs)
    assert candidates(c).index(chosen) == int(np.argmin(costs))


def test_cost_zero_takes_max_buckets_and_compiling_dearer_takes_fewer(tmp_path):
  assert choose(config(bucket_cost_steps=0), 60, tmp_path) == candidates(config())[-1]
  counts = [len(choose(config(bucket_cost_steps=k), 60, tmp_path)) for k in (0.5, 4, 40, 4000)]
  assert counts == sorted(counts, reverse=True) and counts[-1] == 1


def test_run_cost_counts_positions_and_shapes_by_hand():
  """8 train rows, 4 of 3 tokens and 4 of 20, micro-batches of 4 sorted by length in one
  mega-batch: one batch at each bucket an epoch; eval: 2 rows of 3 and 2 of 20, batch 2."""
  train = {"attention_mask": masks([3, 20, 3, 20, 3, 20, 3, 20], 24)}
  evals = [
    SimpleNamespace(features=SimpleNamespace(arrays={"attention_mask": masks([3, 20, 3, 20], 24)}))
  ]
  c = config(batch_size=4, max_seq_length=24, bucket_cost_steps=2.0, eval_every_steps=2)
  steps = 4  # 2 epochs of 2 batches
  # evaluations of the first split: at steps 2 (and 4 is the final one, counted once)
  one_bucket = 4 * 4 * 24 + 2 * (2 * 2 * 24) + (1 + 1) * 2.0 * 4 * 24
  two_buckets = (2 * 4 * 8 + 2 * 4 * 24) + 2 * (2 * 8 + 2 * 24) + (2 + 2) * 2.0 * 4 * 24
  assert batches.run_cost(c, train, evals, (24,), steps, 2) == one_bucket
  assert batches.run_cost(c, train, evals, (8, 24), steps, 2) == two_buckets


def test_a_resumed_run_keeps_its_recorded_lengths(tmp_path):
  c = config()
  first = choose(c, 60, tmp_path)
  batches.record_buckets(str(tmp_path), first)
  assert choose(c, 20_000, tmp_path) == first  # resumed for longer: same shapes, same numbers
  other = next(b for b in candidates(c) if b != first)
  (tmp_path / "buckets.json").write_text(json.dumps({"buckets": [24, 100, 256]}))
  with pytest.raises(UserError, match=r"bucket lengths \[24, 100, 256\].*data changed"):
    choose(c, 60, tmp_path)
  (tmp_path / "buckets.json").write_text(json.dumps({"buckets": list(other)}))
  assert choose(c, 60, tmp_path) == other


def test_max_length_batching_has_no_buckets(tmp_path):
  assert choose(config(batching="max_length"), 60, tmp_path) is None


def test_a_negative_cost_is_refused_naming_it(tmp_path):
  from albert_jax.trainer import finetune
  from tests.runs import tiny

  with pytest.raises(UserError, match=r"bucket_cost_steps=-1\.0: .* >= 0"):
    finetune.check_config(tiny("sst2_sample", bucket_cost_steps=-1.0), str(tmp_path))
