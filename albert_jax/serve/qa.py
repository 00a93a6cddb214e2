"""Question answering's raw-text signature: `serving_default(question, context)` -> `answer`,
`start`, `end`, `score` [B], as `albert_jax.pipeline("question-answering")` gives its one best
answer (top_k=1, align_to_words, no impossible answer) on a context that fits one window.

One window per input: `[CLS] question [SEP] context [SEP]` with the question cut to
`question_length(window)` pieces and the context to what is left of `window` (the pipeline's
`max_seq_len`: min(384, max_position_embeddings)); the pipeline would cut a longer context
into `doc_stride` windows and also rank the spans of the later ones (docs/serving.md).

Ranking, as the pipeline's `_rank`: the start and end logits over `[CLS]` and the context
pieces become probabilities (the others masked with -10000, then softmax); a span of at most
`MAX_ANSWER_LEN` pieces, start <= end, scores p(start) p(end); the best `CANDIDATES` spans
(ties: the first in (start, end) order) are widened to whole words (a word starts at a `▁`
piece, and a user-defined symbol written as itself in the text is a word of its own) and cut
at the window's edge; spans whose text is equal, ignoring case, are merged into the first one
with the sum of their scores; the best of those, trimmed of whitespace, is the answer.
`start`/`end` are characters of the context as given (`albert_jax.serve.char_offsets`; a
piece starting a word also holds the whitespace before it, as transformers' offsets do, which
the trim takes off again). An input the pipeline refuses (a question or context without text)
gets answer "", start 0, end 0, score 0.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from albert_jax.serve.char_offsets import SPIECE_UNDERLINE, tokenize_with_offsets
from albert_jax.serve.text import SPACE, lower

MAX_SEQ_LEN = 384  # the pipeline's default window, cut to the model's positions
MAX_QUESTION_LEN = 64  # squad_v1's max_query_length
MAX_ANSWER_LEN = 15  # the pipeline's max_answer_len default
CANDIDATES = 12  # the spans widened to words and merged: top_k * 2 + 10 at top_k = 1
MASKED = -10000.0  # the logit of a position that cannot be in an answer (as the pipeline)
TEXT = tf.TensorSpec([None], tf.string)


def window_size(max_positions: int) -> int:
  """The one window's pieces: the pipeline's default `max_seq_len`."""
  return min(MAX_SEQ_LEN, max_positions)


def question_length(window: int) -> int:
  """The question's pieces at most (the pipeline's `max_question_len`): at most half the
  window, so that any question leaves room for the context."""
  return min(MAX_QUESTION_LEN, window // 2)


def _per_piece(rows: tf.RaggedTensor, fill) -> tf.Tensor:
  """[B, T + 1]: dense, with one more column of `fill` (so that T >= 1)."""
  dense = rows.to_tensor(fill)
  return tf.concat([dense, tf.fill([tf.shape(dense)[0], 1], tf.cast(fill, dense.dtype))], 1)


def _substr(text_B: tf.Tensor, start_BK: tf.Tensor, end_BK: tf.Tensor) -> tf.Tensor:
  text_BK = tf.broadcast_to(text_B[:, None], tf.shape(start_BK))
  return tf.strings.substr(text_BK, start_BK, end_BK - start_BK, unit="UTF8_CHAR")


def _has_text(text_B: tf.Tensor) -> tf.Tensor:
  return ~tf.strings.regex_full_match(text_B, f"{SPACE}*")


def question_answering(root: Any, token_ids: Any) -> dict[str, Any]:
  tokenizer = root.tokenizer
  window = window_size(tokenizer.max_length)
  max_question = question_length(window)
  symbols = tf.constant(sorted(root.symbols) or [""])
  is_symbol_V = tf.reduce_any(tf.equal(tokenizer.pieces[:, None], symbols[None, :]), axis=1)

  @tf.function(input_signature=[TEXT, TEXT], autograph=False)
  def serving_default(question, context):
    query = tokenizer.tokenize(question)[:, :max_question]
    ids, start, end = tokenize_with_offsets(tokenizer, context)  # all the context's pieces
    n_q = tf.cast(query.row_lengths(), tf.int32)
    keep_B = tf.minimum(tf.cast(ids.row_lengths(), tf.int32), window - 3 - n_q)
    kept = tf.ragged.boolean_mask(
      ids, tf.ragged.range(ids.row_lengths()) < tf.cast(keep_B, tf.int64)[:, None]
    )
    ones = tf.ones_like(n_q[:, None])
    cls = tf.RaggedTensor.from_tensor(ones * tokenizer.cls)
    sep = tf.RaggedTensor.from_tensor(ones * tokenizer.sep)
    parts = [cls, query, sep, kept, sep]
    row = tf.concat(parts, axis=1)
    types = tf.concat(
      [tf.zeros_like(p) for p in parts[:3]] + [tf.ones_like(p) for p in parts[3:]], 1
    )
    out = token_ids(
      input_ids=row.to_tensor(tokenizer.pad),
      attention_mask=tf.ones_like(row).to_tensor(0),
      token_type_ids=types.to_tensor(0),
    )

    ids_BT, start_BT, end_BT = (_per_piece(x, 0) for x in (ids, start, end))
    n_B = tf.cast(ids.row_lengths(), tf.int32)
    t = tf.shape(ids_BT)[1]
    piece_T = tf.range(t)
    valid_BT = piece_T[None, :] < keep_B[:, None]  # in the window

    def probabilities(logits_BL):
      """Softmax over [CLS] and the window's context pieces: [B, T]."""
      at_BT = tf.minimum(n_q[:, None] + 2 + piece_T[None, :], tf.shape(logits_BL)[1] - 1)
      context_BT = tf.where(valid_BT, tf.gather(logits_BL, at_BT, batch_dims=1), MASKED)
      return tf.nn.softmax(tf.concat([logits_BL[:, :1], context_BT], axis=1))[:, 1:]

    p_start_BT, p_end_BT = probabilities(out["start_logits"]), probabilities(out["end_logits"])
    score_BSE = p_start_BT[:, :, None] * p_end_BT[:, None, :]
    length_SE = piece_T[None, :] - piece_T[:, None] + 1
    ok_BSE = (
      ((length_SE >= 1) & (length_SE <= MAX_ANSWER_LEN))[None]
      & valid_BT[:, :, None]
      & valid_BT[:, None, :]
      & (score_BSE > 0)
    )
    flat_BX = tf.reshape(tf.where(ok_BSE, score_BSE, -1.0), [tf.shape(ids_BT)[0], -1])
    flat_BX = tf.concat([flat_BX, -tf.ones([tf.shape(flat_BX)[0], CANDIDATES])], 1)
    top_BK, index_BK = tf.math.top_k(flat_BX, CANDIDATES)  # equal scores: lower index first
    found_BK = top_BK > 0
    s_BK = tf.minimum(index_BK // t, t - 1)
    e_BK = tf.minimum(index_BK % t, t - 1)

    # words: a ▁ piece starts one, a user-defined symbol written as such is one
    piece_BT = tf.gather(tokenizer.pieces, ids_BT)
    marked_BT = tf.strings.substr(piece_BT, 0, 1, unit="UTF8_CHAR") == SPIECE_UNDERLINE
    literal_BT = tf.gather(is_symbol_V, ids_BT) & (_substr(context, start_BT, end_BT) == piece_BT)
    literal_before = tf.concat([tf.zeros_like(literal_BT[:, :1]), literal_BT[:, :-1]], 1)
    begins_BT = (piece_T[None, :] == 0) | marked_BT | literal_BT | literal_before
    word_BT = tf.cumsum(tf.cast(begins_BT, tf.int32), axis=1) - 1
    in_text_BT = piece_T[None, :] < n_B[:, None]
    word_BT = tf.where(in_text_BT, word_BT, tf.int32.max)
    first_BT = tf.searchsorted(word_BT, word_BT, side="left", out_type=tf.int32)
    last_BT = tf.searchsorted(word_BT, word_BT, side="right", out_type=tf.int32) - 1
    s_BK = tf.gather(first_BT, s_BK, batch_dims=1)
    e_BK = tf.minimum(tf.gather(last_BT, e_BK, batch_dims=1), tf.maximum(keep_B[:, None] - 1, 0))

    # characters as transformers' offsets: a word's first piece holds the whitespace before it
    chars_BN = tf.strings.unicode_split(context, "UTF-8").to_tensor("")
    space_BN = tf.strings.regex_full_match(chars_BN, SPACE)
    space_BN = tf.concat([tf.zeros_like(space_BN[:, :1]), space_BN], 1)  # [B, N + 1]: before
    n_chars_B = tf.strings.length(context, unit="UTF8_CHAR")
    start_BT = tf.minimum(start_BT, n_chars_B[:, None])
    space_before_BT = tf.gather(space_BN, start_BT, batch_dims=1)
    span_start_BT = tf.where(marked_BT & space_before_BT, start_BT - 1, start_BT)
    span_end_BT = tf.where(piece_BT == SPIECE_UNDERLINE, span_start_BT + 1, end_BT)
    a_BK = tf.gather(span_start_BT, s_BK, batch_dims=1)
    b_BK = tf.maximum(tf.gather(span_end_BT, e_BK, batch_dims=1), a_BK)
    text_BK = _substr(context, a_BK, b_BK)

    # merge equal texts (ignoring case) into the first, scores summed; the best of those
    key_BK = tf.reshape(lower(tf.reshape(text_BK, [-1])), tf.shape(text_BK))
    same_BKK = (
      tf.equal(key_BK[:, :, None], key_BK[:, None, :]) & found_BK[:, :, None] & found_BK[:, None, :]
    )
    total_BK = tf.reduce_sum(tf.where(same_BKK, top_BK[:, None, :], 0.0), axis=-1)
    earlier_KK = tf.range(CANDIDATES)[None, :] < tf.range(CANDIDATES)[:, None]
    repeated_BK = tf.reduce_any(same_BKK & earlier_KK[None], axis=-1)
    best_B = tf.argmax(
      tf.where(found_BK & ~repeated_BK, total_BK, -1.0), axis=-1, output_type=tf.int32
    )
    text_B = tf.gather(text_BK, best_B, batch_dims=1)
    a_B, b_B = tf.gather(a_BK, best_B, batch_dims=1), tf.gather(b_BK, best_B, batch_dims=1)

    # trimmed of whitespace, unless that is all it is
    chars = lambda x: tf.strings.length(x, unit="UTF8_CHAR")  # noqa: E731
    stripped_B = tf.strings.regex_replace(text_B, f"^{SPACE}+|{SPACE}+$", "")
    lead_B = chars(text_B) - chars(tf.strings.regex_replace(text_B, f"^{SPACE}+", ""))
    trail_B = chars(text_B) - chars(tf.strings.regex_replace(text_B, f"{SPACE}+$", ""))
    blank_B = tf.equal(stripped_B, "")
    a_B = tf.where(blank_B, a_B, a_B + lead_B)
    b_B = tf.where(blank_B, b_B, b_B - trail_B)
    answered_B = tf.reduce_any(found_BK, axis=-1) & _has_text(question) & _has_text(context)
    return {
      "answer": tf.where(answered_B, tf.where(blank_B, text_B, stripped_B), ""),
      "start": tf.where(answered_B, a_B, 0),
      "end": tf.where(answered_B, b_B, 0),
      "score": tf.where(answered_B, tf.gather(total_BK, best_B, batch_dims=1), 0.0),
    }

  return {"serving_default": serving_default}
