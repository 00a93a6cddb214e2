"""ALBERT pretraining data: SOP instances, n-gram whole-word masking, sharded files, a reader.

This is Google ALBERT's `create_pretraining_data.py` recipe re-written for this project, with the
original's two known bugs removed (no sentence chunk is ever dropped, and every random draw comes
from the one `random_seed`).

Input text: one sentence per line, a blank line between documents (Google's format). A TFDS
text dataset (e.g. `wikipedia`) can be used instead; its texts are split into sentences by
`split_sentences` (see `tfds_documents`).

Instances, per document and per duplication pass (`dupe_factor` passes, each with fresh draws):

1. Target length: `max_num_tokens = max_seq_length - 3`; with probability `short_seq_prob` the
   target is drawn uniformly from [2, max_num_tokens] instead (once per document and pass).
2. Chunks: sentences are accumulated until the chunk reaches the target or the document ends.
   Every sentence lands in exactly one chunk. A last chunk of fewer than 2 tokens is merged into
   the chunk before it.
3. Segments: a chunk of >= 2 sentences is split at a random sentence boundary into A (first
   part) and B (the rest). A chunk of ONE sentence (a one-sentence document, a sentence as long
   as the target, or a trailing sentence) is split inside the sentence, at a random word
   boundary (a random token boundary when the sentence is a single word). A document of fewer
   than 2 tokens in total cannot form two segments: it is skipped and counted in the manifest's
   `stats.skipped_documents`.
4. Sentence order (SOP): with probability 0.5 A and B are swapped; the label
   (`next_sentence_labels`) is 1 when swapped, 0 when in document order.
5. Truncation: while len(A) + len(B) > max_num_tokens, one token is removed from the longer
   segment (B on a tie), from its front or its back with probability 0.5 each (Google's
   `truncate_seq_pair`). So a sentence longer than `max_num_tokens` is cut to fit; such
   sentences are counted in `stats.long_sentences`.
6. Tokens: `[CLS] A [SEP] B [SEP]`; segment ids 0 for `[CLS] A [SEP]`, 1 for `B [SEP]`.
7. Masking (`mask_tokens`, also usable on the fly for dynamic masking): see its docstring.

All instances of a run are shuffled with the seed and dealt round-robin into the shards.

Randomness: unit `i` (the i-th input file, or the i-th block of `TFDS_DOCS_PER_UNIT` TFDS
documents) draws from `numpy.random.default_rng(SeedSequence(seed, spawn_key=(0, i)))` and the
final shuffle from `spawn_key=(1,)`, so `num_workers` does not change a single output byte.
Memory: all instances of a run are held (compactly) before the shuffle, as in Google's tool; for a
corpus of billions of tokens run this once per slice of the input files.

Output directory: `train-SSSSS-of-NNNNN.tfrecord` (tf.train.Example) or `.array_record`
(ArrayRecord, each record a serialized tf.train.Example) plus `manifest.json` (files, instance
counts, sha256 of each file, every generation parameter, the seed, the vocabulary, statistics).
Written to a temporary sibling directory and renamed into place at the end.

Features of every example (Google's names; L = max_seq_length, P = max_predictions_per_seq):
  input_ids [L] int64, input_mask [L] int64, segment_ids [L] int64,
  masked_lm_positions [P] int64, masked_lm_ids [P] int64, masked_lm_weights [P] float32,
  next_sentence_labels [1] int64 (the SOP label).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

WORD_START = "\u2581"  # "▁": SentencePiece's mark for a piece that begins a word
CLS_PIECE = "[CLS]"
SEP_PIECE = "[SEP]"
PAD_PIECE = "<pad>"
MASK_PIECE = "[MASK]"
NEVER_MASKED_PIECES = frozenset({CLS_PIECE, SEP_PIECE, PAD_PIECE})
# Control tokens written literally in the corpus ("[SEP]") are dropped from its text: the
# tokenizer matches them as special tokens, and inside a segment they would fake its structure.
CONTROL_PIECES = NEVER_MASKED_PIECES | {MASK_PIECE}
# ids 0-4 of the 30k-clean vocabulary are <pad> <unk> [CLS] [SEP] [MASK]; random replacements are
# drawn from the ordinary pieces at and above this id.
FIRST_RANDOM_TOKEN_ID = 5

FEATURE_NAMES = (
  "input_ids",
  "input_mask",
  "segment_ids",
  "masked_lm_positions",
  "masked_lm_ids",
  "masked_lm_weights",
  "next_sentence_labels",
)
FORMATS = ("tfrecord", "arrayrecord")
FILE_SUFFIX = {"tfrecord": "tfrecord", "arrayrecord": "array_record"}
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
TFDS_DOCS_PER_UNIT = 1000  # TFDS documents per work unit (the unit of seeding and parallelism)
DEFAULT_INSTANCES_PER_SHARD = 50_000  # used when num_shards is not given

_UNIT_STREAM = 0  # SeedSequence spawn keys: (0, unit_index) per unit, (1,) for the final shuffle
_SHUFFLE_STREAM = 1

log = logging.getLogger(__name__)


class PretrainingDataError(ValueError):
  """Bad input or output for pretraining-data generation; the message names the culprit."""


class Tokenizer(Protocol):
  """What generation needs from `albert_jax.tokenizer.AlbertTokenizer`."""

  vocab_size: int

  def tokenize(self, text: str) -> list[str]: ...

  def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]: ...


@dataclasses.dataclass(frozen=True)
class PretrainingDataConfig:
  """Generation parameters; defaults are Google's `create_pretraining_data.py` flags."""

  max_seq_length: int = 512  # L: tokens per example, [CLS] A [SEP] B [SEP] plus padding
  max_predictions_per_seq: int = 20  # P: masked positions per example, padded
  masked_lm_prob: float = 0.15  # fraction of tokens to mask
  dupe_factor: int = 40  # passes over the corpus, each with fresh segmentation and masks
  short_seq_prob: float = 0.1  # probability of a random target length in [2, L - 3]
  ngram: int = 3  # longest masked n-gram, in whole words; p(n) proportional to 1/n
  random_seed: int = 12345  # the only source of randomness

  def __post_init__(self) -> None:
    if self.max_seq_length < 5:
      raise PretrainingDataError(
        f"max_seq_length={self.max_seq_length} is too short: [CLS] A [SEP] B [SEP] needs >= 5"
      )
    if self.max_predictions_per_seq < 1:
      raise PretrainingDataError(
        f"max_predictions_per_seq={self.max_predictions_per_seq} must be >= 1"
      )
    if not 0.0 <= self.masked_lm_prob <= 1.0:
      raise PretrainingDataError(f"masked_lm_prob={self.masked_lm_prob} must be in [0, 1]")
    if not 0.0 <= self.short_seq_prob <= 1.0:
      raise PretrainingDataError(f"short_seq_prob={self.short_seq_prob} must be in [0, 1]")
    if self.dupe_factor < 1:
      raise PretrainingDataError(f"dupe_factor={self.dupe_factor} must be >= 1")
    if self.ngram < 1:
      raise PretrainingDataError(f"ngram={self.ngram} must be >= 1")

  @property
  def max_num_tokens(self) -> int:
    """Tokens left for A and B after [CLS], [SEP], [SEP]."""
    return self.max_seq_length - 3


# --------------------------------------------------------------------------------------------
# Masking


class MaskedSpan(NamedTuple):
  """One masked n-gram: pieces [start, end) covering `num_words` whole words."""

  start: int
  end: int
  num_words: int


class MaskedTokens(NamedTuple):
  """Result of `mask_tokens` (T = len(ids), P = max_predictions_per_seq)."""

  input_ids: np.ndarray  # [T] int32: ids with the chosen positions replaced
  masked_lm_positions: np.ndarray  # [P] int32: sorted positions, then 0-padding
  masked_lm_ids: np.ndarray  # [P] int32: original ids at those positions, then 0
  masked_lm_weights: np.ndarray  # [P] float32: 1.0 for real predictions, then 0.0


def ngram_probabilities(ngram: int) -> np.ndarray:
  """p(n) for n = 1..ngram, proportional to 1/n (ngram=3: 6/11, 3/11, 2/11). Shape [ngram]."""
  inverse_N = 1.0 / np.arange(1, ngram + 1)
  return inverse_N / inverse_N.sum()


def num_to_predict(num_tokens: int, masked_lm_prob: float, max_predictions_per_seq: int) -> int:
  """min(P, max(1, round(num_tokens * masked_lm_prob))); 0 when masked_lm_prob is 0.

  `num_tokens` counts the whole sequence including [CLS] and [SEP], as Google does.
  """
  if masked_lm_prob <= 0.0:
    return 0
  return min(max_predictions_per_seq, max(1, round(num_tokens * masked_lm_prob)))


def word_spans(pieces: Sequence[str]) -> np.ndarray:
  """Whole words of a piece sequence, as [start, end) piece ranges. Shape [W, 2] int64.

  A word is a piece starting with "▁" plus the following pieces that do not (its
  continuations). [CLS], [SEP] and <pad> belong to no word and end the word before them; a
  continuation piece right after one of them (left by front truncation) starts a word.
  """
  spans: list[list[int]] = []
  after_special = True
  for i, piece in enumerate(pieces):
    if piece in NEVER_MASKED_PIECES:
      after_special = True
      continue
    if after_special or piece.startswith(WORD_START):
      spans.append([i, i + 1])
    else:
      spans[-1][1] = i + 1
    after_special = False
  return np.asarray(spans, dtype=np.int64).reshape(-1, 2)


def sample_masked_spans(
  words_W2: np.ndarray,
  num_to_predict: int,
  rng: np.random.Generator,
  *,
  ngram: int = 3,
) -> list[MaskedSpan]:
  """Chooses non-overlapping whole-word n-grams covering at most `num_to_predict` pieces.

  Each step draws n from p(n) ∝ 1/n, restricted to the lengths that still have a place (n
  consecutive uncovered words inside one segment that fit in the remaining budget), then a
  start uniformly among those places. Stops when the budget is met or nothing fits. An n-gram
  never crosses [CLS]/[SEP].

  So p(n) holds exactly while the remaining budget admits every n-gram; the last n-gram(s) of a
  sequence must fit what is left (Google's fallback to shorter n-grams), which keeps the number
  of predictions exact but tilts the overall shares toward short n-grams: measured in the tests
  at max_seq_length 128 (about 9 n-grams per sequence), 59/25/15% instead of 55/27/18%.

  Args:
    words_W2: [W, 2] [start, end) piece ranges of the words, in order (see `word_spans`).
    num_to_predict: budget, in pieces.
    rng: the generator all draws come from.
    ngram: longest n-gram, in words.

  Returns:
    The spans, in the order chosen.
  """
  num_words = len(words_W2)
  if num_words == 0 or num_to_predict <= 0:
    return []
  starts_W, ends_W = words_W2[:, 0], words_W2[:, 1]
  contiguous = ends_W[:-1] == starts_W[1:]  # [W-1]: word i+1 directly follows word i
  impossible = np.iinfo(np.int64).max
  # pieces_NW[n-1, i]: pieces covered by words i..i+n-1, or `impossible` if that is no n-gram.
  pieces_NW = np.full((ngram, num_words), impossible, dtype=np.int64)
  chain_W = np.ones(num_words, dtype=bool)
  for n in range(1, ngram + 1):
    count = num_words - n + 1
    if count <= 0:
      break
    if n > 1:
      chain_W = chain_W[:count] & contiguous[n - 2 : n - 2 + count]
    pieces_NW[n - 1, :count] = np.where(
      chain_W[:count], ends_W[n - 1 :] - starts_W[:count], impossible
    )
  pvals_N = ngram_probabilities(ngram)
  covered_W = np.zeros(num_words, dtype=bool)
  spans: list[MaskedSpan] = []
  num_masked = 0
  while num_masked < num_to_predict:
    covered_before = np.concatenate([[0], np.cumsum(covered_W)])  # [W+1]
    ok_NW = pieces_NW <= num_to_predict - num_masked
    for n in range(1, ngram + 1):
      count = num_words - n + 1
      if count > 0:
        ok_NW[n - 1, :count] &= covered_before[n:] == covered_before[:count]
    has_N = ok_NW.any(axis=1)
    if not has_N.any():
      break
    p_N = pvals_N * has_N
    n = int(rng.choice(ngram, p=p_N / p_N.sum())) + 1
    places = np.flatnonzero(ok_NW[n - 1])
    first = int(places[rng.integers(len(places))])
    covered_W[first : first + n] = True
    num_masked += int(pieces_NW[n - 1, first])
    spans.append(MaskedSpan(int(starts_W[first]), int(ends_W[first + n - 1]), n))
  return spans


def mask_tokens(
  pieces: Sequence[str],
  ids: Sequence[int] | np.ndarray,
  rng: np.random.Generator,
  *,
  vocab_size: int,
  masked_lm_prob: float = 0.15,
  max_predictions_per_seq: int = 20,
  ngram: int = 3,
  mask_token_id: int = 4,
  first_random_token_id: int = FIRST_RANDOM_TOKEN_ID,
) -> MaskedTokens:
  """ALBERT's masked-LM corruption of one sequence; pure, so usable per epoch on the fly.

  `num_to_predict(len(ids), ...)` pieces are chosen as whole-word n-grams (`word_spans`,
  `sample_masked_spans`): a word is never split and [CLS]/[SEP]/<pad> are never chosen. Each
  chosen position independently becomes [MASK] (80%), a random id uniform in
  [first_random_token_id, vocab_size) (10%), or stays as it is (10%).

  Args:
    pieces: [T] SentencePiece pieces (they decide word boundaries and special tokens).
    ids: [T] their ids.
    rng: the generator all draws come from.
    vocab_size: size of the vocabulary random replacements come from.
    masked_lm_prob, max_predictions_per_seq, ngram: as in `PretrainingDataConfig`.
    mask_token_id: id of [MASK].
    first_random_token_id: lowest id a random replacement may take (skips special ids).

  Returns:
    `MaskedTokens`; positions are sorted and padded with position 0, id 0, weight 0.
  """
  ids_T = np.asarray(ids, dtype=np.int32)
  if len(pieces) != len(ids_T):
    raise PretrainingDataError(f"pieces ({len(pieces)}) and ids ({len(ids_T)}) differ in length")
  budget = num_to_predict(len(ids_T), masked_lm_prob, max_predictions_per_seq)
  spans = sample_masked_spans(word_spans(pieces), budget, rng, ngram=ngram)
  positions_K = np.sort(
    np.concatenate([np.arange(s.start, s.end) for s in spans] + [np.zeros(0, np.int64)])
  ).astype(np.int32)
  num_masked = len(positions_K)
  choice_K = rng.random(num_masked)
  random_ids_K = rng.integers(first_random_token_id, vocab_size, size=num_masked)
  input_ids_T = ids_T.copy()
  replaced_K = np.where(choice_K < 0.8, mask_token_id, ids_T[positions_K])
  replaced_K = np.where(choice_K >= 0.9, random_ids_K, replaced_K)
  input_ids_T[positions_K] = replaced_K
  masked_positions_P = np.zeros(max_predictions_per_seq, dtype=np.int32)
  masked_ids_P = np.zeros(max_predictions_per_seq, dtype=np.int32)
  masked_weights_P = np.zeros(max_predictions_per_seq, dtype=np.float32)
  masked_positions_P[:num_masked] = positions_K
  masked_ids_P[:num_masked] = ids_T[positions_K]
  masked_weights_P[:num_masked] = 1.0
  return MaskedTokens(input_ids_T, masked_positions_P, masked_ids_P, masked_weights_P)


# --------------------------------------------------------------------------------------------
# Instances


class PretrainingInstance(NamedTuple):
  """One example before padding (T <= max_seq_length, P = max_predictions_per_seq)."""

  input_ids: np.ndarray  # [T] int32, masked: [CLS] A [SEP] B [SEP]
  num_first_segment: int  # len([CLS] A [SEP]); segment id 1 from here on
  masked_lm_positions: np.ndarray  # [P] int32
  masked_lm_ids: np.ndarray  # [P] int32
  masked_lm_weights: np.ndarray  # [P] float32
  sentence_order_label: int  # 1 when A and B were swapped


@dataclasses.dataclass
class GenerationStats:
  """Counts reported in the manifest (documents and sentences once; the rest over all passes)."""

  documents: int = 0
  sentences: int = 0
  tokens: int = 0
  long_sentences: int = 0  # sentences longer than max_seq_length - 3: truncated to fit
  skipped_documents: int = 0  # documents of fewer than 2 tokens: no instance
  instances: int = 0
  swapped_instances: int = 0  # SOP label 1
  split_sentence_instances: int = 0  # one-sentence chunks split inside the sentence

  def add(self, other: GenerationStats) -> None:
    for field in dataclasses.fields(self):
      setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


class TokenizedDocument(NamedTuple):
  """A document's sentences laid end to end (N = its number of tokens, S of sentences)."""

  pieces: list[str]  # [N]
  ids: np.ndarray  # [N] int32
  sentence_starts: np.ndarray  # [S + 1] int64: sentence s is pieces[starts[s]:starts[s + 1]]


def tokenize_document(sentences: Iterable[str], tokenizer: Tokenizer) -> TokenizedDocument:
  """Tokenizes sentences, dropping `CONTROL_PIECES`; sentences left with no piece are dropped."""
  pieces: list[str] = []
  starts = [0]
  for sentence in sentences:
    sentence_pieces = [p for p in tokenizer.tokenize(sentence) if p not in CONTROL_PIECES]
    if sentence_pieces:
      pieces.extend(sentence_pieces)
      starts.append(len(pieces))
  ids = np.asarray(tokenizer.convert_tokens_to_ids(pieces), dtype=np.int32).reshape(-1)
  return TokenizedDocument(pieces, ids, np.asarray(starts, dtype=np.int64))


def _chunk_document(sentence_starts: np.ndarray, target_length: int) -> list[tuple[int, int]]:
  """Groups sentences into chunks of about `target_length` tokens, as (first, end) indices."""
  num_sentences = len(sentence_starts) - 1
  chunks: list[tuple[int, int]] = []
  first = 0
  for s in range(num_sentences):
    length = sentence_starts[s + 1] - sentence_starts[first]
    if s == num_sentences - 1 or length >= target_length:
      chunks.append((first, s + 1))
      first = s + 1
  if len(chunks) >= 2:
    last_first, last_end = chunks[-1]
    if sentence_starts[last_end] - sentence_starts[last_first] < 2:
      chunks[-2:] = [(chunks[-2][0], last_end)]
  return chunks


def _split_point(doc: TokenizedDocument, first: int, end: int, rng: np.random.Generator) -> int:
  """Token index where A ends inside the chunk of sentences [first, end)."""
  starts = doc.sentence_starts
  if end - first >= 2:
    return int(starts[first + int(rng.integers(1, end - first))])
  begin, stop = int(starts[first]), int(starts[end])
  boundaries = [k for k in range(begin + 1, stop) if doc.pieces[k].startswith(WORD_START)]
  if not boundaries:
    boundaries = list(range(begin + 1, stop))
  return boundaries[int(rng.integers(len(boundaries)))]


def truncate_seq_pair(
  a: tuple[int, int], b: tuple[int, int], max_num_tokens: int, rng: np.random.Generator
) -> tuple[tuple[int, int], tuple[int, int]]:
  """Google's truncate_seq_pair on [start, end) ranges: trims the longer one (b on a tie)
  one token at a time, from the front or the back with probability 0.5 each."""
  (a0, a1), (b0, b1) = a, b
  while (a1 - a0) + (b1 - b0) > max_num_tokens:
    front = rng.random() < 0.5
    if a1 - a0 > b1 - b0:
      a0, a1 = (a0 + 1, a1) if front else (a0, a1 - 1)
    else:
      b0, b1 = (b0 + 1, b1) if front else (b0, b1 - 1)
  return (a0, a1), (b0, b1)


def create_instances_from_document(
  doc: TokenizedDocument,
  config: PretrainingDataConfig,
  rng: np.random.Generator,
  *,
  vocab_size: int,
  cls_token_id: int = 2,
  sep_token_id: int = 3,
  mask_token_id: int = 4,
  stats: GenerationStats | None = None,
) -> list[PretrainingInstance]:
  """One pass over one document: chunk, split into A/B, maybe swap, truncate, mask.

  See the module docstring for the rules, including one-sentence chunks and short documents.
  """
  stats = stats if stats is not None else GenerationStats()
  max_num_tokens = config.max_num_tokens
  target_length = max_num_tokens
  if rng.random() < config.short_seq_prob:
    target_length = int(rng.integers(2, max_num_tokens + 1))
  if len(doc.ids) < 2:
    stats.skipped_documents += 1
    return []
  instances = []
  for first, end in _chunk_document(doc.sentence_starts, target_length):
    begin, stop = int(doc.sentence_starts[first]), int(doc.sentence_starts[end])
    middle = _split_point(doc, first, end, rng)
    stats.split_sentence_instances += int(end - first == 1)
    a, b = (begin, middle), (middle, stop)
    swapped = rng.random() < 0.5
    if swapped:
      a, b = b, a
    (a0, a1), (b0, b1) = truncate_seq_pair(a, b, max_num_tokens, rng)
    pieces = [CLS_PIECE, *doc.pieces[a0:a1], SEP_PIECE, *doc.pieces[b0:b1], SEP_PIECE]
    ids_T = np.concatenate(
      [[cls_token_id], doc.ids[a0:a1], [sep_token_id], doc.ids[b0:b1], [sep_token_id]]
    ).astype(np.int32)
    masked = mask_tokens(
      pieces,
      ids_T,
      rng,
      vocab_size=vocab_size,
      masked_lm_prob=config.masked_lm_prob,
      max_predictions_per_seq=config.max_predictions_per_seq,
      ngram=config.ngram,
      mask_token_id=mask_token_id,
    )
    instances.append(
      PretrainingInstance(
        masked.input_ids,
        a1 - a0 + 2,
        masked.masked_lm_positions,
        masked.masked_lm_ids,
        masked.masked_lm_weights,
        int(swapped),
      )
    )
    stats.instances += 1
    stats.swapped_instances += int(swapped)
  return instances


def instance_to_features(
  instance: PretrainingInstance, max_seq_length: int
) -> dict[str, np.ndarray]:
  """Pads one instance to the written features (see the module docstring for shapes)."""
  length = len(instance.input_ids)
  if length > max_seq_length:
    raise PretrainingDataError(f"instance of {length} tokens > max_seq_length={max_seq_length}")
  input_ids_L = np.zeros(max_seq_length, dtype=np.int64)
  input_ids_L[:length] = instance.input_ids
  input_mask_L = (np.arange(max_seq_length) < length).astype(np.int64)
  segment_ids_L = input_mask_L * (np.arange(max_seq_length) >= instance.num_first_segment)
  return {
    "input_ids": input_ids_L,
    "input_mask": input_mask_L,
    "segment_ids": segment_ids_L.astype(np.int64),
    "masked_lm_positions": instance.masked_lm_positions.astype(np.int64),
    "masked_lm_ids": instance.masked_lm_ids.astype(np.int64),
    "masked_lm_weights": instance.masked_lm_weights.astype(np.float32),
    "next_sentence_labels": np.asarray([instance.sentence_order_label], dtype=np.int64),
  }


# --------------------------------------------------------------------------------------------
# Inputs


def resolve_input_files(patterns: str | Sequence[str]) -> list[str]:
  """Expands comma-separated paths/globs into existing, non-empty files (order kept, sorted
  within a glob, duplicates dropped). Raises `PretrainingDataError` naming the bad entry."""
  if isinstance(patterns, str):
    patterns = [patterns]
  items = [p.strip() for pattern in patterns for p in pattern.split(",") if p.strip()]
  if not items:
    raise PretrainingDataError(f"no input given (got {list(patterns)!r})")
  files: list[str] = []
  for item in items:
    if glob.has_magic(item):
      matches = sorted(p for p in glob.glob(item) if os.path.isfile(p))
      if not matches:
        raise PretrainingDataError(f"input glob {item!r} matches no file")
    else:
      if not os.path.exists(item):
        raise PretrainingDataError(f"input file {item!r} does not exist")
      if os.path.isdir(item):
        raise PretrainingDataError(f"input {item!r} is a directory; give files or a glob")
      matches = [item]
    for path in matches:
      if os.path.getsize(path) == 0:
        raise PretrainingDataError(f"input file {path!r} is empty")
      if path not in files:
        files.append(path)
  return files


def read_documents(path: str) -> list[list[str]]:
  """Reads one text file: one sentence per line, blank lines between documents."""
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except UnicodeDecodeError as e:
    raise PretrainingDataError(f"input file {path!r} is not UTF-8 text: {e}") from e
  except OSError as e:
    raise PretrainingDataError(f"cannot read input file {path!r}: {e}") from e
  documents: list[list[str]] = [[]]
  for line in text.splitlines():
    line = line.strip()
    if line:
      documents[-1].append(line)
    elif documents[-1]:
      documents.append([])
  documents = [d for d in documents if d]
  if not documents:
    raise PretrainingDataError(f"input file {path!r} has no text (only whitespace)")
  return documents


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s+[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
  """Heuristic sentence split for running text (TFDS): lines, then after . ! ? (and closing
  quotes or brackets) followed by whitespace and a capital letter or digit. Abbreviations such
  as "Mr. Smith" are split too: good enough for SOP chunking, not for linguistics."""
  sentences = []
  for line in text.splitlines():
    start = 0
    for match in _SENTENCE_END.finditer(line):
      sentences.append(line[start : match.end()].strip())
      start = match.end()
    sentences.append(line[start:].strip())
  return [s for s in sentences if s]


@dataclasses.dataclass(frozen=True)
class TfdsSource:
  """A TFDS text dataset: `name` (e.g. "wikipedia/20230601.en"), `split`, `text_key`.

  The dataset must already be prepared under `data_dir` (default: TFDS's, ~/tensorflow_datasets
  or $TFDS_DATA_DIR); nothing is downloaded. Each example is one document, split into sentences
  by `split_sentences`.
  """

  name: str
  split: str = "train"
  text_key: str = "text"
  data_dir: str | None = None


def tfds_documents(source: TfdsSource) -> Iterator[list[str]]:
  """The documents (lists of sentences) of a prepared TFDS text dataset.

  Checks eagerly (unknown name, dataset not prepared, unknown split), then iterates lazily.
  """
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise PretrainingDataError(
      f"--tfds_name={source.name!r} needs tensorflow_datasets: pip install tensorflow-datasets"
    ) from e
  try:
    builder = tfds.builder(source.name, data_dir=source.data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise PretrainingDataError(f"unknown TFDS dataset {source.name!r}") from e
  if not builder.is_prepared():
    raise PretrainingDataError(
      f"TFDS dataset {source.name!r} is not prepared in {builder.data_dir!r} and this tool does "
      "not download. On a machine with network access run "
      f"`tfds build {source.name} --data_dir=DIR`, then pass --tfds_data_dir=DIR."
    )
  if source.split not in builder.info.splits:
    raise PretrainingDataError(
      f"TFDS dataset {source.name!r} has no split {source.split!r}; "
      f"it has {sorted(builder.info.splits)}"
    )
  dataset = builder.as_dataset(split=source.split, shuffle_files=False)
  return _tfds_sentences(tfds.as_numpy(dataset), source)


def _tfds_sentences(examples: Iterable[dict[str, Any]], source: TfdsSource) -> Iterator[list[str]]:
  for example in examples:
    if source.text_key not in example:
      raise PretrainingDataError(
        f"TFDS dataset {source.name!r} has no feature {source.text_key!r}; it has {sorted(example)}"
      )
    text = example[source.text_key]
    sentences = split_sentences(text.decode("utf-8") if isinstance(text, bytes) else str(text))
    if sentences:
      yield sentences


# --------------------------------------------------------------------------------------------
# Generation (one unit = one input file or one block of TFDS documents)


class _Unit(NamedTuple):
  index: int
  path: str | None  # a local file, read by the worker
  documents: list[list[str]] | None  # or the documents themselves (TFDS)


class _UnitResult(NamedTuple):
  instances: list[PretrainingInstance]
  stats: GenerationStats


_worker_state: dict[str, Any] = {}  # per worker process: its tokenizer and the config


def _init_worker(tokenizer_factory: Callable[[], Tokenizer], config: PretrainingDataConfig) -> None:
  _worker_state["tokenizer"] = tokenizer_factory()
  _worker_state["config"] = config


def _unit_rng(seed: int, unit_index: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_UNIT_STREAM, unit_index)))


def generate_unit(
  documents: Sequence[Sequence[str]],
  unit_index: int,
  tokenizer: Tokenizer,
  config: PretrainingDataConfig,
) -> tuple[list[PretrainingInstance], GenerationStats]:
  """All instances of one unit: `dupe_factor` passes over its documents, seeded by
  (random_seed, unit_index) alone, so the result does not depend on any other unit."""
  rng = _unit_rng(config.random_seed, unit_index)
  stats = GenerationStats()
  docs = []
  for document in documents:
    doc = tokenize_document(document, tokenizer)
    stats.documents += 1
    stats.sentences += len(doc.sentence_starts) - 1
    stats.tokens += len(doc.ids)
    stats.long_sentences += int(np.sum(np.diff(doc.sentence_starts) > config.max_num_tokens))
    if len(doc.ids) < 2:  # cannot make two segments; counted once, not once per pass
      stats.skipped_documents += 1
    else:
      docs.append(doc)
  special = {
    name: getattr(tokenizer, name, default)
    for name, default in (("cls_token_id", 2), ("sep_token_id", 3), ("mask_token_id", 4))
  }
  instances: list[PretrainingInstance] = []
  for _ in range(config.dupe_factor):
    for doc in docs:
      instances.extend(
        create_instances_from_document(
          doc, config, rng, vocab_size=tokenizer.vocab_size, stats=stats, **special
        )
      )
  return instances, stats


def _run_unit(
  unit: _Unit, tokenizer: Tokenizer | None = None, config: PretrainingDataConfig | None = None
) -> _UnitResult:
  """Generates one unit, with the given tokenizer and config or (in a worker) its own."""
  documents = unit.documents if unit.documents is not None else read_documents(unit.path or "")
  instances, stats = generate_unit(
    documents,
    unit.index,
    tokenizer or _worker_state["tokenizer"],
    config or _worker_state["config"],
  )
  return _UnitResult(instances, stats)


def _tfds_units(documents: Iterator[list[str]]) -> Iterator[_Unit]:
  block: list[list[str]] = []
  index = 0
  for document in documents:
    block.append(document)
    if len(block) == TFDS_DOCS_PER_UNIT:
      yield _Unit(index, None, block)
      block, index = [], index + 1
  if block:
    yield _Unit(index, None, block)


def default_tokenizer() -> Tokenizer:
  """`albert_jax.tokenizer.AlbertTokenizer()`: the bundled 30k-clean vocabulary."""
  from albert_jax.tokenizer import AlbertTokenizer

  return AlbertTokenizer()


def _vocab_description(tokenizer: Tokenizer) -> dict[str, Any]:
  vocab: dict[str, Any] = {
    "tokenizer": f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}",
    "vocab_size": int(tokenizer.vocab_size),
  }
  for attribute in ("vocab_file", "model_file", "spm_model_file"):
    path = getattr(tokenizer, attribute, None)
    if isinstance(path, str | os.PathLike) and os.path.isfile(path):
      with open(path, "rb") as f:
        vocab["file"] = os.path.basename(os.fspath(path))
        vocab["sha256"] = hashlib.sha256(f.read()).hexdigest()
      break
  return vocab


# --------------------------------------------------------------------------------------------
# Writing


def _serialize_example(features: dict[str, np.ndarray]) -> bytes:
  import tensorflow as tf

  feature = {}
  for name in FEATURE_NAMES:
    values = features[name]
    if values.dtype == np.float32:
      feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values.tolist()))
    else:
      feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values.tolist()))
  example = tf.train.Example(features=tf.train.Features(feature=feature))
  return example.SerializeToString(deterministic=True)


class _ShardWriter(Protocol):
  def write(self, record: bytes) -> None: ...

  def close(self) -> None: ...


def _open_writer(path: str, data_format: str) -> _ShardWriter:
  if data_format == "tfrecord":
    import tensorflow as tf

    return tf.io.TFRecordWriter(path)
  from array_record.python.array_record_module import ArrayRecordWriter

  return ArrayRecordWriter(path, "group_size:1")


def _check_format(data_format: str) -> None:
  if data_format not in FORMATS:
    raise PretrainingDataError(f"format {data_format!r} is not one of {FORMATS}")
  if data_format == "arrayrecord":
    try:
      import array_record.python.array_record_module  # noqa: F401
    except ImportError as e:
      raise PretrainingDataError(
        "format 'arrayrecord' needs the array_record package (pip install array-record); "
        "or use --format=tfrecord"
      ) from e


def shard_name(index: int, num_shards: int, data_format: str) -> str:
  """`train-00000-of-00004.tfrecord` style name of shard `index`."""
  return f"train-{index:05d}-of-{num_shards:05d}.{FILE_SUFFIX[data_format]}"


def _check_output(output_dir: str, overwrite: bool) -> None:
  if os.path.exists(output_dir):
    if not os.path.isdir(output_dir):
      raise PretrainingDataError(f"output {output_dir!r} exists and is not a directory")
    if os.listdir(output_dir) and not overwrite:
      raise PretrainingDataError(
        f"output directory {output_dir!r} is not empty; pass --overwrite to replace it"
      )


def _commit(tmp_dir: str, output_dir: str) -> None:
  """Moves the finished temporary directory into place (replacing any old output)."""
  old = None
  if os.path.exists(output_dir):
    old = tempfile.mkdtemp(dir=os.path.dirname(output_dir), prefix=".old-")
    os.rename(output_dir, os.path.join(old, "output"))
  os.rename(tmp_dir, output_dir)
  if old is not None:
    shutil.rmtree(old)


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def create_pretraining_data(
  inputs: str | Sequence[str] | None,
  output_dir: str,
  config: PretrainingDataConfig = PretrainingDataConfig(),
  *,
  tfds_source: TfdsSource | None = None,
  tokenizer_factory: Callable[[], Tokenizer] = default_tokenizer,
  num_workers: int = 1,
  num_shards: int | None = None,
  data_format: str = "tfrecord",
  overwrite: bool = False,
  show_progress: bool = True,
) -> dict[str, Any]:
  """Generates a pretraining dataset into `output_dir` and returns its manifest.

  Args:
    inputs: text files, comma-separated or as a list; globs allowed (see `resolve_input_files`).
      None when `tfds_source` is given.
    output_dir: gets the shards and `manifest.json`; must be absent or empty unless `overwrite`.
    config: generation parameters (`random_seed` included).
    tfds_source: a prepared TFDS text dataset instead of `inputs`.
    tokenizer_factory: zero-argument, picklable callable making the tokenizer (run once per
      worker).
    num_workers: processes; > 1 uses a spawn pool over units. Output bytes do not depend on it.
    num_shards: output files; default ceil(instances / 50,000).
    data_format: "tfrecord" or "arrayrecord".
    overwrite: replace a non-empty `output_dir`.
    show_progress: tqdm progress bars.
  """
  from tqdm.auto import tqdm

  if (inputs is None) == (tfds_source is None):
    raise PretrainingDataError("give exactly one of input files or a TFDS dataset")
  _check_format(data_format)
  if num_shards is not None and num_shards < 1:
    raise PretrainingDataError(f"num_shards={num_shards} must be >= 1")
  output_dir = os.path.abspath(output_dir)
  _check_output(output_dir, overwrite)
  if inputs is not None:
    files = resolve_input_files(inputs)
    units: Iterable[_Unit] = [_Unit(i, path, None) for i, path in enumerate(files)]
    total_units: int | None = len(files)
    source_description: dict[str, Any] = {"files": files}
  else:
    assert tfds_source is not None
    units = _tfds_units(tfds_documents(tfds_source))
    total_units = None
    source_description = {"tfds": dataclasses.asdict(tfds_source)}

  tokenizer = tokenizer_factory()
  all_instances: list[PretrainingInstance] = []
  stats = GenerationStats()
  progress = tqdm(total=total_units, unit="file", desc="instances", disable=not show_progress)
  if num_workers > 1:
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(num_workers, initializer=_init_worker, initargs=(tokenizer_factory, config))
    results: Iterable[_UnitResult] = pool.imap(_run_unit, units)
  else:
    pool = None
    results = (_run_unit(unit, tokenizer, config) for unit in units)
  try:
    for result in results:
      all_instances.extend(result.instances)
      stats.add(result.stats)
      progress.update(1)
      progress.set_postfix(instances=len(all_instances))
  finally:
    progress.close()
    if pool is not None:
      pool.terminate()
      pool.join()
  if not all_instances:
    raise PretrainingDataError(
      f"no instance could be made from {source_description}: every document has < 2 tokens"
    )

  shuffle_rng = np.random.default_rng(
    np.random.SeedSequence(config.random_seed, spawn_key=(_SHUFFLE_STREAM,))
  )
  order = shuffle_rng.permutation(len(all_instances))
  if num_shards is None:
    num_shards = max(1, math.ceil(len(all_instances) / DEFAULT_INSTANCES_PER_SHARD))
  parent = os.path.dirname(output_dir)
  os.makedirs(parent, exist_ok=True)
  tmp_dir = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(output_dir)}.tmp-")
  try:
    names = [shard_name(i, num_shards, data_format) for i in range(num_shards)]
    writers = [_open_writer(os.path.join(tmp_dir, name), data_format) for name in names]
    counts = [0] * num_shards
    for j, index in enumerate(
      tqdm(order, desc="writing", unit="example", disable=not show_progress)
    ):
      features = instance_to_features(all_instances[index], config.max_seq_length)
      writers[j % num_shards].write(_serialize_example(features))
      counts[j % num_shards] += 1
    for writer in writers:
      writer.close()
    manifest = {
      "version": MANIFEST_VERSION,
      "created_by": "albert_jax.create_pretraining_data",
      "format": data_format,
      "num_instances": len(all_instances),
      "files": [
        {"path": name, "num_instances": count, "sha256": _sha256(os.path.join(tmp_dir, name))}
        for name, count in zip(names, counts, strict=True)
      ],
      "features": feature_spec(config),
      "config": dataclasses.asdict(config),
      "seed": config.random_seed,
      "num_shards": num_shards,
      "vocab": _vocab_description(tokenizer),
      "source": source_description,
      "stats": dataclasses.asdict(stats),
    }
    with open(os.path.join(tmp_dir, MANIFEST_NAME), "w", encoding="utf-8") as f:
      json.dump(manifest, f, indent=2, sort_keys=True)
      f.write("\n")
    _check_output(output_dir, overwrite)
    _commit(tmp_dir, output_dir)
  except BaseException:
    shutil.rmtree(tmp_dir, ignore_errors=True)
    raise
  if stats.skipped_documents:
    log.warning("skipped %d documents of fewer than 2 tokens", stats.skipped_documents)
  return manifest


# --------------------------------------------------------------------------------------------
# Reading


def feature_spec(config: PretrainingDataConfig) -> dict[str, dict[str, Any]]:
  """Name -> {"shape": [...], "dtype": ...} of the written features."""
  length, predictions = config.max_seq_length, config.max_predictions_per_seq
  shapes = {
    "input_ids": length,
    "input_mask": length,
    "segment_ids": length,
    "masked_lm_positions": predictions,
    "masked_lm_ids": predictions,
    "masked_lm_weights": predictions,
    "next_sentence_labels": 1,
  }
  return {
    name: {"shape": [shapes[name]], "dtype": "float32" if name == "masked_lm_weights" else "int64"}
    for name in FEATURE_NAMES
  }


def load_manifest(directory: str) -> dict[str, Any]:
  """Reads `manifest.json` of a generated dataset."""
  path = os.path.join(directory, MANIFEST_NAME)
  if not os.path.isfile(path):
    raise PretrainingDataError(
      f"{directory!r} has no {MANIFEST_NAME}; is it an output of create_pretraining_data?"
    )
  with open(path, encoding="utf-8") as f:
    manifest = json.load(f)
  if manifest.get("version") != MANIFEST_VERSION:
    raise PretrainingDataError(
      f"{path!r} has manifest version {manifest.get('version')!r}, expected {MANIFEST_VERSION}"
    )
  return manifest


def _parse_example(record: bytes, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
  import tensorflow as tf

  example = tf.train.Example.FromString(record)
  out = {}
  for name, spec in manifest["features"].items():
    feature = example.features.feature[name]
    if spec["dtype"] == "float32":
      out[name] = np.asarray(feature.float_list.value, dtype=np.float32)
    else:
      out[name] = np.asarray(feature.int64_list.value, dtype=np.int32)
  return out


def original_input_ids(example: dict[str, np.ndarray]) -> np.ndarray:
  """The unmasked ids [L] of a written example (masked_lm_ids put back at their positions), to
  re-mask it on the fly with `mask_tokens`."""
  ids_L = np.array(example["input_ids"], copy=True)
  real_P = np.asarray(example["masked_lm_weights"]) > 0
  ids_L[np.asarray(example["masked_lm_positions"])[real_P]] = np.asarray(example["masked_lm_ids"])[
    real_P
  ]
  return ids_L


def pretraining_tf_dataset(directory: str, *, shuffle_files: bool = False, seed: int = 0) -> Any:
  """A `tf.data.Dataset` of feature dicts (int32 / float32) over a TFRecord output."""
  import tensorflow as tf

  manifest = load_manifest(directory)
  if manifest["format"] != "tfrecord":
    raise PretrainingDataError(
      f"{directory!r} holds {manifest['format']!r} files; use read_pretraining_dataset"
    )
  paths = [os.path.join(directory, f["path"]) for f in manifest["files"]]
  description = {
    name: tf.io.FixedLenFeature(spec["shape"], getattr(tf, spec["dtype"]))
    for name, spec in manifest["features"].items()
  }

  def parse(record: Any) -> dict[str, Any]:
    example = tf.io.parse_single_example(record, description)
    return {k: tf.cast(v, tf.int32) if v.dtype == tf.int64 else v for k, v in example.items()}

  files = tf.data.Dataset.from_tensor_slices(paths)
  if shuffle_files:
    files = files.shuffle(len(paths), seed=seed)
  return tf.data.TFRecordDataset(files).map(parse, num_parallel_calls=tf.data.AUTOTUNE)


def read_pretraining_dataset(directory: str) -> Iterator[dict[str, np.ndarray]]:
  """Yields every example of a generated dataset (any format), shard by shard, as a dict of
  numpy arrays: int32 features and float32 `masked_lm_weights`, shapes as in the manifest."""
  manifest = load_manifest(directory)
  if manifest["format"] == "tfrecord":
    yield from pretraining_tf_dataset(directory).as_numpy_iterator()
    return
  from array_record.python.array_record_module import ArrayRecordReader

  for entry in manifest["files"]:
    reader = ArrayRecordReader(os.path.join(directory, entry["path"]))
    try:
      for record in reader.read_all():
        yield _parse_example(record, manifest)
    finally:
      reader.close()
