"""The raw-text signatures of each head, with HF pipelines' output names and meaning (those of
`albert_jax.pipeline` for the task; tests/test_serve.py compares them):

  sequence_classification  serving_default(text), text_pair(text, text_pair) -> `label` (the
                           best label's name, `id2label`), `score` (its softmax probability; a
                           regression head's raw output), `logits` [B, num_labels]
  token_classification     serving_default(text) -> per piece [B, T] (T: the batch's most
                           pieces; padding has `index` 0 and `entity` ""): `entity`, `score`,
                           `index` (in the sequence, after [CLS]), `word` (the piece; an
                           unknown one: its characters), `start`, `end` (characters of the
                           text as given: `albert_jax.serve.char_offsets`), as the pipeline's
                           aggregation_strategy="none" with ignore_labels=[]
  question_answering       serving_default(question, context) -> `answer`, `start`, `end`
                           (characters of the context as given), `score`: the pipeline's
                           best answer, one window per input (`albert_jax.serve.qa`)
  base                     serving_default(text) -> `last_hidden_state` [B, L, H] and
                           `attention_mask` [B, L] (feature extraction)

Texts are truncated to the model's `max_position_embeddings` tokens, as the pipelines do.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

TEXT = tf.TensorSpec([None], tf.string)


def text_classification(root: Any, token_ids: Any) -> dict[str, Any]:
  labels = tf.constant(root.labels)
  regression = len(root.labels) == 1

  def answer(inputs):
    logits_BK = token_ids(**inputs)["logits"]
    if regression:  # the pipeline's "none": the raw score
      best_B, score_B = tf.zeros_like(logits_BK[:, 0], tf.int64), logits_BK[:, 0]
    else:
      probs_BK = tf.nn.softmax(logits_BK)
      best_B, score_B = tf.argmax(probs_BK, -1), tf.reduce_max(probs_BK, -1)
    return {"label": tf.gather(labels, best_B), "score": score_B, "logits": logits_BK}

  @tf.function(input_signature=[TEXT], autograph=False)
  def serving_default(text):
    return answer(root.tokenizer.encode(text))

  @tf.function(input_signature=[TEXT, TEXT], autograph=False)
  def text_pair(text, text_pair):
    return answer(root.tokenizer.encode(text, text_pair))

  return {"serving_default": serving_default, "text_pair": text_pair}


def feature_extraction(root: Any, token_ids: Any) -> dict[str, Any]:
  @tf.function(input_signature=[TEXT], autograph=False)
  def serving_default(text):
    inputs = root.tokenizer.encode(text)
    out = token_ids(**inputs)
    return {
      "last_hidden_state": out["last_hidden_state"],
      "attention_mask": inputs["attention_mask"],
    }

  return {"serving_default": serving_default}


def token_classification(root: Any, token_ids: Any) -> dict[str, Any]:
  from albert_jax.serve.char_offsets import tokenize_with_offsets

  labels = tf.constant(root.labels)
  tokenizer = root.tokenizer

  @tf.function(input_signature=[TEXT], autograph=False)
  def serving_default(text):
    ids, start, end = tokenize_with_offsets(tokenizer, text)
    keep = tf.minimum(ids.row_lengths(), tokenizer.max_length - 2)
    ids, start, end = (x[:, : tokenizer.max_length - 2] for x in (ids, start, end))
    ones = tf.ones_like(keep[:, None], tf.int32)
    cls = tf.RaggedTensor.from_tensor(ones * tokenizer.cls)
    sep = tf.RaggedTensor.from_tensor(ones * tokenizer.sep)
    row = tf.concat([cls, ids, sep], axis=1)
    inputs = {
      "input_ids": row.to_tensor(tokenizer.pad),
      "attention_mask": tf.ones_like(row).to_tensor(0),
      "token_type_ids": tf.zeros_like(row).to_tensor(0),
    }
    n = tf.shape(ids.to_tensor(0))[1]
    logits_BTK = token_ids(**inputs)["logits"][:, 1 : n + 1]
    probs_BTK = tf.nn.softmax(logits_BTK)
    valid_BT = tf.sequence_mask(keep, n)
    ids_BT, start_BT, end_BT = ids.to_tensor(0), start.to_tensor(0), end.to_tensor(0)
    unk = tf.equal(ids_BT, tokenizer.unk)
    text_BT = tf.broadcast_to(text[:, None], tf.shape(ids_BT))
    cut = tf.strings.substr(text_BT, start_BT, end_BT - start_BT, unit="UTF8_CHAR")
    word = tf.where(unk, cut, tf.gather(tokenizer.pieces, ids_BT))
    return {
      "entity": tf.where(valid_BT, tf.gather(labels, tf.argmax(probs_BTK, -1)), ""),
      "score": tf.where(valid_BT, tf.reduce_max(probs_BTK, -1), 0.0),
      "index": tf.where(valid_BT, tf.range(1, n + 1)[None, :], 0),
      "word": tf.where(valid_BT, word, ""),
      "start": tf.where(valid_BT, start_BT, 0),
      "end": tf.where(valid_BT, end_BT, 0),
    }

  return {"serving_default": serving_default}


def question_answering(root: Any, token_ids: Any) -> dict[str, Any]:
  from albert_jax.serve import qa

  return qa.question_answering(root, token_ids)


TASKS = {
  "sequence_classification": text_classification,
  "token_classification": token_classification,
  "question_answering": question_answering,
  "base": feature_extraction,
}
