"""ALBERT features for a list of texts: last hidden states and pooled outputs, and the `.npz`
file `python -m albert_jax.features` writes.

    features = extract_features(albert_jax.from_pretrained(DIR), texts)
    save_features("feats.npz", features)

Texts are tokenized as `[CLS] text [SEP]`, cut to `max_seq_length` tokens, sorted by length
and run in batches cut to the smallest of a few lengths chosen from the texts' own lengths
(`albert_jax.data.batching`; one compilation per length). The `.npz` holds:

  last_hidden_state  float32 [T, H]  every text's token vectors, padding removed, concatenated
  offsets            int64 [N + 1]   text i is rows offsets[i]:offsets[i + 1]
  input_ids          int32 [T]       the token of each row
  pooler_output      float32 [N, H]  tanh(dense(h_[CLS])) per text; only with pooled=True

Truncated texts, and a `max_seq_length` lowered to the model's `max_position_embeddings`, are
reported (one line each, to `notify`). `load_features(path)` gives the per-text arrays back.
The file is written next to its final name and renamed when complete.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from tqdm import tqdm

from albert_jax import files
from albert_jax.data import batching
from albert_jax.errors import UserError
from albert_jax.tokenizer import check_token_ids
from albert_jax.weights.pretrained import Pretrained


def length_batches(lengths: Sequence[int], batch_size: int, max_seq_length: int) -> list:
  """`albert_jax.data.batching.Batch`es of rows of similar length, each at its bucket: rows
  [B] (weight-0 copies fill the last batch), B = `batch_size` or, for fewer texts, the next
  power of two above their number."""
  lengths = np.asarray(lengths, np.int64)
  if len(lengths) == 0:
    return []
  rows = min(batch_size, 1 << (len(lengths) - 1).bit_length())
  buckets = batching.choose_buckets(lengths, max_length=max_seq_length)
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
  max_seq_length: int | None = None,
  pooled: bool = False,
  progress: bool = True,
  notify: Callable[[str], None] | None = None,
) -> Features:
  """Runs `model` (head `base`) over `texts`; see the module docstring. `notify` gets one line
  when texts are truncated or `max_seq_length` is lowered to the model's limit (default: a logged
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
  if max_seq_length is not None and max_seq_length > limit:
    notify(
      f"features: max_seq_length {max_seq_length} is more than the model's max_position_embeddings "
      f"{limit}; using {limit}."
    )
  max_seq_length = min(max_seq_length or limit, limit)
  encoded = model.tokenizer(list(texts), truncation=True, max_length=max_seq_length)["input_ids"]
  full = [i for i, ids in enumerate(encoded) if len(ids) == max_seq_length]  # perhaps cut
  if full:
    n = max_seq_length
    longer = model.tokenizer([texts[i] for i in full], truncation=True, max_length=n + 1)
    cut = [i for i, ids in zip(full, longer["input_ids"], strict=True) if len(ids) > n]
    if cut:
      notify(
        f"features: {len(cut)} of {len(texts)} texts are longer than max_seq_length {n} "
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
    for batch in length_batches([len(ids) for ids in encoded], batch_size, max_seq_length):
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
