"""ALBERT features for a file of texts: last hidden states and pooled outputs.

    python -m albert_jax.features --model DIR --input texts.txt --output feats.npz \
        [--batch_size 32] [--max_length 512] [--pooled] [--overwrite]

One text per line of `--input` (empty lines included, so row i is line i). Texts are tokenized
as `[CLS] text [SEP]`, cut to `--max_length` tokens, sorted by length and run in batches cut
to the smallest of at most 8 lengths chosen from the texts' own lengths
(`albert_jax.data.batching`; one compilation per length). The `.npz` holds:

  last_hidden_state  float32 [T, H]  every text's token vectors, padding removed, concatenated
  offsets            int64 [N + 1]   text i is rows offsets[i]:offsets[i + 1]
  input_ids          int32 [T]       the token of each row
  pooler_output      float32 [N, H]  tanh(dense(h_[CLS])) per text; only with --pooled

Truncated texts, and a `--max_length` lowered to the model's `max_position_embeddings`, are
reported on stderr (one line each). `load_features(path)` gives the per-text arrays back. The
file is written next to its final name and renamed when complete.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from absl import flags
from tqdm import tqdm

from albert_jax import cli, files
from albert_jax.data import batching
from albert_jax.errors import UserError
from albert_jax.tokenizer import check_token_ids
from albert_jax.weights.pretrained import Pretrained, from_pretrained


def length_batches(lengths: Sequence[int], batch_size: int, max_length: int) -> list:
  """`albert_jax.data.batching.Batch`es of rows of similar length, each at its bucket: rows
  [B] (weight-0 copies fill the last batch), B = `batch_size` or, for fewer texts, the next
  power of two above their number."""
  lengths = np.asarray(lengths, np.int64)
  if len(lengths) == 0:
    return []
  rows = min(batch_size, 1 << (len(lengths) - 1).bit_length())
  buckets = batching.choose_buckets(lengths, max_length=max_length)
  return batching.length_sorted_batches(lengths, rows, buckets)


def pad(rows: Sequence[Sequence[int]], length: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
  """input_ids [batch, length] (pad id 0) and attention_mask for `rows`; extra rows are empty."""
  ids_BL = np.zeros((batch, length), np.int32)
  mask_BL = np.zeros((batch, length), np.int32)
  for b, row in enumerate(rows):
    ids_BL[b, : len(row)] = row
    mask_BL[b, : len(row)] = 1
  return ids_BL, mask_BL


class Features(NamedTuple):
  last_hidden_state: list[np.ndarray]  # per text [L_i, H]
  input_ids: list[np.ndarray]  # per text [L_i]
  pooler_output: np.ndarray | None  # [N, H]


def extract_features(
  model: Pretrained,
  texts: Sequence[str],
  *,
  batch_size: int = 32,
  max_length: int | None = None,
  pooled: bool = False,
  progress: bool = True,
  notify: Callable[[str], None] | None = None,
) -> Features:
  """Runs `model` (head `base`) over `texts`; see the module docstring. `notify` gets one line
  when texts are truncated or `max_length` is lowered to the model's limit (default: a logged
  warning)."""
  notify = notify or logging.getLogger(__name__).warning
  if model.head != "base":
    raise UserError(
      f"extract_features needs the encoder (head 'base'), got head "
      f"{model.head!r}; load with from_pretrained(..., head='base')."
    )
  if pooled and model.params.get("pooler") is None:
    raise UserError("pooled=True needs the pooler; load with add_pooling_layer=True.")
  if pooled and "pooler/kernel" in model.metadata.get("newly_initialized", ()):
    raise UserError(
      "pooled=True, but the checkpoint has no pooler (it was initialized at "
      "random); use a checkpoint with one, or leave pooled out."
    )
  limit = model.config.max_position_embeddings
  if max_length is not None and max_length > limit:
    notify(
      f"features: max_length {max_length} is more than the model's max_position_embeddings "
      f"{limit}; using {limit}."
    )
  max_length = min(max_length or limit, limit)
  encoded = model.tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
  full = [i for i, ids in enumerate(encoded) if len(ids) == max_length]  # perhaps cut
  if full:
    longer = model.tokenizer([texts[i] for i in full], truncation=True, max_length=max_length + 1)
    cut = [i for i, ids in zip(full, longer["input_ids"], strict=True) if len(ids) > max_length]
    if cut:
      notify(
        f"features: {len(cut)} of {len(texts)} texts are longer than max_length {max_length} "
        f"tokens and were truncated to it (the first: text {cut[0] + 1})."
      )
  check_token_ids(encoded, model.config.vocab_size, "features")

  @jax.jit
  def run(params, ids_BL, mask_BL):
    out = model.module.apply({"params": params}, ids_BL, mask_BL)
    return out.last_hidden_state, out.pooler_output

  hidden: list[np.ndarray | None] = [None] * len(texts)
  pooler: list[np.ndarray | None] = [None] * len(texts)
  with tqdm(total=len(texts), unit="text", disable=not progress, desc="features") as bar:
    for batch in length_batches([len(ids) for ids in encoded], batch_size, max_length):
      rows = batch.indices
      ids_BL, mask_BL = pad([encoded[i] for i in rows], batch.length, len(rows))
      h_BLH, pooled_BH = jax.device_get(run(model.params, ids_BL, mask_BL))
      rows = rows[batch.weights > 0]  # the filler rows' outputs are dropped
      for b, i in enumerate(rows):
        hidden[i] = h_BLH[b, : len(encoded[i])]
        pooler[i] = None if pooled_BH is None else pooled_BH[b]
      bar.update(len(rows))
  ids = [np.asarray(row, np.int32) for row in encoded]
  return Features(hidden, ids, np.stack(pooler) if pooled and texts else None)


def save_features(path: str | os.PathLike, features: Features, overwrite: bool = False) -> None:
  """Writes `features` as the `.npz` the module docstring describes, atomically."""
  path = Path(path)
  files.refuse_existing(path, overwrite)
  lengths = [len(ids) for ids in features.input_ids]
  width = features.last_hidden_state[0].shape[-1] if lengths else 0
  arrays = {
    "last_hidden_state": np.concatenate(features.last_hidden_state)
    if lengths
    else np.zeros((0, width), np.float32),
    "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
    "input_ids": np.concatenate(features.input_ids) if lengths else np.zeros(0, np.int32),
  }
  if features.pooler_output is not None:
    arrays["pooler_output"] = features.pooler_output
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.tmp-", dir=path.parent)
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def load_features(path: str | os.PathLike) -> Features:
  """The per-text arrays of a `.npz` written by `save_features`."""
  with np.load(path) as data:
    bounds = list(zip(data["offsets"][:-1], data["offsets"][1:], strict=True))
    hidden = [data["last_hidden_state"][a:b] for a, b in bounds]
    ids = [data["input_ids"][a:b] for a, b in bounds]
    pooled = data["pooler_output"] if "pooler_output" in data else None
  return Features(hidden, ids, pooled)


FLAGS = flags.FlagValues()
flags.DEFINE_string(
  "model", None, "Converted directory (or any from_pretrained source).", flag_values=FLAGS
)
flags.DEFINE_string("input", None, "Text file, one text per line.", flag_values=FLAGS)
flags.DEFINE_string("output", None, ".npz file to write.", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 32, "Texts per batch.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer(
  "max_length",
  None,
  "Truncate texts to this many tokens (default: the model's max_position_embeddings).",
  lower_bound=2,
  flag_values=FLAGS,
)
flags.DEFINE_bool("pooled", False, "Also write the pooled output.", flag_values=FLAGS)
flags.DEFINE_bool("overwrite", False, "Replace an existing output file.", flag_values=FLAGS)

_USAGE = (
  "python -m albert_jax.features --model DIR --input texts.txt --output feats.npz "
  "[--batch_size 32] [--max_length 512] [--pooled] [--overwrite]"
)


def main(argv: Sequence[str]) -> int:
  """`python -m albert_jax.features`; see the module docstring."""
  rest = cli.parse(FLAGS, argv, _USAGE)
  if rest or None in (FLAGS.model, FLAGS.input, FLAGS.output):
    raise UserError(
      f"Pass --model, --input and --output (no positional arguments: {rest}).\nUsage: {_USAGE}"
    )
  files.refuse_existing(FLAGS.output, FLAGS.overwrite)
  texts = Path(FLAGS.input).read_text(encoding="utf-8").splitlines()
  model = from_pretrained(FLAGS.model, head="base", strict=True, add_pooling_layer=FLAGS.pooled)
  features = extract_features(
    model,
    texts,
    batch_size=FLAGS.batch_size,
    max_length=FLAGS.max_length,
    pooled=FLAGS.pooled,
    notify=lambda line: print(line, file=sys.stderr),  # stdout carries the result only
  )
  save_features(FLAGS.output, features, FLAGS.overwrite)
  tokens = sum(len(ids) for ids in features.input_ids)
  print(
    f"Wrote {FLAGS.output}: {len(texts)} texts, {tokens} tokens, hidden size "
    f"{model.config.hidden_size}{', pooled output' if FLAGS.pooled else ''}"
  )
  return 0


if __name__ == "__main__":
  cli.run(main, FLAGS)
