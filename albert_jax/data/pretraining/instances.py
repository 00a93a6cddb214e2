"""Documents -> sentence-order (SOP) instances, as Google's `create_pretraining_data.py` makes them.

Per document and per duplication pass (`dupe_factor` passes, each with fresh draws):

1. Target length: `max_num_tokens = max_seq_length - 3`; with probability `short_seq_prob` the
   target is drawn uniformly from [2, max_num_tokens] instead (once per document and pass).
2. Chunks: sentences are accumulated until the chunk reaches the target or the document ends.
   Every sentence lands in exactly one chunk (Google's `randint` includes its upper bound, so
   no chunk is dropped there either).
3. Segments. A chunk of >= 2 sentences is split at a random sentence boundary into A (first
   part) and B (the rest); with probability 0.5 A and B are swapped. The SOP label
   (`next_sentence_labels`) is 1 when swapped, 0 when in document order.
   A chunk of ONE sentence (a one-sentence document, a sentence as long as the target, or a
   document's last sentence alone in its chunk) depends on `one_sentence_chunks`:
   - "random_next" (default, Google's): A is the sentence; B is a random other document of the
     same unit (10 draws to find one other than this; a unit of one document uses itself)
     read from a random sentence on until it reaches target - len(A) tokens (at least one
     sentence); label 1, like a swapped pair. So label 1 is more frequent than 0 (Google's
     data: 57-58% at max_seq_length 128), and these instances are filled up to the target.
   - "split" (this project's earlier behaviour): the sentence is split at a random word
     boundary (a random token boundary when it is a single word) and handled like a two-
     sentence chunk, swapped with p 0.5 (labels balanced, every instance from one document).
     The halves are short: more instances under 32 tokens (7% against Google's 2% on prose
     at max_seq_length 128). A last chunk of fewer than 2 tokens is merged into the chunk
     before it; documents of fewer than 2 tokens are skipped.
   Documents without any token are skipped (`stats.skipped_documents`).
4. Truncation: while len(A) + len(B) > max_num_tokens, one token is removed from the longer
   segment (B on a tie), from its front or its back with probability 0.5 each (Google's
   `truncate_seq_pair`). Sentences longer than `max_num_tokens` are counted in
   `stats.long_sentences`.
5. Tokens: `[CLS] A [SEP] B [SEP]`; segment ids 0 for `[CLS] A [SEP]`, 1 for `B [SEP]`.
6. Masking: `masking.mask_tokens`.

A unit (one input file, or a block of TFDS documents) is generated from its own seeded
generator (`generate_unit`), so units can run in parallel without changing a byte. Google reads
all files into one pool; here the random B of "random_next" comes from the same unit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

import numpy as np

from albert_jax.data.pretraining.config import PretrainingDataConfig
from albert_jax.data.pretraining.masking import (
  CLS_PIECE,
  MASK_PIECE,
  NEVER_MASKED_PIECES,
  SEP_PIECE,
  WORD_START,
  mask_tokens,
)

# Control tokens written literally in the corpus ("[SEP]") are dropped from its text: the
# tokenizer matches them as special tokens, and inside a segment they would fake its structure.
CONTROL_PIECES = NEVER_MASKED_PIECES | {MASK_PIECE}
_UNIT_STREAM = 0  # SeedSequence spawn key (0, unit_index) of a unit's generator


class Tokenizer(Protocol):
  """What generation needs from `albert_jax.tokenizer.AlbertTokenizer`."""

  vocab_size: int

  def tokenize(self, text: str) -> list[str]: ...

  def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]: ...


class PretrainingInstance(NamedTuple):
  """One example before padding (T <= max_seq_length, P = max_predictions_per_seq)."""

  input_ids: np.ndarray  # [T] int32, masked: [CLS] A [SEP] B [SEP]
  num_first_segment: int  # len([CLS] A [SEP]); segment id 1 from here on
  masked_lm_positions: np.ndarray  # [P] int32
  masked_lm_ids: np.ndarray  # [P] int32
  masked_lm_weights: np.ndarray  # [P] float32
  sentence_order_label: int  # 1: A and B swapped, or B from another document; 0: in order


@dataclasses.dataclass
class GenerationStats:
  """Counts reported in the manifest (documents and sentences once; the rest over all passes)."""

  documents: int = 0
  sentences: int = 0
  tokens: int = 0
  long_sentences: int = 0  # sentences longer than max_seq_length - 3: truncated to fit
  skipped_documents: int = 0  # documents too short for an instance
  instances: int = 0
  swapped_instances: int = 0  # label 1: A and B swapped
  random_next_instances: int = 0  # label 1: one-sentence chunk, B from another document
  split_sentence_instances: int = 0  # one-sentence chunks split inside the sentence ("split")

  def add(self, other: GenerationStats) -> None:
    for field in dataclasses.fields(self):
      setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


class TokenizedDocument(NamedTuple):
  """A document's sentences laid end to end (N = its number of tokens, S of sentences)."""

  pieces: list[str]  # [N]
  ids: np.ndarray  # [N] int32
  sentence_starts: np.ndarray  # [S + 1] int64: sentence s is pieces[starts[s]:starts[s + 1]]


class _Segment(NamedTuple):
  """Tokens [start, end) of a document."""

  doc: TokenizedDocument
  start: int
  end: int


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


def min_document_tokens(config: PretrainingDataConfig) -> int:
  """Fewest tokens a document needs for an instance: 2 when its one sentence is split."""
  return 2 if config.one_sentence_chunks == "split" else 1


def _chunk_document(
  sentence_starts: np.ndarray, target_length: int, merge_short_tail: bool
) -> list[tuple[int, int]]:
  """Groups sentences into chunks of about `target_length` tokens, as (first, end) indices."""
  num_sentences = len(sentence_starts) - 1
  chunks: list[tuple[int, int]] = []
  first = 0
  for s in range(num_sentences):
    length = sentence_starts[s + 1] - sentence_starts[first]
    if s == num_sentences - 1 or length >= target_length:
      chunks.append((first, s + 1))
      first = s + 1
  if merge_short_tail and len(chunks) >= 2:
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


def _random_next(
  documents: Sequence[TokenizedDocument], index: int, target_length: int, rng: np.random.Generator
) -> _Segment:
  """Google's B for a one-sentence chunk: a random other document (up to 10 draws), from a
  random sentence on, until `target_length` tokens or its end (at least one sentence)."""
  other = index
  for _ in range(10):
    other = int(rng.integers(len(documents)))
    if other != index:
      break
  doc = documents[other]
  starts = doc.sentence_starts
  num_sentences = len(starts) - 1
  first = int(rng.integers(num_sentences))
  end = first + 1
  while end < num_sentences and starts[end] - starts[first] < target_length:
    end += 1
  return _Segment(doc, int(starts[first]), int(starts[end]))


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
  documents: Sequence[TokenizedDocument],
  index: int,
  config: PretrainingDataConfig,
  rng: np.random.Generator,
  *,
  vocab_size: int,
  cls_token_id: int = 2,
  sep_token_id: int = 3,
  mask_token_id: int = 4,
  stats: GenerationStats | None = None,
) -> list[PretrainingInstance]:
  """One pass over `documents[index]`: chunk, form A/B, truncate, mask (see the module doc).

  `documents` is the pool a one-sentence chunk's random B comes from ("random_next").
  """
  stats = stats if stats is not None else GenerationStats()
  doc = documents[index]
  max_num_tokens = config.max_num_tokens
  target_length = max_num_tokens
  if rng.random() < config.short_seq_prob:
    target_length = int(rng.integers(2, max_num_tokens + 1))
  if len(doc.ids) < min_document_tokens(config):
    stats.skipped_documents += 1
    return []
  split_mode = config.one_sentence_chunks == "split"
  instances = []
  for first, end in _chunk_document(doc.sentence_starts, target_length, split_mode):
    begin, stop = int(doc.sentence_starts[first]), int(doc.sentence_starts[end])
    if end - first == 1 and not split_mode:
      a = _Segment(doc, begin, stop)
      b = _random_next(documents, index, target_length - (stop - begin), rng)
      label = 1
      stats.random_next_instances += 1
    else:
      middle = _split_point(doc, first, end, rng)
      stats.split_sentence_instances += int(end - first == 1)
      a, b = _Segment(doc, begin, middle), _Segment(doc, middle, stop)
      label = int(rng.random() < 0.5)
      if label:
        a, b = b, a
      stats.swapped_instances += label
    (a0, a1), (b0, b1) = truncate_seq_pair((a.start, a.end), (b.start, b.end), max_num_tokens, rng)
    pieces = [CLS_PIECE, *a.doc.pieces[a0:a1], SEP_PIECE, *b.doc.pieces[b0:b1], SEP_PIECE]
    ids_T = np.concatenate(
      [[cls_token_id], a.doc.ids[a0:a1], [sep_token_id], b.doc.ids[b0:b1], [sep_token_id]]
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
        label,
      )
    )
    stats.instances += 1
  return instances


def unit_rng(seed: int, unit_index: int) -> np.random.Generator:
  """The generator of unit `unit_index`: a function of (seed, unit_index) alone."""
  return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_UNIT_STREAM, unit_index)))


def generate_unit(
  documents: Sequence[Sequence[str]],
  unit_index: int,
  tokenizer: Tokenizer,
  config: PretrainingDataConfig,
) -> tuple[list[PretrainingInstance], GenerationStats]:
  """All instances of one unit: `dupe_factor` passes over its documents, seeded by
  (random_seed, unit_index) alone, so the result does not depend on any other unit."""
  rng = unit_rng(config.random_seed, unit_index)
  stats = GenerationStats()
  docs = []
  for document in documents:
    doc = tokenize_document(document, tokenizer)
    stats.documents += 1
    stats.sentences += len(doc.sentence_starts) - 1
    stats.tokens += len(doc.ids)
    stats.long_sentences += int(np.sum(np.diff(doc.sentence_starts) > config.max_num_tokens))
    if len(doc.ids) < min_document_tokens(config):  # counted once, not once per pass
      stats.skipped_documents += 1
    else:
      docs.append(doc)
  special = {
    name: getattr(tokenizer, name, default)
    for name, default in (("cls_token_id", 2), ("sep_token_id", 3), ("mask_token_id", 4))
  }
  instances: list[PretrainingInstance] = []
  for _ in range(config.dupe_factor):
    for index in range(len(docs)):
      instances.extend(
        create_instances_from_document(
          docs, index, config, rng, vocab_size=tokenizer.vocab_size, stats=stats, **special
        )
      )
  return instances, stats
