"""Google ALBERT's `create_pretraining_data.py` rules, transcribed literally for the tests.

Our own code, written from the rules (not copied), deliberately plain: one loop per rule, the
same data structures (lists of pieces, lists of candidate word indexes) and the same kinds of
random draws as the original (`random.Random` for Python draws, a numpy RandomState for the
n-gram length). The library is compared with these, never with itself.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np

# The characters Google's word-start rule calls punctuation (no single quote among them).
PUNCTUATION = set('!"#$%&()*+,-./:;?@[\\]^_`{|}~')
LETTERS = set("abcdefghijklmnopqrstuvwxyz")


def is_start_piece(piece: str) -> bool:
  """Google's `_is_start_piece_sp`: starts with ▁ or <, is a punctuation piece, or has a
  character that is neither a-z (lowercased) nor punctuation."""
  if piece.startswith("▁") or piece.startswith("<"):
    return True
  if piece in PUNCTUATION:
    return True
  for character in piece:
    if character.lower() not in LETTERS | PUNCTUATION:
      return True
  return False


def candidate_words(tokens: Sequence[str]) -> list[list[int]]:
  """Google's `cand_indexes`: [CLS]/[SEP] skipped, a non-start piece joins the previous word."""
  words: list[list[int]] = []
  for i, token in enumerate(tokens):
    if token in ("[CLS]", "[SEP]"):
      continue
    if len(words) >= 1 and not is_start_piece(token):
      words[-1].append(i)
    else:
      words.append([i])
  return words


def budget(num_tokens: int, masked_lm_prob: float = 0.15, max_predictions: int = 20) -> int:
  return min(max_predictions, max(1, int(round(num_tokens * masked_lm_prob))))


def select_ngrams(
  words: list[list[int]],
  num_to_predict: int,
  order: Sequence[int],
  draw_n: Callable[[int], int],
  ngram: int = 3,
) -> list[list[int]]:
  """Google's n-gram selection over `words` visited in `order`; `draw_n(word)` is called once
  per visited candidate. Returns the chosen n-grams as lists of word indexes."""
  covered: set[int] = set()
  num_masked = 0
  chosen: list[list[int]] = []
  for start in order:
    if num_masked >= num_to_predict:
      break
    options = [list(range(start, min(start + n, len(words)))) for n in range(1, ngram + 1)]
    n = draw_n(start)
    picked = options[n - 1]
    n -= 1
    while num_masked + sum(len(words[w]) for w in picked) > num_to_predict:
      if n == 0:
        break
      picked = options[n - 1]
      n -= 1
    pieces = [p for w in picked for p in words[w]]
    if num_masked + len(pieces) > num_to_predict:
      continue
    if any(p in covered for p in pieces):
      continue
    covered.update(pieces)
    num_masked += len(pieces)
    chosen.append(picked)
  return chosen


def masked_positions(
  tokens: Sequence[str], rng: random.Random, np_rng: np.random.RandomState, ngram: int = 3
) -> list[int]:
  """The positions Google masks in `tokens` (15%, at most 20), sorted."""
  words = candidate_words(tokens)
  order = list(range(len(words)))
  rng.shuffle(order)
  p = 1.0 / np.arange(1, ngram + 1)
  p /= p.sum()
  chosen = select_ngrams(
    words,
    budget(len(tokens)),
    order,
    lambda _: int(np_rng.choice(np.arange(1, ngram + 1), p=p)),
    ngram,
  )
  return sorted(p for gram in chosen for w in gram for p in words[w])


def truncate_pair(a: list, b: list, max_num_tokens: int, rng: random.Random) -> None:
  while len(a) + len(b) > max_num_tokens:
    longer = a if len(a) > len(b) else b
    if rng.random() < 0.5:
      del longer[0]
    else:
      longer.pop()


def instances(
  all_documents: list[list[list[str]]],
  document_index: int,
  max_seq_length: int,
  short_seq_prob: float,
  rng: random.Random,
) -> list[tuple[list[str], int]]:
  """Google's `create_instances_from_document` (SOP, no masking): ([CLS] A [SEP] B [SEP]
  tokens, label) per instance; label 1 = swapped or random next."""
  document = all_documents[document_index]
  max_num_tokens = max_seq_length - 3
  target = max_num_tokens
  if rng.random() < short_seq_prob:
    target = rng.randint(2, max_num_tokens)
  out = []
  chunk: list[list[str]] = []
  length = 0
  i = 0
  while i < len(document):
    chunk.append(document[i])
    length += len(document[i])
    if i == len(document) - 1 or length >= target:
      a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
      a = [t for sentence in chunk[:a_end] for t in sentence]
      b: list[str] = []
      if len(chunk) == 1:
        label = 1
        for _ in range(10):
          other = rng.randint(0, len(all_documents) - 1)
          if other != document_index:
            break
        random_document = all_documents[other]
        for sentence in random_document[rng.randint(0, len(random_document) - 1) :]:
          b.extend(sentence)
          if len(b) >= target - len(a):
            break
      elif rng.random() < 0.5:
        label = 1
        b = [t for sentence in chunk[a_end:] for t in sentence]
        a, b = b, a
      else:
        label = 0
        b = [t for sentence in chunk[a_end:] for t in sentence]
      truncate_pair(a, b, max_num_tokens, rng)
      out.append((["[CLS]", *a, "[SEP]", *b, "[SEP]"], label))
      chunk, length = [], 0
    i += 1
  return out
