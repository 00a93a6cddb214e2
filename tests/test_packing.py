"""Packing for prediction: several rows in one, each attending only to itself, give each row
the numbers it gets alone; the plan holds every row once within the packed length."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from albert_jax import AlbertConfig
from albert_jax.data import packing
from albert_jax.errors import UserError
from albert_jax.heads import create_module
from albert_jax.weights.hf import params_from_hf_state_dict
from tests.reference import hf_model, hf_outputs
from tests.test_model import SMALL, TOL


def test_pack_by_hand():
  # best-fit decreasing: 7 opens a row, 5 opens a row, 3 goes with 7 (the least room that
  # holds it: 3 left), 3 then with 5 (5 left), 2 with 5+3 (2 left: the tightest fit)
  assert packing.pack([3, 7, 5, 3, 2], 10) == [[1, 0], [2, 3, 4]]
  assert packing.pack([], 8) == []
  with pytest.raises(UserError, match="do not fit in 8"):
    packing.pack([3, 9], 8)


@pytest.mark.parametrize("seed", range(5))
def test_packed_batches_hold_every_row_once_within_the_length(seed):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, 100, rng.integers(1, 300))
  length, rows = 128, int(rng.integers(1, 6))
  plan = packing.packed_batches(lengths, length, rows)
  seen = np.concatenate([b.indices for b in plan])
  assert sorted(seen.tolist()) == list(range(len(lengths)))
  for b in plan[:-1]:
    assert b.rows == rows
  assert plan[-1].rows in {rows, *(1 << k for k in range(rows.bit_length()))}
  packed_rows = 0
  for b in plan:
    assert b.length == length and b.slot.max() < b.rows
    for k in np.unique(b.slot):
      mine = np.flatnonzero(b.slot == k)
      starts, ends = b.offset[mine], b.offset[mine] + lengths[b.indices[mine]]
      order = np.argsort(starts)
      assert starts[order][0] == 0 and ends.max() <= length
      np.testing.assert_array_equal(starts[order][1:], ends[order][:-1])  # end to end
      packed_rows += 1
  # any-fit packing leaves at most one packed row at most half full
  assert packed_rows <= 2 * lengths.sum() / length + 1


def test_segment_arrays_and_mask_by_hand():
  rows = [{"input_ids": [5, 6, 7], "token_type_ids": [0, 1, 1]}, {"input_ids": [8, 9]}]
  (batch,) = packing.packed_batches([3, 2], 6, rows=2)
  ids, types, positions, segments = packing.segment_arrays(batch, rows)
  assert batch.rows == 1
  np.testing.assert_array_equal(ids, [[5, 6, 7, 8, 9, 0]])
  np.testing.assert_array_equal(types, [[0, 1, 1, 0, 0, 0]])
  np.testing.assert_array_equal(positions, [[0, 1, 2, 0, 1, 0]])
  np.testing.assert_array_equal(segments, [[1, 1, 1, 2, 2, 0]])
  mask = packing.attention_mask(segments)[0]
  want = np.zeros((6, 6), bool)
  want[:3, :3] = want[3:5, 3:5] = True
  np.testing.assert_array_equal(mask, want)
  with pytest.raises(ValueError, match="row 1 has padding"):
    packing.segment_arrays(batch, [rows[0], {"input_ids": [8, 9], "attention_mask": [1, 0]}])


def test_choose_length_takes_the_cheapest_packing():
  lengths = np.array([60, 60, 60, 60, 10])
  # per-position cost only: fewer positions in all wins (64: 5 rows = 320; 128: 3 rows = 384)
  assert packing.choose_length(lengths, [64, 128], lambda n: n) == 64
  # a per-row overhead makes fewer, longer rows cheaper
  assert packing.choose_length(lengths, [64, 128], lambda n: n + 1000) == 128
  with pytest.raises(UserError, match="holds a row of 60"):
    packing.choose_length(lengths, [32], lambda n: n)


@pytest.mark.parametrize("impl", [None, "xla"])
@pytest.mark.parametrize("head", ["base", "question_answering"])
def test_packed_rows_give_each_row_its_numbers_alone(head, impl):
  """Four texts packed into two rows ([B, L, L] mask, positions from 0 per text) against each
  text alone ([1, n], no padding), and against HF transformers on each text alone."""
  ref = hf_model(head, seed=7, **SMALL)
  config = AlbertConfig(**SMALL)
  params = params_from_hf_state_dict(ref.state_dict(), config, head)
  module = create_module(config, head, attention_implementation=impl)
  rng = np.random.default_rng(0)
  lengths = [11, 5, 9, 14]
  rows = [
    {
      "input_ids": rng.integers(1, SMALL["vocab_size"], n).tolist(),
      "token_type_ids": (np.arange(n) >= n // 2).astype(int).tolist(),
    }
    for n in lengths
  ]
  (batch,) = packing.packed_batches(lengths, 24, rows=2)
  assert batch.rows == 2  # 14+9 and 11+5
  ids, types, positions, segments = packing.segment_arrays(batch, rows)
  packed = module.apply({"params": params}, ids, packing.attention_mask(segments), types, positions)
  field = "last_hidden_state" if head == "base" else "start_logits"
  for i, k, a in zip(batch.indices, batch.slot, batch.offset, strict=True):
    n, row = lengths[i], rows[i]
    one = [np.asarray(row[key])[None] for key in ("input_ids", "token_type_ids")]
    alone = module.apply({"params": params}, one[0], None, one[1])
    got = np.asarray(getattr(packed, field))[k, a : a + n]
    want = np.asarray(getattr(alone, field))[0]
    # the same sums over the same nonzero terms in another order (masked keys weigh exactly 0):
    # a few float32 ulps a block, renormalized by each LayerNorm; bound 16 ulps of the scale
    bound = 16 * np.finfo(np.float32).eps * np.abs(want).max()
    assert np.abs(got - want).max() <= bound, (np.abs(got - want).max(), bound)
    theirs = hf_outputs(ref, input_ids=one[0], token_type_ids=one[1])
    assert np.abs(got - theirs[field][0]).max() <= TOL


def test_a_mask_of_another_shape_is_named():
  config = AlbertConfig(**SMALL)
  module = create_module(config, "base")
  ids = jnp.ones((2, 6), jnp.int32)
  params = module.init(jax.random.key(0), ids)["params"]
  with pytest.raises(UserError, match=r"attention_mask has shape \(2, 6, 5\); it must be"):
    module.apply({"params": params}, ids, jnp.ones((2, 6, 5), jnp.int32))
