"""Length-bucketed batches: compute on real tokens with a few static shapes.

Features are stored padded to `max_seq_length` (right padding). A batch needs only as many
positions as its longest row, so each batch is cut to the smallest *bucket* length that holds
it; XLA compiles one program per bucket. Three pieces:

- `choose_buckets(lengths, max_buckets)`: at most `max_buckets` lengths (multiples of
  `multiple`) chosen from the data's own length distribution to minimise the padded positions
  (an exact dynamic programme over the distinct lengths), the largest covering the longest row.
- `bucketed_batches`: the training stream. Epoch e shuffles the examples with
  `epoch_permutation(n, seed, e)`, cuts the order into mega-batches of `megabatch` batches,
  sorts each mega-batch by length (so a batch holds rows of similar length) and cuts it into
  batches, then shuffles the order of the epoch's batches again (seeded by seed and e), so
  training still sees random batches. Every example is used exactly once an epoch; the last
  batch of an epoch is topped up with weight-0 copies of its first row (full static shapes,
  no example counted twice). A `DataPosition(epoch, index)` (`index` = batches of the epoch
  already used) resumes the stream exactly. Every process computes the same global plan from
  the same lengths, so all agree on each batch's bucket.
- `length_sorted_batches`: evaluation: rows sorted by length, cut into batches of one size
  (the devices' global batch), each at its bucket; the caller puts the outputs back in order.
- `prediction_batches`: prediction on one host: each row at its own bucket, and a batch's row
  count set per bucket by a budget of padded positions (`max_tokens`), so long rows go a few
  at a time (on CPU, big batches of long rows run slower per token: their activations leave
  the caches) and short rows many at a time.

`take` gathers a batch's rows and cuts the sequence axes (the last axis of `SEQUENCE_KEYS`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from albert_jax.errors import UserError

# Feature arrays whose LAST axis is the sequence (cut to the bucket length).
SEQUENCE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels")
WEIGHT_KEY = "example_weight"  # 1 for real rows, 0 for the rows that fill an epoch's last batch
# The defaults of `choose_buckets`, which the trainers' configs and the pipelines also take.
MAX_BUCKETS = 8  # at most this many bucket lengths (compiled shapes)
BUCKET_MULTIPLE = 8  # each a multiple of this, so other data of similar lengths reuses them


@dataclasses.dataclass(frozen=True)
class Batch:
  """One batch of a plan: which rows, at which length, and which rows count."""

  indices: np.ndarray  # [batch_size] row indices into the feature arrays
  length: int  # the bucket: positions computed per row
  weights: np.ndarray  # [batch_size] float32, 0 for filler rows


def row_lengths(attention_mask: np.ndarray) -> np.ndarray:
  """Real tokens per feature row: [N, L] -> [N]; [N, C, L] (multiple choice) -> [N] (the
  longest choice)."""
  mask = np.asarray(attention_mask)
  lengths = mask.reshape(mask.shape[0], -1, mask.shape[-1]).sum(-1).max(-1)
  return lengths.astype(np.int64)


def choose_buckets(
  lengths: Sequence[int] | np.ndarray,
  max_buckets: int = MAX_BUCKETS,
  multiple: int = BUCKET_MULTIPLE,
  max_length: int | None = None,
) -> tuple[int, ...]:
  """At most `max_buckets` bucket lengths, multiples of `multiple`, minimising the padded
  positions of `lengths` when each row is padded to the smallest bucket that holds it.

  Exact: a dynamic programme over the distinct rounded-up lengths (O(max_buckets * U^2) for U
  distinct values, U <= max_length / multiple). `max_length` caps the buckets (the model's
  positions); a row longer than it is an error.
  """
  if max_buckets < 1 or multiple < 1:
    raise UserError(f"max_buckets={max_buckets} and multiple={multiple} must be >= 1.")
  lengths = np.asarray(lengths, np.int64)
  if lengths.size == 0:
    raise UserError("No rows to choose bucket lengths from.")
  rounded = np.maximum(-(-lengths // multiple) * multiple, multiple)
  if max_length is not None:
    if lengths.max() > max_length:
      raise UserError(f"A row has {lengths.max()} tokens, more than max_length={max_length}.")
    rounded = np.minimum(rounded, max_length)
  values, counts = np.unique(rounded, return_counts=True)
  u = len(values)
  if u <= max_buckets:
    return tuple(int(v) for v in values)
  # cost[i][j]: padded positions when the values i..j all use bucket values[j].
  rows_le = np.cumsum(counts)  # rows with a value <= values[j]
  sum_le = np.cumsum(counts * values)
  rows_before = np.concatenate([[0], rows_le[:-1]])
  sum_before = np.concatenate([[0], sum_le[:-1]])

  def cost(i: int, j: int) -> int:
    n = rows_le[j] - rows_before[i]
    return int(n * values[j] - (sum_le[j] - sum_before[i]))

  inf = np.iinfo(np.int64).max // 4
  best = np.full((max_buckets + 1, u), inf, np.int64)  # best[k][j]: k buckets cover 0..j
  arg = np.zeros((max_buckets + 1, u), np.int64)
  for j in range(u):
    best[1][j] = cost(0, j)
  for k in range(2, max_buckets + 1):
    for j in range(u):
      best[k][j], arg[k][j] = best[k - 1][j], -1  # fewer buckets suffice
      for i in range(1, j + 1):
        c = best[k - 1][i - 1] + cost(i, j)
        if c < best[k][j]:
          best[k][j], arg[k][j] = c, i
  buckets, k, j = [], max_buckets, u - 1
  while j >= 0 and k >= 1:
    if k > 1 and arg[k][j] == -1:
      k -= 1
      continue
    buckets.append(int(values[j]))
    j = int(arg[k][j]) - 1 if k > 1 else -1
    k -= 1
  return tuple(sorted(buckets))


def bucket_for(length: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= `length`."""
  for b in buckets:
    if b >= length:
      return int(b)
  raise UserError(
    f"A batch needs {length} positions, more than the largest bucket {max(buckets)}; choose "
    "the buckets from every split's lengths (or raise the largest)."
  )


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The order of the examples in `epoch`: a permutation seeded by (seed, epoch) only."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def epoch_plan(
  lengths: np.ndarray,
  batch_size: int,
  seed: int,
  epoch: int,
  buckets: Sequence[int],
  megabatch: int = 64,
) -> list[Batch]:
  """Every batch of `epoch`, in training order (see the module docstring)."""
  n = len(lengths)
  order = epoch_permutation(n, seed, epoch)
  chunk = batch_size * megabatch
  batches = []
  for start in range(0, n, chunk):
    part = order[start : start + chunk]
    part = part[np.argsort(lengths[part], kind="stable")]
    for b in range(0, len(part), batch_size):
      rows = part[b : b + batch_size]
      weights = np.ones(batch_size, np.float32)
      if len(rows) < batch_size:  # the epoch's last rows: fill with weight-0 copies
        weights[len(rows) :] = 0.0
        rows = np.concatenate([rows, np.full(batch_size - len(rows), rows[0])])
      length = bucket_for(int(lengths[rows].max()), buckets)
      batches.append(Batch(rows, length, weights))
  shuffle = np.random.default_rng([seed, epoch, 1]).permutation(len(batches))
  return [batches[i] for i in shuffle]


def bucketed_batches(
  lengths: np.ndarray,
  batch_size: int,
  seed: int,
  buckets: Sequence[int],
  start_epoch: int = 0,
  start_index: int = 0,
  megabatch: int = 64,
) -> Iterator[tuple[Batch, int, int]]:
  """Endless (batch, epoch, index after it) from batch `start_index` of `start_epoch` on."""
  lengths = np.asarray(lengths)
  if len(lengths) < 1:
    raise UserError("No training examples: check the training data file or split.")
  epoch, index = start_epoch, start_index
  plan = epoch_plan(lengths, batch_size, seed, epoch, buckets, megabatch)
  while True:
    if index >= len(plan):
      epoch, index = epoch + 1, 0
      plan = epoch_plan(lengths, batch_size, seed, epoch, buckets, megabatch)
    index += 1
    yield plan[index - 1], epoch, index


def length_sorted_batches(
  lengths: np.ndarray, batch_size: int, buckets: Sequence[int]
) -> list[Batch]:
  """Evaluation / prediction batches: rows sorted by length (stable), each batch at its
  bucket; the last batch topped up with weight-0 copies. Every row appears once with weight 1."""
  lengths = np.asarray(lengths)
  order = np.argsort(lengths, kind="stable")
  batches = []
  for start in range(0, len(order), batch_size):
    rows = order[start : start + batch_size]
    weights = np.ones(batch_size, np.float32)
    if len(rows) < batch_size:
      weights[len(rows) :] = 0.0
      rows = np.concatenate([rows, np.full(batch_size - len(rows), rows[-1])])
    batches.append(Batch(rows, bucket_for(int(lengths[rows].max()), buckets), weights))
  return batches


def take(
  arrays: Mapping[str, np.ndarray], batch: Batch, keys: Sequence[str]
) -> dict[str, np.ndarray]:
  """The batch's rows of `arrays[keys]` (those present), sequence axes cut to the bucket,
  plus `example_weight`."""
  out = {}
  for key in keys:
    if key not in arrays:
      continue
    value = arrays[key][batch.indices]
    if key in SEQUENCE_KEYS:
      value = value[..., : batch.length]
    out[key] = value
  out[WEIGHT_KEY] = batch.weights
  return out


def padding_fraction(batches: Sequence[Batch], lengths: np.ndarray) -> float:
  """Share of the computed token positions that are padding (filler rows count as padding)."""
  computed = sum(batch.length * len(batch.indices) for batch in batches)
  real = sum(float(np.sum(lengths[batch.indices] * batch.weights)) for batch in batches)
  return 1.0 - real / computed if computed else 0.0


def prediction_batches(
  lengths: np.ndarray,
  buckets: Sequence[int],
  batch_size: int,
  max_tokens: int | None = None,
  positions_per_token: int = 1,
) -> list[Batch]:
  """Prediction batches: rows sorted by length (stable), each computed at the smallest bucket
  that holds it; a bucket's rows go `min(batch_size, max_tokens // (bucket *
  positions_per_token))` at a time (at least 1; `max_tokens=None`: `batch_size`). A bucket's
  last batch is cut to the power of two that holds its rows (at most one more shape per
  bucket), topped up with weight-0 copies of its last row. Every row appears once with weight 1.

  `positions_per_token`: positions one row takes per unit of length (a multiple-choice row
  of C choices takes C).
  """
  if batch_size < 1 or (max_tokens is not None and max_tokens < 1):
    raise UserError(f"batch_size={batch_size} and max_tokens={max_tokens} must be >= 1.")
  lengths = np.asarray(lengths)
  order = np.argsort(lengths, kind="stable")
  assigned = np.array([bucket_for(int(n), buckets) for n in lengths[order]], np.int64)
  batches = []
  for length in sorted(set(assigned.tolist())):
    rows_of_bucket = order[assigned == length]
    rows = batch_size
    if max_tokens is not None:
      rows = max(1, min(batch_size, max_tokens // (length * positions_per_token)))
    for start in range(0, len(rows_of_bucket), rows):
      real = rows_of_bucket[start : start + rows]
      size = min(rows, 1 << (len(real) - 1).bit_length())
      weights = np.zeros(size, np.float32)
      weights[: len(real)] = 1.0
      indices = np.concatenate([real, np.full(size - len(real), real[-1])])
      batches.append(Batch(indices, length, weights))
  return batches
