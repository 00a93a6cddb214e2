"""`AlbertTokenizer` in TensorFlow ops, for a SavedModel that takes raw text.

`GraphTokenizer(tokenizer, max_length)` repeats `albert_jax.tokenizer`'s steps in the graph:

1. the special tokens `<pad> <unk> [CLS] [SEP] [MASK]` are cut out of the text
   (`split_special`) and become their ids;
2. each piece of text between them is preprocessed: whitespace (every character Python's
   `str.isspace` takes, as a character class) stripped and collapsed, `` and '' turned into ",
   NFKD (`tf_text.normalize_utf8`) with combining marks dropped (those with a nonzero
   `unicodedata.combining` class, as a character class), lowercased (`tf.strings.lower`);
3. SentencePiece encodes it (`tf_text.SentencepieceTokenizer` with the model's own bytes: the
   same library, normalization and unigram model);
4. the pieces that step 4 of the tokenizer splits (`▁1990,`) are replaced by their split ids
   (`AlbertTokenizer.split_pieces`, a table over the vocabulary).

Then `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`, truncated to `max_length` as HF's
`longest_first` does (`albert_jax.encoding.longest_first`), padded on the right with `<pad>`.

Where the graph can differ from `AlbertTokenizer` (docs/serving.md lists and
tests/test_serve_text.py tests them): the character tables are taken from the Python that
exports, NFKD from TF's ICU (Unicode versions may differ for characters newer than either);
`tf.strings.lower` maps one character at a time (Python's `str.lower` turns a word-final `Σ`
into `ς`, and `İ` into two characters, which NFKD has already split; the test texts hold such
words and their ids are equal). Over every code point between two letters, the one difference
is Unicode 16's outlined letters U+1CCD6..U+1CCEF, which TF's ICU decomposes and Python 3.11
does not know.
"""

from __future__ import annotations

import unicodedata

import tensorflow as tf
import tensorflow_text as tf_text

from albert_jax.tokenizer import SPECIAL_TOKENS, AlbertTokenizer


def _char_class(codepoints: list[int]) -> str:
  """An RE2 character class of `codepoints` (sorted), as ranges."""
  ranges: list[tuple[int, int]] = []
  for c in codepoints:
    if ranges and c == ranges[-1][1] + 1:
      ranges[-1] = (ranges[-1][0], c)
    else:
      ranges.append((c, c))
  return (
    "[" + "".join(f"\\x{{{a:x}}}" + (f"-\\x{{{b:x}}}" if b > a else "") for a, b in ranges) + "]"
  )


UNICODE = range(0x110000)
SPACE = _char_class([c for c in UNICODE if chr(c).isspace()])
COMBINING = _char_class([c for c in UNICODE if unicodedata.combining(chr(c))])
SPECIAL = "|".join(t.replace("[", r"\[").replace("]", r"\]") for t in SPECIAL_TOKENS)


class GraphTokenizer(tf.Module):
  """Texts -> ALBERT's model inputs in TF ops; see the module docstring."""

  def __init__(self, tokenizer: AlbertTokenizer, max_length: int):
    super().__init__()
    self.options = (tokenizer.do_lower_case, tokenizer.keep_accents, tokenizer.replace_quotes)
    self.max_length = max_length
    self.sp = tf_text.SentencepieceTokenizer(tokenizer.serialized_model, out_type=tf.int32)
    self.cls, self.sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    self.pad, self.unk = tokenizer.pad_token_id, tokenizer.unk_token_id
    split = tokenizer.split_pieces()
    rows = [split.get(i, [i]) for i in range(tokenizer.vocab_size)]
    self.rows = tf.ragged.constant(rows, dtype=tf.int32)  # id -> the ids it becomes [V, None]
    self.pieces = tf.constant(tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size)))
    special_ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    self.special = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(list(SPECIAL_TOKENS), special_ids), default_value=-1
    )

  def preprocess(self, text_N: tf.Tensor) -> tf.Tensor:
    """ALBERT's preprocessing of each string (step 2)."""
    lowercase, keep_accents, replace_quotes = self.options
    text_N = tf.strings.regex_replace(text_N, f"^{SPACE}+|{SPACE}+$", "")
    text_N = tf.strings.regex_replace(text_N, f"{SPACE}+", " ")
    if replace_quotes:
      text_N = tf.strings.regex_replace(text_N, "``", '"')
      text_N = tf.strings.regex_replace(text_N, "''", '"')
    if not keep_accents:
      text_N = tf_text.normalize_utf8(text_N, "NFKD")
      text_N = tf.strings.regex_replace(text_N, f"{COMBINING}+", "")
    return lower(text_N) if lowercase else text_N

  def tokenize(self, text_B: tf.Tensor) -> tf.RaggedTensor:
    """The ids of each text's pieces (no [CLS]/[SEP] added): int32 [B, None]."""
    chunks_BC = split_special(text_B)  # [B, None] strings
    special_N = self.special.lookup(chunks_BC.flat_values)
    is_special_N = special_N >= 0
    plain_N = tf.where(is_special_N, "", chunks_BC.flat_values)
    ids_NP = self.sp.tokenize(self.preprocess(plain_N))
    ids_NP = tf.concat(
      [ids_NP, tf.ragged.boolean_mask(special_N[:, None], is_special_N[:, None])], axis=1
    )
    ids_NP = ids_NP.with_flat_values(tf.gather(self.rows, ids_NP.flat_values)).merge_dims(1, 2)
    return chunks_BC.with_flat_values(ids_NP).merge_dims(1, 2)

  def encode(self, text_B: tf.Tensor, pair_B: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
    """`input_ids`, `attention_mask`, `token_type_ids`: int32 [B, L], L the longest row."""
    a = self.tokenize(text_B)
    b = None if pair_B is None else self.tokenize(pair_B)
    n_a, n_b = a.row_lengths(), None if b is None else b.row_lengths()
    if b is None:
      a = _keep(a, tf.minimum(n_a, self.max_length - 2))
    else:
      keep_a, keep_b = longest_first(n_a, n_b, self.max_length - 3)
      a, b = _keep(a, keep_a), _keep(b, keep_b)
    ones = tf.ones_like(a.row_lengths()[:, None], tf.int32)
    cls, sep = (
      tf.RaggedTensor.from_tensor(ones * self.cls),
      tf.RaggedTensor.from_tensor(ones * self.sep),
    )
    parts = [cls, a, sep] if b is None else [cls, a, sep, b, sep]
    ids = tf.concat(parts, axis=1)
    types = tf.concat(
      [tf.zeros_like(p) for p in parts[:3]] + [tf.ones_like(p) for p in parts[3:]], 1
    )
    return {
      "input_ids": ids.to_tensor(self.pad),
      "attention_mask": tf.ones_like(ids).to_tensor(0),
      "token_type_ids": types.to_tensor(0),
    }


def split_special(text_B: tf.Tensor) -> tf.RaggedTensor:
  """Each text cut into the special tokens and the text between them: [B, None] strings.

  (`tf_text.regex_split` would end a text at U+0000.) The cuts are marked with `\\x01\\x03`
  after every `\\x01` of the text is escaped as `\\x01\\x02`, so no text can hold a mark.
  """
  escaped_B = tf.strings.regex_replace(text_B, "\x01", "\x01\x02")
  marked_B = tf.strings.regex_replace(escaped_B, f"({SPECIAL})", "\x01\x03\\1\x01\x03")
  chunks_BC = tf.strings.split(marked_B, "\x01\x03")
  return chunks_BC.with_flat_values(
    tf.strings.regex_replace(chunks_BC.flat_values, "\x01\x02", "\x01")
  )


def lower(text_N: tf.Tensor) -> tf.Tensor:
  """`tf.strings.lower`, around U+0000 (where that op would end the string)."""
  parts_NP = tf.strings.lower(tf.strings.split(text_N, "\x00"), encoding="utf-8") + "\x00"
  joined_N = tf.strings.reduce_join(parts_NP, axis=-1)
  length_N = tf.strings.length(joined_N)
  return tf.strings.substr(joined_N, tf.zeros_like(length_N), length_N - 1)


def longest_first(n_a: tf.Tensor, n_b: tf.Tensor, budget: int) -> tuple[tf.Tensor, tf.Tensor]:
  """`albert_jax.encoding.longest_first` per row, rows that fit kept whole: [B] lengths."""
  short, long = tf.minimum(n_a, n_b), tf.maximum(n_a, n_b)
  long_ = tf.where(short > budget, short, tf.maximum(short, budget - short))
  halves = short + long_ > budget
  short_ = tf.where(halves, tf.cast(budget // 2, short.dtype), short)
  long_ = tf.where(halves, tf.cast(budget // 2 + budget % 2, long.dtype), long_)
  a_longer = n_a > n_b
  fits = n_a + n_b <= budget
  keep_a = tf.where(fits, n_a, tf.where(a_longer, long_, short_))
  keep_b = tf.where(fits, n_b, tf.where(a_longer, short_, long_))
  return keep_a, keep_b


def _keep(rows: tf.RaggedTensor, n_B: tf.Tensor) -> tf.RaggedTensor:
  """The first `n_B[i]` values of each row i."""
  starts = rows.row_splits[:-1]
  return tf.gather(rows.values, tf.ragged.range(starts, starts + n_B))
