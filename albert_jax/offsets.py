"""Pieces -> characters of the original text: where each SentencePiece piece came from.

`tokenize_with_offsets` gives each piece of `tokenizer.tokenize(text)` its (start, end) in
`text` as written, through ALBERT's preprocessing (whitespace collapse, quote replacement,
accent stripping, lowercasing: `normalize_with_map` repeats it keeping each character's
source) and SentencePiece's own normalization (`_align`: SentencePiece's `Normalize` with
offsets says which characters each of its output characters came from, so NFKC's changes of
length, such as Hangul jamo joined back into syllables or `ﬁ` -> `fi`, keep every piece in its
place). Answer spans (SQuAD, question answering) and entities (token classification) are cut
out of the text with them.
"""

from __future__ import annotations

import difflib
import re
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

  `context[start:end]` is the original text a piece came from. The text is cut at the special
  tokens written in it (each is its own piece, as `tokenize` makes it); each text between them
  is followed through whitespace collapse, quote replacement, accent stripping and lowercasing
  (`normalize_with_map`) and SentencePiece's own normalization (`_align`); characters
  normalization dropped belong to the piece before them. A piece of only `▁` gets (-1, -1).
  """
  specials = sorted(getattr(tokenizer, "all_special_tokens", ()), key=len, reverse=True)
  chunks = (
    re.split("(" + "|".join(map(re.escape, specials)) + ")", context) if specials else [context]
  )
  pieces, rows, at = [], [np.zeros((0, 2), np.int32)], 0
  for k, chunk in enumerate(chunks):
    if k % 2:  # a special token
      pieces.append(chunk)
      rows.append(np.array([[at, at + len(chunk)]], np.int32))
    elif chunk:
      chunk_pieces, offsets = _text_offsets(tokenizer, chunk)
      pieces += chunk_pieces
      rows.append(np.where(offsets >= 0, offsets + at, offsets))
    at += len(chunk)
  return pieces, np.concatenate(rows)


def _text_offsets(tokenizer: Any, context: str) -> tuple[list[str], np.ndarray]:
  """`tokenize_with_offsets` of a text without special tokens."""
  pieces = tokenizer.tokenize(context)
  norm, source = normalize_with_map(
    context,
    lower=getattr(tokenizer, "do_lower_case", True),
    strip_accents=not getattr(tokenizer, "keep_accents", False),
    replace_quotes=getattr(tokenizer, "replace_quotes", True),
  )
  to_norm = _align(pieces, norm, _sentencepiece(tokenizer))  # piece char -> span of norm
  covered = np.zeros(len(context) + 1, bool)
  for span in to_norm:
    if span is not None:
      covered[[source[j] for j in range(*span)]] = True
  offsets = np.full((len(pieces), 2), -1, np.int32)
  position = 0
  for k, piece in enumerate(pieces):
    spans = [
      to_norm[position + c]
      for c, char in enumerate(piece)
      if char != SPIECE_UNDERLINE and to_norm[position + c] is not None
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


def _sentencepiece(tokenizer: Any) -> Any:
  """The tokenizer's SentencePieceProcessor (ours: `_sp`; HF's slow tokenizer: `sp_model`)."""
  for name in ("_sp", "sp_model"):
    sp = getattr(tokenizer, name, None)
    if hasattr(sp, "Normalize"):
      return sp
  return None


def _align(pieces: list[str], norm: str, sp: Any) -> list[tuple[int, int] | None]:
  """For each character of the pieces, the span of `norm` it stands for (None: nothing).

  With the tokenizer's SentencePiece processor, `norm` is normalized again as SentencePiece
  does it (NFKC: Hangul jamo composed back into syllables, `ﬁ` -> `fi`, ...), keeping each
  output character's characters of `norm`; the pieces are then matched in that text, which is
  theirs. Without one, they are matched in `norm` itself. Where the pieces are not that text
  (not seen with `AlbertTokenizer`), difflib matches what it can.
  """
  joined = "".join(pieces)
  if sp is None:
    target, spans = norm.replace(" ", SPIECE_UNDERLINE), [(j, j + 1) for j in range(len(norm))]
  else:
    target, starts = sp.Normalize(norm, with_offsets=True)
    spans = _normalized_spans(starts)
  lead = len(joined) - len(joined.lstrip(SPIECE_UNDERLINE))
  if joined == target or joined[lead:] == target:  # the common case
    shift = len(joined) - len(target)
    return [None] * shift + [s if s[0] < s[1] else None for s in spans]
  out: list[tuple[int, int] | None] = [None] * len(joined)
  matcher = difflib.SequenceMatcher(None, joined, target, autojunk=False)
  for op, i1, i2, j1, j2 in matcher.get_opcodes():
    for i in range(i1, i2):
      if op == "equal":
        out[i] = spans[j1 + i - i1]
      elif op == "replace":
        out[i] = (spans[j1][0], spans[j2 - 1][1])
  return [s if s is not None and s[0] < s[1] else None for s in out]


def _normalized_spans(starts: list[int]) -> list[tuple[int, int]]:
  """SentencePiece's normalization offsets (where in the input each output character starts,
  then the input's length) -> each output character's (start, end) in the input. Characters
  one input character expanded to (`ﬁ` -> `f`, `i`) share its span; one made of several (Hangul
  jamo -> a syllable; a character and those SentencePiece drops after it) spans them all. (The
  leading `▁` SentencePiece adds shares the first character's; `_text_offsets` skips `▁`s.)"""
  ends, end = [], starts[-1]
  for k in range(len(starts) - 2, -1, -1):
    if starts[k + 1] > starts[k]:
      end = starts[k + 1]
    ends.append(end)
  return list(zip(starts[:-1], reversed(ends), strict=True))
