"""Each piece's characters in the original text, in TF ops: what token classification's
`start`/`end` are (`albert_jax.offsets` in Python).

ALBERT's preprocessing is done again one character at a time (`per_character`): each character
of the text becomes its own output string (a space run's first space " " between words and ""
for the rest, a `` or '' pair '"' and "", else its NFKD without combining marks, lowercased),
so the preprocessed text is their concatenation and every byte of it knows its source
character. SentencePiece gives each piece its bytes in that text (`tokenize_with_offsets`);
a piece's characters are those of its bytes, less the one its `▁` stands for, plus the
characters after it that preprocessing dropped (as `albert_jax.offsets` gives them to the piece
before). A `▁` alone gets the empty span where the next piece starts, as the pipeline's.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_text as tf_text

from albert_jax.serve.text import COMBINING, SPACE, lower

SPIECE_UNDERLINE = "▁"


def _shift_right(x_BN: tf.Tensor, fill) -> tf.Tensor:
  return tf.concat([tf.fill([tf.shape(x_BN)[0], 1], fill), x_BN[:, :-1]], axis=1)


def _padded(rows: tf.RaggedTensor, value) -> tf.Tensor:
  """`rows` dense, padded with `value` and one more column of it (so that index len(row) is
  valid in every row)."""
  dense = rows.to_tensor(value)
  return tf.concat([dense, tf.fill([tf.shape(dense)[0], 1], tf.cast(value, dense.dtype))], 1)


def _pairs(char_BN: tf.Tensor, quote: str) -> tuple[tf.Tensor, tf.Tensor]:
  """(first, second) of each `quote quote` pair taken left to right within runs of `quote`
  (`str.replace`'s order): bool [B, N]."""
  is_q = tf.equal(char_BN, quote)
  starts = is_q & ~_shift_right(is_q, False)
  index_BN = tf.broadcast_to(tf.range(tf.shape(char_BN)[1]), tf.shape(char_BN))
  run_BN = tf.cumsum(tf.cast(starts, tf.int32), axis=1)  # 1, 2, ... for the runs
  start_BR = _padded(tf.ragged.boolean_mask(index_BN, starts), 0)
  run_start_BN = tf.gather(start_BR, tf.maximum(run_BN - 1, 0), batch_dims=1)
  odd = tf.math.floormod(index_BN - run_start_BN, 2) == 1
  second = is_q & odd
  first = is_q & ~odd & tf.concat([second[:, 1:], tf.zeros_like(second[:, :1])], axis=1)
  return first, second


def per_character(text_B: tf.Tensor, options: tuple[bool, bool, bool]) -> tf.RaggedTensor:
  """Each character's preprocessed output string: [B, N] ragged, N the text's characters."""
  lowercase, keep_accents, replace_quotes = options
  chars = tf.strings.unicode_split(text_B, "UTF-8")
  char_BN = chars.to_tensor("")
  valid = tf.sequence_mask(chars.row_lengths(), tf.shape(char_BN)[1])
  space = tf.strings.regex_full_match(char_BN, SPACE) | ~valid
  word = ~space
  before = tf.cumsum(tf.cast(word, tf.int32), axis=1, exclusive=True) > 0
  after = tf.cumsum(tf.cast(word, tf.int32), axis=1, exclusive=True, reverse=True) > 0
  one_space = space & ~_shift_right(space, True) & before & after
  out = char_BN
  if not keep_accents:
    out = tf.strings.regex_replace(tf_text.normalize_utf8(out, "NFKD"), f"{COMBINING}+", "")
  if lowercase:
    out = tf.reshape(lower(tf.reshape(out, [-1])), tf.shape(out))
  if replace_quotes:
    for quote in ("`", "'"):
      first, second = _pairs(char_BN, quote)
      out = tf.where(first, '"', tf.where(second, "", out))
  out = tf.where(one_space, " ", tf.where(space, "", out))
  return tf.RaggedTensor.from_tensor(out, lengths=chars.row_lengths())


def tokenize_with_offsets(tokenizer, text_B: tf.Tensor):
  """(ids [B, T], start [B, T], end [B, T]) ragged: the pieces of each text (no special tokens
  cut out) and their characters in it. `tokenizer` is a `GraphTokenizer`."""
  out_BN = per_character(text_B, tokenizer.options)
  norm_B = tf.strings.reduce_join(out_BN, axis=1)
  ids, begin, end = tokenizer.sp.tokenize_with_offsets(norm_B)  # bytes of norm_B, [B, P]
  # the pieces the tokenizer splits (`▁1990,`): the last byte is the comma's
  rows = tf.gather(tokenizer.rows, ids.flat_values)  # [n, 1 or 2]
  n_sub = rows.row_lengths()
  last = tf.ragged.range(n_sub) == tf.expand_dims(n_sub - 1, 1)  # ragged bool
  split = tf.expand_dims(n_sub > 1, 1)
  b = tf.expand_dims(begin.flat_values, 1) + tf.zeros_like(rows, tf.int64)
  e = tf.expand_dims(end.flat_values, 1) + tf.zeros_like(rows, tf.int64)
  b_sub = tf.where(split & last, e - 1, b)
  e_sub = tf.where(split & ~last, e - 1, e)
  ids_BT = ids.with_flat_values(rows).merge_dims(1, 2)
  b_BT = ids.with_flat_values(b_sub).merge_dims(1, 2)
  e_BT = ids.with_flat_values(e_sub).merge_dims(1, 2)
  # bytes -> characters: the character holding byte x is searchsorted(ends, x, "right")
  nbytes_BN = tf.cast(tf.strings.length(out_BN).to_tensor(0), tf.int64)
  n_BN = tf.sequence_mask(out_BN.row_lengths(), tf.shape(nbytes_BN)[1])
  ends_BN = tf.where(n_BN, tf.cumsum(nbytes_BN, axis=1), tf.int64.max)
  b_BT, e_BT = b_BT.to_tensor(0), e_BT.to_tensor(0)
  piece_BT = tf.gather(tokenizer.pieces, ids_BT.to_tensor(0))
  marked = tf.strings.substr(piece_BT, 0, 1, unit="UTF8_CHAR") == SPIECE_UNDERLINE
  mark_char = tf.searchsorted(ends_BN, b_BT, side="right")  # the character ▁ stands for
  past_mark = tf.gather(
    tf.concat([ends_BN, tf.fill([tf.shape(ends_BN)[0], 1], tf.int64.max)], 1),
    mark_char,
    batch_dims=1,
  )
  b_BT = tf.where(marked & (b_BT > 0), past_mark, b_BT)
  start_BT = tf.searchsorted(ends_BN, b_BT, side="right")
  end_BT = tf.searchsorted(ends_BN, tf.maximum(e_BT - 1, 0), side="right") + 1
  # characters preprocessing dropped (no output, not a space) belong to the piece before
  chars_BN = tf.strings.unicode_split(text_B, "UTF-8").to_tensor(" ")
  kept_BN = (nbytes_BN > 0) | tf.strings.regex_full_match(chars_BN, SPACE)
  n = tf.shape(kept_BN)[1]
  index_BN = tf.broadcast_to(tf.range(n), tf.shape(kept_BN))
  kept_at_BK = _padded(tf.ragged.boolean_mask(index_BN, kept_BN), n)
  before_BN = tf.cumsum(tf.cast(kept_BN, tf.int32), axis=1, exclusive=True)
  before_BN = tf.concat([before_BN, tf.reduce_sum(tf.cast(kept_BN, tf.int32), 1, keepdims=True)], 1)
  next_kept_BN = tf.gather(kept_at_BK, before_BN, batch_dims=1)  # [B, N + 1]
  end_BT = tf.minimum(
    tf.gather(next_kept_BN, end_BT, batch_dims=1), tf.cast(out_BN.row_lengths()[:, None], tf.int32)
  )
  # a ▁ alone: the empty span where the next piece starts (after the last: the last end)
  lone = piece_BT == SPIECE_UNDERLINE
  valid_BT = tf.sequence_mask(ids_BT.row_lengths(), tf.shape(piece_BT)[1])
  last_end = tf.reduce_max(tf.where(valid_BT & ~lone, end_BT, 0), axis=1, keepdims=True)
  following = tf.concat([start_BT[:, 1:], last_end], axis=1)
  start_BT = tf.where(lone, following, start_BT)
  end_BT = tf.where(lone, following, end_BT)
  lengths = ids_BT.row_lengths()
  return (
    ids_BT,
    tf.RaggedTensor.from_tensor(start_BT, lengths=lengths),
    tf.RaggedTensor.from_tensor(end_BT, lengths=lengths),
  )
