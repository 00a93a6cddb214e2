"""What every task pipeline shares: loading the model with the head the task needs, and running
it over encoded rows in length-sorted batches, each padded to one of a few bucket lengths (one
compilation per bucket; `albert_jax.data.batching`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from albert_jax import compilation
from albert_jax.data import batching, packing
from albert_jax.errors import UserError
from albert_jax.weights.pretrained import Pretrained, from_pretrained

# input_ids, optional token_type_ids and attention_mask (default: all 1): [L], or [C, L] with
# the choices of a multiple-choice question padded to the longest of them
Row = Mapping[str, Sequence[int]]
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def load(model: Pretrained | str | os.PathLike, head: str, task: str, dtype: str | None):
  """`model` (loaded, or a directory or hub name to load), checked to have `head`."""
  if not isinstance(model, Pretrained):
    options = {} if dtype is None else {"dtype": dtype_of(dtype)}
    model = from_pretrained(model, **options)
  if model.head != head:
    raise UserError(
      f"The {task!r} pipeline needs a model with head {head!r}; this one has head "
      f"{model.head!r}. Use a model fine-tuned for {task}."
    )
  return model


def logits(out: Any) -> dict[str, jax.Array]:
  """The outputs of the heads with one `logits` array (`Runner`'s default)."""
  return {"logits": out.logits}


def model_and_runner(
  pipeline: Any,
  model: Pretrained | str | os.PathLike,
  dtype: str | None,
  outputs: Callable[[Any], dict[str, jax.Array]] = logits,
  **runner_options: Any,
) -> tuple[Pretrained, Runner]:
  """`pipeline`'s model (loaded, checked to have the pipeline's head) and a `Runner` over it."""
  model = load(model, pipeline.head, pipeline.task, dtype)
  return model, Runner(model, outputs, **runner_options)


def dtype_of(name: str):
  if name not in DTYPES:
    raise UserError(f"dtype={name!r}: choose one of {', '.join(DTYPES)}.")
  return DTYPES[name]


def label_names(model: Pretrained) -> list[str]:
  """The stored label names by id (`id2label`), else HF's `LABEL_<i>`."""
  n = model.num_labels or 0
  stored = model.metadata.get("id2label") or {}
  return [stored.get(str(i), f"LABEL_{i}") for i in range(n)]


# Padded positions per batch on CPU: about where a forward pass is fastest per token there
# (albert-base, 2 cores: [32, 32], [8, 128] and [2, 384] batches all run near the peak; 4x
# as many positions runs 10-20% slower per token once activations leave the caches).
CPU_MAX_TOKENS = 1024
# Batches run at once on CPU. XLA splits one batch's matmuls over the cores, with some idle
# time at each sync; a second batch fills it (question answering, 2 cores, A/B interleaved:
# 1.17x faster at albert-base, 1.22x at a smaller size).
CPU_STREAMS = 2


def max_tokens_for(value: int | str | None) -> int | None:
  """`max_tokens` resolved: "auto" is CPU_MAX_TOKENS on CPU and no limit on GPU/TPU (there,
  bigger batches only help); None is no limit."""
  if value == "auto":
    return CPU_MAX_TOKENS if jax.default_backend() == "cpu" else None
  if value is not None and (not isinstance(value, int) or value < 1):
    raise UserError(f"max_tokens={value!r}: give a number >= 1, None (no limit) or 'auto'.")
  return value


# Packed-row lengths tried besides the longest row's (rounded up to a multiple of 8).
PACKED_LENGTHS = (128, 256, 384, 512)
# The packed and the bucketed plans are timed (`Runner.plan`) when they hold at least this many
# batches per shape to time, or every shape's time is known already; else the cost model picks.
CALIBRATE_BATCHES_PER_SHAPE = 4
log = logging.getLogger(__name__)


class Runner:
  """Runs a model over encoded rows: `runner(rows) -> [per-row outputs]`.

  Rows are sorted by length and computed at up to `max_buckets` bucket lengths
  (`batching.choose_buckets`), each batch holding rows of one bucket: at most `batch_size`
  rows and at most `max_tokens` padded positions (`batching.prediction_batches`). One
  compilation per (rows, bucket) shape. On CPU two batches run at once (`CPU_STREAMS`).

  `pack=True` (for outputs with one value per token only: every output's axis 1 must be the
  sequence) lays several rows end to end in rows of one length instead, when that computes
  less (`albert_jax.data.packing`): each row keeps its own positions and attends only to
  itself, so its numbers are those it gets alone, with almost no padding and one or two
  shapes. The length is chosen from the longest row's and `PACKED_LENGTHS` by the compute it
  implies; a batch holds `max_tokens // length` packed rows (`batch_size` without a budget).
  Multi-row inputs (multiple choice, [C, L]) are never packed.

  `outputs(model_output) -> {name: [B, ...] array}` picks the fields a pipeline needs; each
  row's arrays come back float32 with the batch axis dropped (sequence axes padded to the
  batch's bucket, or cut to the row's own length when packed: cut them with the row's length).

  Every shape of a call's plan is compiled ahead, concurrently, before its batches run
  (`albert_jax.compilation.Programs`; the persistent cache keeps them for the next process,
  and `albert_jax.traces` their traced programs, so the next process does not trace the model).
  Packed or not is decided by measurement where it can pay: each shape of both plans is run
  once on this machine and the plan that adds up to less time runs (`plan`); the times are
  kept beside the compilation cache, so a later process plans without measuring.
  """

  def __init__(
    self,
    model: Pretrained,
    outputs: Callable[[Any], dict[str, jax.Array]],
    *,
    batch_size: int = 32,
    max_tokens: int | str | None = "auto",
    max_buckets: int = batching.MAX_BUCKETS,
    pack: bool = False,
    progress: bool = False,
  ):
    if batch_size < 1:
      raise UserError(f"batch_size={batch_size} must be >= 1.")
    self.model, self.batch_size, self.max_buckets, self.pack, self.progress = (
      model,
      batch_size,
      max_buckets,
      pack,
      progress,
    )
    self.max_tokens = max_tokens_for(max_tokens)

    @jax.jit
    def run(params, ids, mask, types, positions=None):
      out = model.module.apply({"params": params}, ids, mask, types, positions)
      return {k: v.astype(jnp.float32) for k, v in outputs(out).items()}

    @jax.jit
    def run_packed(params, ids, segments, types, positions):
      return run(params, ids, packing.attention_mask(segments), types, positions)

    where = getattr(outputs, "__module__", "") or ""
    what = f"{model.module!r} {where}.{getattr(outputs, '__qualname__', outputs)}"
    # the traced programs are kept with the cache where the package's source covers `outputs`
    ours = where.startswith("albert_jax.")
    pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="compile")
    self._programs = compilation.Programs(
      run, _shape_key, "prediction", pool=pool, traced_as=f"prediction {what}" if ours else None
    )
    self._packed = compilation.Programs(
      run_packed,
      _shape_key,
      "packed prediction",
      pool=pool,
      traced_as=f"packed prediction {what}" if ours else None,
    )
    self._run, self._run_packed = self._programs, self._packed  # what a batch calls
    self._unlogged: list[tuple[compilation.Programs, list]] = []  # compiled, not yet logged
    self._timing_key = f"{compilation.device_key()} {hashlib.sha256(what.encode()).hexdigest()}"

  def __call__(self, rows: Sequence[Row]) -> list[dict[str, np.ndarray]]:
    if not rows:
      return []
    limit = self.model.config.max_position_embeddings
    lengths = np.array([np.shape(r["input_ids"])[-1] for r in rows])
    if lengths.max() > limit:
      i = int(lengths.argmax())
      raise UserError(f"Input {i} is {lengths[i]} tokens long; the model takes at most {limit}.")
    lead = np.shape(rows[0]["input_ids"])[:-1]  # (choices,) of multiple-choice rows, else ()
    choices = int(np.prod(lead, dtype=np.int64))
    plan = self.plan(lengths, choices)
    self._compile(plan, lead)  # every shape, concurrently, before the batches need them
    results: list[dict[str, np.ndarray] | None] = [None] * len(rows)

    def run(b: batching.Batch | packing.PackedBatch) -> dict[str, np.ndarray]:
      if isinstance(b, packing.PackedBatch):
        ids, types, positions, segments = packing.segment_arrays(b, rows)
        out = self._run_packed(self.model.params, ids, segments, types, positions)
      else:
        out = self._run(self.model.params, *_pad([rows[i] for i in b.indices], b.length))
      return jax.device_get(out)

    streams = CPU_STREAMS if jax.default_backend() == "cpu" else 1
    with (
      tqdm(total=len(rows), unit="input", disable=not self.progress) as bar,
      ThreadPoolExecutor(streams) as pool,
    ):
      for b, out in zip(plan, pool.map(run, plan), strict=True):  # in plan order
        if isinstance(b, packing.PackedBatch):
          for i, k, a in zip(b.indices, b.slot, b.offset, strict=True):
            results[i] = {name: value[k, a : a + lengths[i]] for name, value in out.items()}
        else:
          for k, i in enumerate(b.indices[b.weights > 0]):
            results[i] = {name: value[k] for name, value in out.items()}
        bar.update(len(b.indices) if isinstance(b, packing.PackedBatch) else (b.weights > 0).sum())
    for programs, keys in self._unlogged:
      done = programs.summary(keys)
      log.info(
        "compiled %d %s programs ahead; %d read from the compilation cache",
        done["programs"],
        programs.what,
        done["from_cache"],
      )
    self._unlogged = []
    return results

  def _compile(self, plan, lead: tuple[int, ...]) -> None:
    """Starts compiling the plan's shapes not compiled yet (logged at the end of the call)."""
    params = self.model.params
    bucketed = dict.fromkeys(  # in the order the plan needs them
      _shape_key(None, _spec((len(b.indices), *lead, b.length)))
      for b in plan
      if isinstance(b, batching.Batch)
    )
    packed = dict.fromkeys((b.rows, b.length) for b in plan if isinstance(b, packing.PackedBatch))
    new = [
      (self._programs, self._programs.add([(k, (params, *[_spec(k[0])] * 3)) for k in bucketed])),
      (self._packed, self._packed.add([((s,), (params, *[_spec(s)] * 4)) for s in packed])),
    ]
    self._unlogged += [(programs, keys) for programs, keys in new if keys]

  def _seconds(self, b: batching.Batch | packing.PackedBatch) -> float:
    """What one batch of `b`'s shape takes here: measured once (kept with the cache)."""
    packed = isinstance(b, packing.PackedBatch)
    shape = (b.rows, b.length) if packed else (len(b.indices), b.length)
    key = f"{self._timing_key} {_plan_shape(b)}"
    if (seconds := compilation.timing(key)) is not None:
      return seconds
    compiled = (self._packed if packed else self._programs).compiled((shape,))
    inputs = [np.ones(shape, np.int32) if packed else np.zeros(shape, np.int32)] * (
      4 if packed else 3
    )  # packed: segment 1 everywhere (one segment a row); else ids 0
    jax.block_until_ready(compiled(self.model.params, *inputs))  # the first run's own costs
    start = time.perf_counter()
    jax.block_until_ready(compiled(self.model.params, *inputs))
    seconds = time.perf_counter() - start
    compilation.record_timing(key, seconds)
    return seconds

  def plan(
    self, lengths: np.ndarray, choices: int = 1
  ) -> list[batching.Batch] | list[packing.PackedBatch]:
    """The batches for rows of `lengths` (`choices` > 1: multiple-choice rows, never packed):
    bucketed, or packed when `pack` is on and that costs less (`cost`)."""
    limit = self.model.config.max_position_embeddings
    buckets = batching.choose_buckets(lengths, self.max_buckets, max_length=limit)
    bucketed = batching.prediction_batches(
      lengths, buckets, self.batch_size, self.max_tokens, positions_per_token=choices
    )
    if not self.pack or choices > 1:
      return bucketed
    longest = min(-(-int(lengths.max()) // 8) * 8, limit)
    candidates = sorted({longest, *(n for n in PACKED_LENGTHS if longest < n <= limit)})
    length = packing.choose_length(lengths, candidates, self.row_cost)
    rows = self.batch_size if self.max_tokens is None else max(1, self.max_tokens // length)
    packed = packing.packed_batches(lengths, length, rows)
    if self._calibrates(packed, bucketed):  # the plan that runs faster here
      self._compile(packed + bucketed, ())
      return packed if self.seconds(packed) < self.seconds(bucketed) else bucketed
    # rows all near the longest pack no better than buckets; nor do tiny models, where
    # attention (growing with the packed length) is most of the compute
    return packed if self.cost(packed) < self.cost(bucketed) else bucketed

  def _calibrates(self, packed, bucketed) -> bool:
    """Whether to time the two plans: each shape's time is known, or the plans hold at least
    CALIBRATE_BATCHES_PER_SHAPE batches a shape (timing costs little beside them)."""
    shapes = {_plan_shape(b) for b in packed + bucketed}
    unknown = [s for s in shapes if compilation.timing(f"{self._timing_key} {s}") is None]
    return not unknown or len(packed) + len(bucketed) >= CALIBRATE_BATCHES_PER_SHAPE * len(shapes)

  def seconds(self, plan: Sequence[batching.Batch | packing.PackedBatch]) -> float:
    """The plan's time on this machine: its batches' measured times (`_seconds`), added."""
    return sum(self._seconds(b) for b in plan)

  def cost(self, plan: Sequence[batching.Batch | packing.PackedBatch]) -> float:
    """Multiply-adds of one layer over all the plan's rows (filler and empty rows included)."""
    return sum(
      (b.rows if isinstance(b, packing.PackedBatch) else b.indices.size) * self.row_cost(b.length)
      for b in plan
    )

  def row_cost(self, length: int) -> float:
    """Multiply-adds of one layer over a row of `length` positions: the dense layers (Q, K,
    V, output: 4 H^2 a position; FFN: 2 H F) and attention (2 H length a position)."""
    c = self.model.config
    h, f = c.hidden_size, c.intermediate_size
    return length * (4 * h * h + 2 * h * f + 2 * h * length)


def _shape_key(params, ids, *rest) -> tuple:
  """The key of a call's program: its input_ids' shape."""
  return (tuple(ids.shape),)


def _spec(shape: tuple[int, ...]) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(shape, jnp.int32)


def _plan_shape(b: batching.Batch | packing.PackedBatch) -> str:
  """A batch's shape as `Runner._seconds` keys its time."""
  if isinstance(b, packing.PackedBatch):
    return f"packed {(b.rows, b.length)}"
  return f"rows {(len(b.indices), b.length)}"


def _pad(rows: Sequence[Row], length: int) -> tuple[np.ndarray, ...]:
  """input_ids (pad 0), attention_mask, token_type_ids: [B, (C,) length] int32."""
  shape = (len(rows), *np.shape(rows[0]["input_ids"])[:-1], length)
  ids, mask, types = (np.zeros(shape, np.int32) for _ in range(3))
  for b, row in enumerate(rows):
    n = np.shape(row["input_ids"])[-1]
    ids[b, ..., :n] = row["input_ids"]
    mask[b, ..., :n] = row.get("attention_mask", 1)
    types[b, ..., :n] = row.get("token_type_ids", 0)
  return ids, mask, types


def as_list(inputs: Any, single: Callable[[Any], bool]) -> tuple[list[Any], bool]:
  """(inputs as a list, whether one input was given)."""
  if single(inputs):
    return [inputs], True
  if isinstance(inputs, (list, tuple)):
    return list(inputs), False
  raise UserError(f"Pipeline input {str(inputs)[:80]!r} is neither one input nor a list of them.")


def with_aliases(options: Mapping[str, Any], aliases: Mapping[str, str], task: str) -> dict:
  """`options` with each alias (`aliases`: alias -> name) given under its name (an alias left
  None is ignored); an alias and its name given different values is an error."""
  out = {k: v for k, v in options.items() if k not in aliases}
  for alias, name in aliases.items():
    value = options.get(alias)
    if value is None:
      continue
    if out.get(name) is not None and out[name] != value:
      raise UserError(
        f"{task}: {name}={out[name]!r} and its alias {alias}={value!r} disagree; give one."
      )
    out[name] = value
  return out
