"""Packing for prediction: several rows laid end to end in one row of a fixed length.

Token-level tasks (question answering, token classification) need each token's output, not
one per row, so several short rows can share one computed row: each is a *segment* with its
own positions (restarting at 0) and attends only to its own tokens (a [B, L, L] attention
mask, `albert_jax.model.AlbertModel`). Each row then gets the numbers it gets alone, while
the batch holds almost no padding and has one shape (bucketed rows need one per bucket).

- `pack(lengths, length)`: best-fit decreasing: the rows, longest first, each into the fullest
  packed row it still fits in (a new one if none).
- `choose_length`: the packed-row length to use, from a few candidates, by the compute it
  implies (dense layers grow with the positions, attention with their square).
- `packed_batches`: the packed rows cut into batches of `rows` packed rows; the last batch is
  cut to the power of two that holds its rows (at most two shapes in all).
- `segment_arrays`: a batch's input_ids, token_type_ids, position_ids and segment ids (1, 2,
  ... per packed row, 0 for padding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from albert_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class PackedBatch:
  """Rows of one batch and where each lies: packed row `slot[s]`, positions `offset[s]` to
  `offset[s] + lengths[indices[s]]`."""

  indices: np.ndarray  # [S] input rows in this batch
  slot: np.ndarray  # [S] the packed row (0 .. rows - 1) each lies in
  offset: np.ndarray  # [S] its first position there
  rows: int  # packed rows in the batch (some may be empty)
  length: int  # positions per packed row


def pack(lengths: Sequence[int] | np.ndarray, length: int) -> list[list[int]]:
  """Row indices grouped into packed rows of at most `length` positions (best-fit
  decreasing; ties keep the input order)."""
  lengths = np.asarray(lengths, np.int64)
  if lengths.size and (lengths.max() > length or lengths.min() < 0):
    raise UserError(f"Rows of lengths {lengths.min()}..{lengths.max()} do not fit in {length}.")
  free = [[] for _ in range(length + 1)]  # free[r]: packed rows with r positions left (a stack)
  count = np.zeros(length + 1, np.int64)  # len(free[r]), searchable with numpy
  packed: list[list[int]] = []
  for i in np.argsort(-lengths, kind="stable"):
    n = int(lengths[i])
    fits = np.flatnonzero(count[n:])
    if fits.size:
      left = n + int(fits[0])  # the least room that holds it
      b = free[left].pop()
      count[left] -= 1
    else:
      b, left = len(packed), length
      packed.append([])
    packed[b].append(int(i))
    free[left - n].append(b)
    count[left - n] += 1
  return packed


def choose_length(
  lengths: np.ndarray, candidates: Sequence[int], row_cost: Callable[[int], float]
) -> int:
  """The candidate (each >= the longest row) whose packing costs least: packed rows times
  `row_cost(length)`."""
  fitting = [c for c in candidates if c >= int(np.max(lengths))]
  if not fitting:
    raise UserError(f"No packed-row length among {list(candidates)} holds a row of {max(lengths)}.")
  return min(fitting, key=lambda c: (len(pack(lengths, c)) * row_cost(c), c))


def packed_batches(
  lengths: Sequence[int] | np.ndarray, length: int, rows: int
) -> list[PackedBatch]:
  """All rows packed into rows of `length` positions, `rows` packed rows a batch (the last
  batch cut to the power of two that holds its packed rows). Every row appears once."""
  if rows < 1:
    raise UserError(f"rows={rows} packed rows per batch must be >= 1.")
  lengths = np.asarray(lengths, np.int64)
  packed = pack(lengths, length)
  batches = []
  for start in range(0, len(packed), rows):
    group = packed[start : start + rows]
    slot = np.concatenate([np.full(len(p), k) for k, p in enumerate(group)])
    offset = np.concatenate([np.cumsum([0, *lengths[p][:-1]]) for p in group])
    size = min(rows, 1 << (len(group) - 1).bit_length())
    batches.append(PackedBatch(np.concatenate(group), slot, offset, size, length))
  return batches


def segment_arrays(
  batch: PackedBatch, rows: Sequence[Mapping[str, Sequence[int]]]
) -> tuple[np.ndarray, ...]:
  """input_ids, token_type_ids, position_ids and segment ids [rows, length] int32 of `batch`
  (`rows[i]` holds "input_ids" and optionally "token_type_ids"; attention within a row is
  full, so a row's own attention_mask is not used)."""
  shape = (batch.rows, batch.length)
  ids, types, positions, segments = (np.zeros(shape, np.int32) for _ in range(4))
  for s, (i, k, a) in enumerate(zip(batch.indices, batch.slot, batch.offset, strict=True)):
    row = rows[i]
    n = len(row["input_ids"])
    if not np.all(row.get("attention_mask", 1)):
      raise ValueError(f"row {i} has padding (attention_mask 0); packed rows must have none")
    ids[k, a : a + n] = row["input_ids"]
    types[k, a : a + n] = row.get("token_type_ids", 0)
    positions[k, a : a + n] = np.arange(n)
    segments[k, a : a + n] = s + 1
  return ids, types, positions, segments


def attention_mask(segments):
  """[B, L] segment ids -> [B, L, L] bool: a token attends to the tokens of its own segment
  (0 is padding: attends to and is seen by nothing). Works on numpy and jax arrays."""
  same = segments[:, :, None] == segments[:, None, :]
  return same & (segments[:, None, :] > 0)
