"""Length-bucketed batches (albert_jax.data.batching): coverage, determinism, resume, buckets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from albert_jax.data import batching
from albert_jax.errors import UserError


def _padded_cost(lengths, buckets):
  return sum(batching.bucket_for(int(x), buckets) - int(x) for x in lengths)


@pytest.mark.parametrize("seed", range(6))
def test_choose_buckets_is_optimal_against_brute_force(seed):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, 120, size=rng.integers(20, 200))
  k = int(rng.integers(1, 5))
  got = batching.choose_buckets(lengths, max_buckets=k, multiple=8)
  assert len(got) <= k and max(got) >= lengths.max() and all(b % 8 == 0 for b in got)
  values = sorted({max(8, -(-int(x) // 8) * 8) for x in lengths})
  best = min(
    _padded_cost(lengths, (*subset, values[-1]))
    for r in range(k)
    for subset in itertools.combinations(values[:-1], r)
  )
  assert _padded_cost(lengths, got) == best


def test_choose_buckets_caps_and_errors():
  assert batching.choose_buckets([5, 5, 45], max_buckets=8, multiple=32, max_length=48) == (32, 48)
  with pytest.raises(UserError, match="70 tokens"):
    batching.choose_buckets([70], max_length=64)
  with pytest.raises(UserError, match="largest bucket 64"):
    batching.bucket_for(65, (32, 64))


def _stream(lengths, batch_size, seed, buckets, start=(0, 0), count=None):
  it = batching.bucketed_batches(lengths, batch_size, seed, buckets, *start, megabatch=4)
  return list(itertools.islice(it, count))


def test_every_example_once_per_epoch_and_batches_are_bucketed():
  rng = np.random.default_rng(0)
  lengths = rng.integers(4, 100, size=203)
  buckets = batching.choose_buckets(lengths, max_buckets=8, multiple=8)
  plan = batching.epoch_plan(lengths, 8, seed=1, epoch=0, buckets=buckets, megabatch=16)
  real = np.concatenate([b.indices[b.weights > 0] for b in plan])
  assert sorted(real.tolist()) == list(range(203))  # each example exactly once
  assert sum(float(b.weights.sum()) for b in plan) == 203
  for b in plan:
    assert b.length in buckets and b.length >= lengths[b.indices].max()
    assert b.length == batching.bucket_for(int(lengths[b.indices].max()), buckets)
  # 8 buckets, mega-batches of 16 batches, lengths uniform on 4..99 (a hard case: no peak):
  # at most 20% of the computed positions are padding (filler rows included), against 59%
  # when every row is padded to 128. Deterministic for these seeds.
  assert batching.padding_fraction(plan, lengths) <= 0.20
  assert 1 - lengths.sum() / (128 * 8 * len(plan)) > 0.55
  # the batch order is shuffled: lengths do not come out sorted
  assert [b.length for b in plan] != sorted(b.length for b in plan)


def test_same_seed_same_batches_other_seed_other_batches():
  lengths = np.random.default_rng(1).integers(4, 60, size=100)
  buckets = (16, 32, 64)
  a = _stream(lengths, 8, 3, buckets, count=30)
  b = _stream(lengths, 8, 3, buckets, count=30)
  c = _stream(lengths, 8, 4, buckets, count=30)
  assert all(np.array_equal(x[0].indices, y[0].indices) for x, y in zip(a, b, strict=True))
  assert not all(np.array_equal(x[0].indices, y[0].indices) for x, y in zip(a, c, strict=True))


def test_resume_from_any_position_equals_uninterrupted():
  lengths = np.random.default_rng(2).integers(4, 60, size=50)
  buckets = (16, 32, 64)
  full = _stream(lengths, 8, 5, buckets, count=40)  # 7 batches an epoch: crosses epochs
  for cut in (1, 6, 7, 13, 20):
    _, epoch, index = full[cut - 1]
    resumed = _stream(lengths, 8, 5, buckets, start=(epoch, index), count=40 - cut)
    for x, y in zip(full[cut:], resumed, strict=True):
      assert np.array_equal(x[0].indices, y[0].indices) and x[0].length == y[0].length
      assert x[1:] == y[1:]


def test_length_sorted_batches_and_take():
  lengths = np.array([5, 30, 9, 17, 2])
  mask = (np.arange(32)[None, :] < lengths[:, None]).astype(np.int32)
  arrays = {"input_ids": mask * 7, "attention_mask": mask, "label": np.arange(5)}
  assert np.array_equal(batching.row_lengths(mask), lengths)
  batches = batching.length_sorted_batches(lengths, 2, buckets=(8, 16, 32))
  assert [b.indices.tolist() for b in batches] == [[4, 0], [2, 3], [1, 1]]
  assert [b.length for b in batches] == [8, 32, 32]
  assert batches[-1].weights.tolist() == [1.0, 0.0]
  batch = batching.take(arrays, batches[0], ("input_ids", "attention_mask", "label", "absent"))
  assert batch["input_ids"].shape == (2, 8) and batch["label"].tolist() == [4, 0]
  assert batch["example_weight"].tolist() == [1.0, 1.0]
  # multiple choice [N, C, L]: the longest choice decides, the last axis is cut
  mc = np.zeros((2, 4, 32), np.int32)
  mc[0, 2, :20] = 1
  mc[1, :, :3] = 1
  assert batching.row_lengths(mc).tolist() == [20, 3]


# ---- bucketed model runs: each example as if alone -----------------------------------------

TINY = dict(
  vocab_size=100,
  hidden_size=32,
  num_hidden_layers=2,
  num_attention_heads=2,
  intermediate_size=64,
  embedding_size=16,
  max_position_embeddings=64,
)
# Float32 logits of this tiny model are O(1); computing a row in a batch of other lengths only
# changes the order of float32 sums (masked keys add exact zeros), a few ulps through 2 layers.
# 64 float32 ulps at the logits' scale: 64 * 1.2e-7 * max(1, |logits|) = 7.6e-6 at scale 1.
ULPS = 64


def _tolerance(values) -> float:
  return ULPS * float(np.finfo(np.float32).eps) * max(1.0, float(np.max(np.abs(values))))


@pytest.fixture(scope="module")
def rows():
  """13 rows of lengths 3..47 padded to 48: input_ids, masks, segments and every head's labels."""
  rng = np.random.default_rng(7)
  lengths = rng.integers(3, 48, size=13)
  position = np.arange(48)[None, :]
  mask = (position < lengths[:, None]).astype(np.int32)
  return lengths, {
    "input_ids": rng.integers(5, 100, size=(13, 48)).astype(np.int32) * mask,
    "attention_mask": mask,
    "token_type_ids": ((position >= lengths[:, None] // 2) * mask).astype(np.int32),
    "label": rng.integers(0, 3, size=13).astype(np.int32),
    "labels": np.where(mask > 0, rng.integers(0, 3, size=(13, 48)), -100).astype(np.int32),
    "start_positions": rng.integers(0, lengths).astype(np.int32),
    "end_positions": rng.integers(0, lengths).astype(np.int32),
  }


@pytest.mark.parametrize(
  "head,fields",
  [
    ("sequence_classification", ("logits",)),
    ("token_classification", ("logits",)),
    ("question_answering", ("start_logits", "end_logits")),
  ],
)
def test_bucketed_outputs_and_losses_equal_each_example_alone(rows, head, fields):
  import jax

  from albert_jax import train
  from albert_jax.config import AlbertConfig
  from albert_jax.heads import MODEL_INPUTS, create_module, has_num_labels, init_params

  lengths, arrays = rows
  module = create_module(AlbertConfig(**TINY), head, num_labels=3 if has_num_labels(head) else None)
  params = init_params(module, jax.random.key(0))
  apply = jax.jit(lambda batch: module.apply({"params": params}, **batch, deterministic=True))
  sequence = head != "sequence_classification"

  def alone(i):  # row i by itself, unpadded: [1, lengths[i]]
    n = int(lengths[i])
    return apply({k: arrays[k][i : i + 1, :n] for k in MODEL_INPUTS})

  expected = [alone(i) for i in range(13)]
  buckets = batching.choose_buckets(lengths, max_buckets=3, multiple=8, max_length=48)
  plan = batching.length_sorted_batches(lengths, 4, buckets)  # last batch: 3 filler rows
  assert len({b.length for b in plan}) > 1 and plan[-1].weights.tolist() == [1, 0, 0, 0]
  seen = []
  for batch in plan:
    inputs = batching.take(arrays, batch, MODEL_INPUTS)
    out = apply({k: inputs[k] for k in MODEL_INPUTS})
    for b, i in enumerate(batch.indices[batch.weights > 0]):
      seen.append(int(i))
      for field in fields:
        got, want = np.asarray(getattr(out, field)[b]), np.asarray(getattr(expected[i], field)[0])
        if sequence:
          got = got[: lengths[i]]  # the real positions
        np.testing.assert_allclose(got, want, rtol=0, atol=_tolerance(want), err_msg=field)
  assert sorted(seen) == list(range(13))

  # A training batch with filler rows: its loss is the mean of its real examples' losses, each
  # example run alone at the batch's length (QA's softmax runs over every position of the row,
  # padding included, as Google's and HF's losses do; the other heads' losses see real tokens).
  loss_fn = train.LOSSES[head]
  keys = (*MODEL_INPUTS, "label", "labels", "start_positions", "end_positions")
  plan = batching.epoch_plan(lengths, 5, seed=0, epoch=0, buckets=buckets, megabatch=2)
  assert sum(float(b.weights.min()) == 0 for b in plan) == 1  # 13 rows: one batch with 2 fillers
  for batch in plan:
    inputs = batching.take(arrays, batch, keys)
    loss, _ = loss_fn(apply({k: inputs[k] for k in MODEL_INPUTS}), inputs)
    per_example, weights = [], []
    for i in batch.indices[batch.weights > 0]:
      one = batching.take(arrays, batching.Batch(np.array([i]), batch.length, np.ones(1)), keys)
      one_loss, _ = loss_fn(apply({k: one[k] for k in MODEL_INPUTS}), one)
      valid = float(np.sum(one["labels"] >= 0)) if head == "token_classification" else 1.0
      per_example.append(float(one_loss) * valid)
      weights.append(valid)
    want = sum(per_example) / sum(weights)  # token classification: the mean over tokens
    assert float(loss) == pytest.approx(want, rel=ULPS * float(np.finfo(np.float32).eps)), head


def test_prediction_batches_by_hand():
  lengths = np.array([5, 30, 9, 17, 2])
  plan = batching.prediction_batches(lengths, (8, 16, 32), batch_size=4, max_tokens=32)
  # bucket 8: 4 rows fit 32 positions, 2 present; bucket 16: 1 row; bucket 32: 1 row a batch
  assert [(b.indices.tolist(), b.length) for b in plan] == [
    ([4, 0], 8),
    ([2], 16),
    ([3], 32),
    ([1], 32),
  ]
  # no budget: batch_size rows, each bucket's last batch cut to the power of two holding it
  plan = batching.prediction_batches(np.array([3] * 5 + [20] * 3), (8, 32), batch_size=4)
  assert [(b.indices.tolist(), b.weights.tolist()) for b in plan] == [
    ([0, 1, 2, 3], [1, 1, 1, 1]),
    ([4], [1]),
    ([5, 6, 7, 7], [1, 1, 1, 0]),
  ]
  with pytest.raises(UserError, match="max_tokens=0"):
    batching.prediction_batches(lengths, (32,), batch_size=4, max_tokens=0)


@pytest.mark.parametrize("seed", range(5))
def test_prediction_batches_keep_the_budget_and_hold_every_row_once(seed):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, 300, rng.integers(1, 400))
  buckets = batching.choose_buckets(lengths, 6, max_length=512)
  batch_size, max_tokens, choices = (
    int(rng.integers(1, 64)),
    int(rng.integers(64, 4096)),
    int(rng.integers(1, 4)),
  )
  plan = batching.prediction_batches(lengths, buckets, batch_size, max_tokens, choices)
  real = np.concatenate([b.indices[b.weights > 0] for b in plan])
  assert sorted(real.tolist()) == list(range(len(lengths)))
  shapes: dict[int, set[int]] = {}
  for b in plan:
    n = int((b.weights > 0).sum())
    assert (b.weights[:n] == 1).all() and (b.weights[n:] == 0).all()  # real rows come first
    assert (b.indices[n:] == b.indices[n - 1]).all()  # filler: copies of the last real row
    # each row at its own bucket: the smallest that holds it
    assert all(batching.bucket_for(int(lengths[i]), buckets) == b.length for i in b.indices)
    rows = len(b.indices)
    assert rows <= batch_size and (rows == 1 or rows * b.length * choices <= max_tokens)
    shapes.setdefault(b.length, set()).add(rows)
  for length, sizes in shapes.items():  # the full batch and at most one smaller shape
    assert len(sizes) <= 2, (length, sizes)
