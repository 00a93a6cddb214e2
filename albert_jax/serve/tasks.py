"""The raw-text signatures of each head, with HF pipelines' output names and meaning (those of
`albert_jax.pipeline` for the task; tests/test_serve.py compares them):

  sequence_classification  serving_default(text), text_pair(text, text_pair) -> `label` (the
                           best label's name, `id2label`), `score` (its softmax probability; a
                           regression head's raw output), `logits` [B, num_labels]
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


TASKS = {
  "sequence_classification": text_classification,
  "base": feature_extraction,
}
