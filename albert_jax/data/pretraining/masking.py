"""Whole-word n-gram masking, as Google's `create_pretraining_data.py` does it.

Words (`whole_words`): the pieces of a sequence are read left to right, skipping [CLS], [SEP]
and <pad>; a piece that starts a word (`is_word_start`) opens a new word, any other piece
joins the word before it (even across a [SEP], as in Google's code).

N-grams (`sample_masked_ngrams`): every word is a candidate start, visited in a random order;
for each, n is drawn with p(n) ∝ 1/n (n <= `ngram`) and the n-gram is that word and the n - 1
words after it (fewer at the end of the sequence). If its pieces would overflow the budget,
n is shortened one word at a time; if one word still overflows, the candidate is skipped; so
is an n-gram that overlaps one already chosen. Visiting stops when the budget,
min(max_predictions_per_seq, max(1, round(len * masked_lm_prob))) pieces, is met.

Replacement (`mask_tokens`): each chosen piece independently becomes [MASK] (80%), a random
ordinary id (10%) or stays (10%). Google draws the random id from the whole vocabulary,
special pieces included; here it is never a special id.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

WORD_START = "\u2581"  # "▁": SentencePiece's mark for a piece that begins a word
CLS_PIECE = "[CLS]"
SEP_PIECE = "[SEP]"
PAD_PIECE = "<pad>"
MASK_PIECE = "[MASK]"
NEVER_MASKED_PIECES = frozenset({CLS_PIECE, SEP_PIECE, PAD_PIECE})
# ids 0-4 of the 30k-clean vocabulary are <pad> <unk> [CLS] [SEP] [MASK]; random replacements are
# drawn from the ordinary pieces at and above this id.
FIRST_RANDOM_TOKEN_ID = 5

# Google's punctuation set for word starts (the single quote is not in it).
_PUNCTUATION = frozenset('!"#$%&()*+,-./:;?@[\\]^_`{|}~')
_IN_WORD_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz") | _PUNCTUATION


@functools.lru_cache(maxsize=1 << 16)
def is_word_start(piece: str) -> bool:
  """Whether `piece` begins a new whole word (Google's `_is_start_piece_sp`).

  It does if it starts with "▁" or "<", or is one punctuation character, or holds any
  character that is not a-z (after lowercasing) or punctuation: a digit, an accented or
  non-Latin letter, a symbol, an apostrophe. So `▁the` `,` `9` `é` `'s` start words; `ing`
  and `s.` do not.
  """
  return (
    piece.startswith((WORD_START, "<"))
    or piece in _PUNCTUATION
    or any(c.lower() not in _IN_WORD_CHARACTERS for c in piece)
  )


def whole_words(pieces: Sequence[str]) -> list[list[int]]:
  """The whole words of a piece sequence, each as its piece positions (see the module doc)."""
  words: list[list[int]] = []
  for i, piece in enumerate(pieces):
    if piece in NEVER_MASKED_PIECES:
      continue
    if words and not is_word_start(piece):
      words[-1].append(i)
    else:
      words.append([i])
  return words


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


class MaskedNgram(NamedTuple):
  """One chosen n-gram: words [first_word, first_word + num_words) and their pieces."""

  first_word: int
  num_words: int
  positions: tuple[int, ...]


def sample_masked_ngrams(
  words: Sequence[Sequence[int]],
  num_to_predict: int,
  rng: np.random.Generator,
  *,
  ngram: int = 3,
) -> list[MaskedNgram]:
  """Google's n-gram selection (see the module doc): non-overlapping whole-word n-grams
  covering at most `num_to_predict` pieces, in the order chosen.

  Args:
    words: the piece positions of each word, in order (`whole_words`).
    num_to_predict: the budget, in pieces.
    rng: the generator all draws come from.
    ngram: longest n-gram, in words.
  """
  num_words = len(words)
  if num_words == 0 or num_to_predict <= 0:
    return []
  order_W = rng.permutation(num_words)
  n_W = rng.choice(np.arange(1, ngram + 1), size=num_words, p=ngram_probabilities(ngram))
  pieces_before_W = np.concatenate([[0], np.cumsum([len(w) for w in words])])  # [W + 1]

  def size(first: int, n: int) -> int:  # pieces of the n-gram of n words from word `first`
    return int(pieces_before_W[min(first + n, num_words)] - pieces_before_W[first])

  covered: set[int] = set()
  chosen: list[MaskedNgram] = []
  num_masked = 0
  for first in order_W.tolist():
    if num_masked >= num_to_predict:
      break
    n = int(n_W[first])  # the n drawn for this word (draws are independent of the order)
    while n > 1 and num_masked + size(first, n) > num_to_predict:
      n -= 1
    if num_masked + size(first, n) > num_to_predict:
      continue
    positions = tuple(p for word in words[first : first + n] for p in word)
    if covered.intersection(positions):
      continue
    covered.update(positions)
    num_masked += len(positions)
    chosen.append(MaskedNgram(first, min(n, num_words - first), positions))
  return chosen


class MaskedTokens(NamedTuple):
  """Result of `mask_tokens` (T = len(ids), P = max_predictions_per_seq)."""

  input_ids: np.ndarray  # [T] int32: ids with the chosen positions replaced
  masked_lm_positions: np.ndarray  # [P] int32: sorted positions, then 0-padding
  masked_lm_ids: np.ndarray  # [P] int32: original ids at those positions, then 0
  masked_lm_weights: np.ndarray  # [P] float32: 1.0 for real predictions, then 0.0


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

  `num_to_predict(len(ids), ...)` pieces at most are chosen as whole-word n-grams
  (`whole_words`, `sample_masked_ngrams`); [CLS]/[SEP]/<pad> are never chosen. Each chosen
  position independently becomes [MASK] (80%), a random id uniform in
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
    raise ValueError(f"pieces ({len(pieces)}) and ids ({len(ids_T)}) differ in length")
  budget = num_to_predict(len(ids_T), masked_lm_prob, max_predictions_per_seq)
  ngrams = sample_masked_ngrams(whole_words(pieces), budget, rng, ngram=ngram)
  positions_K = np.sort(np.asarray([p for g in ngrams for p in g.positions], dtype=np.int32))
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
