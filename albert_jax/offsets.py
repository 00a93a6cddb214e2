"""Pieces -> characters of the original text: where each SentencePiece piece came from.

`tokenize_with_offsets` gives each piece of `tokenizer.tokenize(text)` its (start, end) in
`text` as written, through ALBERT's preprocessing (whitespace collapse, quote replacement,
accent stripping, lowercasing: `normalize_with_map` repeats it keeping each character's
source) and SentencePiece's own normalization (aligned by `_align`). Answer spans (SQuAD,
question answering) and entities (token classification) are cut out of the text with them.
"""

from __future__ import annotations

import difflib
import unicodedata
from typing import Any

import numpy as np

SPIECE_UNDERLINE = "▁"


def normalize_with_map(
  text: str, *, lower: bool = True, strip_accents: bool = True, replace_quotes: bool = True
) -> tuple[str, list[int]]:
  """ALBERT's text preprocessing of `text`, and for each output character its source index."""
  chars: list[tuple[str, int]] = []
  space_at = None  # where the pending run of whitespace began
  for i, c in enumerate(text):
    if c.isspace():
      space_at = i if space_at is None else space_at
      continue
    if space_at is not None and chars:
      chars.append((" ", space_at))
    space_at = None
    chars.append((c, i))
  # str.replace's order and semantics: left to right, no overlaps
  for pair in ("``", "''") if replace_quotes else ():
    merged, k = [], 0
    while k < len(chars):
      if k + 1 < len(chars) and chars[k][0] + chars[k + 1][0] == pair:
        merged.append(('"', chars[k][1]))
        k += 2
      else:
        merged.append(chars[k])
        k += 1
    chars = merged
  if strip_accents:
    chars = [
      (d, i)
      for c, i in chars
      for d in unicodedata.normalize("NFKD", c)
      if not unicodedata.combining(d)
    ]
  if lower:
    lowered = [(d, i) for c, i in chars for d in c.lower()]
    whole = "".join(c for c, _ in chars).lower()  # as one string: a word-final Σ becomes ς
    chars = [(d, i) for d, (_, i) in zip(whole, lowered, strict=True)]
  return "".join(c for c, _ in chars), [i for _, i in chars]


def tokenize_with_offsets(tokenizer: Any, context: str) -> tuple[list[str], np.ndarray]:
  """`tokenizer.tokenize(context)` and each piece's (start, end) characters in `context` [T, 2].

  `context[start:end]` is the original text a piece came from, through whitespace collapse,
  quote replacement, accent stripping and lowercasing (`normalize_with_map`) and
  SentencePiece's own normalization (aligned by `_align`); characters normalization dropped
  belong to the piece before them. A piece of only `▁` gets (-1, -1).
  """
  pieces = tokenizer.tokenize(context)
  norm, source = normalize_with_map(
    context,
    lower=getattr(tokenizer, "do_lower_case", True),
    strip_accents=not getattr(tokenizer, "keep_accents", False),
    replace_quotes=getattr(tokenizer, "replace_quotes", True),
  )
  joined = "".join(pieces).replace(SPIECE_UNDERLINE, " ")
  to_norm = _align(joined, norm)  # joined char -> (start, end) in norm, or None
  covered = np.zeros(len(context) + 1, bool)
  for span in to_norm:
    if span is not None:
      covered[[source[j] for j in range(*span)]] = True
  offsets = np.full((len(pieces), 2), -1, np.int32)
  position = 0
  for k, piece in enumerate(pieces):
    spans = [
      to_norm[position + c]
      for c, char in enumerate(piece.replace(SPIECE_UNDERLINE, " "))
      if char != " " and to_norm[position + c] is not None
    ]
    position += len(piece)
    if not spans:
      continue
    start = source[min(s for s, _ in spans)]
    end = source[max(e for _, e in spans) - 1] + 1
    while end < len(context) and not covered[end] and not context[end].isspace():
      end += 1  # characters that normalization dropped belong to the piece before them
    offsets[k] = start, end
  return pieces, offsets


def _align(joined: str, norm: str) -> list[tuple[int, int] | None]:
  """For each character of `joined`, the span of `norm` it stands for (None: nothing)."""
  lead = len(joined) - len(joined.lstrip(" "))
  if joined[lead:] == norm:  # the common case: only SentencePiece's leading ▁ added
    return [None] * lead + [(j, j + 1) for j in range(len(norm))]
  spans: list[tuple[int, int] | None] = [None] * len(joined)
  matcher = difflib.SequenceMatcher(None, joined, norm, autojunk=False)
  for op, i1, i2, j1, j2 in matcher.get_opcodes():
    for i in range(i1, i2):
      if op == "equal":
        spans[i] = (j1 + i - i1, j1 + i - i1 + 1)
      elif op == "replace":
        spans[i] = (j1, j2)
  return spans
