"""SQuAD v1.1 / v2.0: span features with a sliding window, and n-best span decoding.

Examples: `{"id", "title", "context", "question", "answers": [{"text", "answer_start"}],
"is_impossible"}`, from the official JSON files or tensorflow-datasets' squad builders.

Features (as BERT's and ALBERT's run_squad): the question is cut to `max_query_length` pieces;
the context's pieces are cut into windows of at most `max_seq_length - len(question) - 3`
pieces, each starting `doc_stride` pieces after the one before; each window is one feature
`[CLS] question [SEP] window [SEP]` (token types 0, then 1 from the window on). A piece can sit
in several windows; it is scored only in the window where it has the most context on its
shorter side (`token_is_max_context`; ties go to the earlier window). Training labels are the
answer's first and last piece inside the window, or `[CLS]` (0, 0) when the answer is not
wholly in the window or the question has no answer (v2).

Offsets (`albert_jax.offsets.tokenize_with_offsets`). Pieces are mapped back to character
spans of the *original* context, so a predicted span is cut out of the context exactly as
written (accents, spacing, quotes kept):
1. `normalize_with_map` repeats the tokenizer's text preprocessing (strip and collapse
   whitespace, `` and '' to ", NFKD and dropping combining marks, lowercasing) one character
   at a time and records, for every normalized character, the original character it came from;
2. the pieces joined (`▁` read as a space) are aligned with the normalized text: identical in
   the common case; where SentencePiece's own normalization changed something, a
   `difflib.SequenceMatcher` alignment maps matching characters, and replaced runs map to the
   run they replaced;
3. a piece's span runs from the original character of its first non-space character to just
   past that of its last, extended over any following original characters that normalization
   dropped (a combining accent written as its own character, the second backquote of ``).
A piece of only `▁` gets (-1, -1): it can be inside an answer but cannot start or end one.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from albert_jax import metrics as metrics_lib
from albert_jax.offsets import tokenize_with_offsets

SPIECE_UNDERLINE = "▁"
DOC_STRIDE = 128
MAX_QUERY_LENGTH = 64
N_BEST_SIZE = 20
MAX_ANSWER_LENGTH = 30


# ---- examples ---------------------------------------------------------------------------------


def examples_from_rows(task, rows: list[tuple[str, dict[str, Any]]], split: str) -> list[dict]:
  """Checked examples; tfds rows' `answers` ({'text': [...], 'answer_start': [...]}) become
  lists of answer dicts as in the JSON files."""
  examples, seen = [], {}
  for where, row in rows:
    for key in ("id", "context", "question"):
      if not isinstance(row.get(key), str):
        raise ValueError(f"{where}: field {key!r} is {row.get(key)!r}; it must be text")
    if row["id"] in seen:
      raise ValueError(f"{where}: question id {row['id']!r} also used at {seen[row['id']]}")
    seen[row["id"]] = where
    impossible = bool(row.get("is_impossible", False))
    if impossible and task.name == "squad_v1":
      raise ValueError(
        f"{where}: question {row['id']!r} is marked is_impossible, which SQuAD v1.1 has not; "
        "use the task squad_v2 for this data"
      )
    answers = [] if impossible else _answers(row.get("answers", []), where)
    if not impossible and not answers and not split.startswith("test"):
      raise ValueError(
        f"{where}: question {row['id']!r} has no answers and is not is_impossible; give it an "
        "answer (text, answer_start) or mark it is_impossible (squad_v2)"
      )
    examples.append(
      {
        "id": row["id"],
        "title": row.get("title", ""),
        "context": row["context"],
        "question": row["question"],
        "answers": answers,
        "is_impossible": impossible,
      }
    )
  return examples


def _answers(answers: Any, where: str) -> list[dict[str, Any]]:
  if isinstance(answers, dict):  # tfds: parallel lists (tfds' random mock data: unequal ones)
    answers = [
      {"text": t, "answer_start": s}
      for t, s in zip(answers.get("text", []), answers.get("answer_start", []), strict=False)
    ]
  checked = []
  for answer in answers:
    text, start = (
      (answer.get("text"), answer.get("answer_start")) if isinstance(answer, dict) else (None, None)
    )
    if not isinstance(text, str) or isinstance(start, bool) or not isinstance(start, int):
      raise ValueError(f"{where}: answer {answer!r} must be {{'text': str, 'answer_start': int}}")
    checked.append({"text": text, "answer_start": start})
  return checked


# ---- offsets ----------------------------------------------------------------------------------


def context_pieces(tokenizer: Any, context: str) -> tuple[list[int], np.ndarray]:
  """The context's piece ids and each piece's (start, end) characters in `context` [T, 2]
  (`albert_jax.offsets.tokenize_with_offsets`)."""
  pieces, offsets = tokenize_with_offsets(tokenizer, context)
  return list(tokenizer.convert_tokens_to_ids(pieces)), offsets


def char_span_to_tokens(offsets: np.ndarray, start: int, end: int) -> tuple[int, int] | None:
  """The first and last piece overlapping characters [start, end), or None if there is none."""
  valid = offsets[:, 0] >= 0
  first = np.flatnonzero(valid & (offsets[:, 1] > start))
  last = np.flatnonzero(valid & (offsets[:, 0] < end))
  if not len(first) or not len(last) or first[0] > last[-1]:
    return None
  return int(first[0]), int(last[-1])


def answer_char_span(example: dict[str, Any]) -> tuple[int, int] | None:
  """[start, end) of the first answer in the context, or None if it is not found there."""
  if example["is_impossible"] or not example["answers"]:
    return None
  answer = example["answers"][0]
  start, text = answer["answer_start"], answer["text"]
  found = example["context"][start : start + len(text)]
  if found == text or (text.split() and found.split() == text.split()):
    return start, start + len(text)
  return None


# ---- features ---------------------------------------------------------------------------------


def doc_windows(num_tokens: int, max_tokens: int, doc_stride: int) -> list[tuple[int, int]]:
  """(start, length) of each window over `num_tokens` context pieces (BERT's doc spans)."""
  windows, start = [], 0
  while True:
    length = min(num_tokens - start, max_tokens)
    windows.append((start, length))
    if start + length >= num_tokens:
      return windows
    start += min(length, doc_stride)


def max_context_mask(windows: list[tuple[int, int]], w: int) -> np.ndarray:
  """For each piece of window `w`: is `w` the window where it has the most context."""
  start, length = windows[w]
  positions = np.arange(start, start + length)
  best_score = np.full(length, -np.inf)
  best = np.full(length, -1)
  for v, (s, n) in enumerate(windows):
    inside = (positions >= s) & (positions < s + n)
    score = np.minimum(positions - s, s + n - 1 - positions) + 0.01 * n
    better = inside & (score > best_score)
    best_score = np.where(better, score, best_score)
    best = np.where(better, v, best)
  return best == w


def featurize(
  task,
  examples: list[dict],
  tokenizer,
  max_seq_length: int,
  *,
  doc_stride: int = DOC_STRIDE,
  max_query_length: int | None = None,
  training: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Window features for `examples` (see the module docstring).

  doc_stride: pieces from one window's start to the next one's.
  max_query_length: pieces of the question kept; None for 64, or half of `max_seq_length` when
    that is less.
  training: drop examples whose answer text is not at its answer_start in the context (BERT
    does so for training); when False every example keeps its features, labelled (0, 0) then.

  Returns arrays (`input_ids`, `attention_mask`, `token_type_ids` [N, L], `start_positions`,
  `end_positions`, `example_index` [N]) and meta, per feature: `example_id` (list of str),
  `context_start` [N] (sequence position of the window's first piece), and lists of per-window
  arrays `offsets` [T_i, 2] (each window piece's characters in the original context) and
  `token_is_max_context` [T_i].
  """
  if max_query_length is None:
    max_query_length = min(MAX_QUERY_LENGTH, max_seq_length // 2)
  if doc_stride < 1 or max_query_length < 1:
    raise ValueError(
      f"doc_stride={doc_stride} and max_query_length={max_query_length} must be >= 1"
    )
  if max_seq_length - max_query_length - 3 < 1:
    raise ValueError(
      f"max_seq_length={max_seq_length} leaves no room for the context after a question of "
      f"max_query_length={max_query_length} and 3 special tokens; raise max_seq_length or lower "
      "max_query_length"
    )
  cls_id, sep_id, pad_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
  contexts: dict[str, tuple[list[int], np.ndarray]] = {}
  rows: dict[str, list[Any]] = {
    key: [] for key in ("input_ids", "attention_mask", "token_type_ids", "start", "end")
  }
  meta: dict[str, list[Any]] = {
    "example_id": [],
    "example_index": [],
    "context_start": [],
    "offsets": [],
    "token_is_max_context": [],
  }
  dropped = []
  for index, example in enumerate(examples):
    query = list(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(example["question"])))
    query = query[:max_query_length]
    if example["context"] not in contexts:
      contexts[example["context"]] = context_pieces(tokenizer, example["context"])
    doc_ids, doc_offsets = contexts[example["context"]]
    char_span = answer_char_span(example)
    answer = None if char_span is None else char_span_to_tokens(doc_offsets, *char_span)
    if training and answer is None and not example["is_impossible"]:
      dropped.append(example["id"])
      continue
    windows = doc_windows(len(doc_ids), max_seq_length - len(query) - 3, doc_stride)
    context_start = len(query) + 2
    for w, (start, length) in enumerate(windows):
      ids = [cls_id, *query, sep_id, *doc_ids[start : start + length], sep_id]
      padding = [0] * (max_seq_length - len(ids))
      rows["input_ids"].append(ids + [pad_id] * len(padding))
      rows["attention_mask"].append([1] * len(ids) + padding)
      rows["token_type_ids"].append([0] * context_start + [1] * (length + 1) + padding)
      inside = answer is not None and start <= answer[0] and answer[1] < start + length
      shift = context_start - start
      rows["start"].append(answer[0] + shift if inside else 0)
      rows["end"].append(answer[1] + shift if inside else 0)
      meta["example_id"].append(example["id"])
      meta["example_index"].append(index)
      meta["context_start"].append(context_start)
      meta["offsets"].append(doc_offsets[start : start + length])
      meta["token_is_max_context"].append(max_context_mask(windows, w))
  if dropped:
    logging.warning(
      "Dropped %d of %d training questions whose answer text is not at its answer_start: %s",
      len(dropped),
      len(examples),
      ", ".join(dropped[:10]),
    )
  if not rows["input_ids"]:
    raise ValueError(
      f"none of the {len(examples)} training questions has its answer text at its answer_start "
      "in the context; check the answers' answer_start offsets"
    )
  arrays = {
    "input_ids": np.array(rows["input_ids"], np.int32),
    "attention_mask": np.array(rows["attention_mask"], np.int32),
    "token_type_ids": np.array(rows["token_type_ids"], np.int32),
    "start_positions": np.array(rows["start"], np.int32),
    "end_positions": np.array(rows["end"], np.int32),
    "example_index": np.array(meta.pop("example_index"), np.int32),
  }
  meta["context_start"] = np.array(meta["context_start"], np.int32)
  return arrays, meta


# ---- predictions ------------------------------------------------------------------------------


def postprocess(
  task,
  examples: list[dict],
  features,
  outputs: dict[str, np.ndarray],
  *,
  n_best_size: int = N_BEST_SIZE,
  max_answer_length: int = MAX_ANSWER_LENGTH,
  null_score_diff_threshold: float = 0.0,
) -> tuple[dict[str, str], dict[str, float] | None, dict[str, float]]:
  """Answer texts (and v2 null odds) per question id, and the official SQuAD metrics.

  For each example, over all its windows: the `n_best_size` highest start and end logits give
  candidate spans; a span counts if both ends are context pieces with characters, end >= start,
  it is at most `max_answer_length` pieces long and its start has max context in the window.
  The best scoring (start + end logit) span is the answer. v2: the null score is the lowest
  start[CLS] + end[CLS] over the windows; null_odds = null score - best span score, and the
  answer is '' when null_odds > `null_score_diff_threshold` (or when no span counts).
  """
  start_logits, end_logits = outputs["start_logits"], outputs["end_logits"]
  length = features.arrays["input_ids"].shape[1]
  for name, logits in (("start_logits", start_logits), ("end_logits", end_logits)):
    if logits.shape != (len(features), length):
      raise ValueError(f"{name} must have shape [{len(features)}, {length}], got {logits.shape}")
  rows_of: dict[int, list[int]] = {}
  for row, index in enumerate(features.arrays["example_index"]):
    rows_of.setdefault(int(index), []).append(row)
  v2 = task.name == "squad_v2"
  answers: dict[str, str] = {}
  null_odds: dict[str, float] = {}
  for index, rows in rows_of.items():
    example = examples[index]
    spans = [
      span
      for row in rows
      for span in _candidate_spans(
        features.meta,
        row,
        example["context"],
        start_logits[row],
        end_logits[row],
        n_best_size,
        max_answer_length,
      )
    ]
    spans.sort(key=lambda span: -span[0])  # stable: ties keep window, start, end rank order
    best_score, best_text = spans[0] if spans else (-np.inf, "")
    if v2:
      null_score = min(float(start_logits[row][0] + end_logits[row][0]) for row in rows)
      null_odds[example["id"]] = null_score - best_score
      answers[example["id"]] = (
        "" if null_odds[example["id"]] > null_score_diff_threshold else best_text
      )
    else:
      answers[example["id"]] = best_text
  labelled = all(ex["answers"] or ex["is_impossible"] for ex in examples)
  if not labelled:
    return answers, null_odds if v2 else None, {}
  scores = metrics_lib.squad_evaluate(
    _dataset(examples),
    answers,
    na_probs=null_odds if v2 else None,
    version="2.0" if v2 else "1.1",
  )
  return answers, null_odds if v2 else None, scores


def _candidate_spans(meta, row, context, start_L, end_L, n_best_size, max_answer_length):
  """(score, text) of the valid spans among one window's top start x top end positions."""
  offsets, max_context = meta["offsets"][row], meta["token_is_max_context"][row]
  starts = np.argsort(-start_L, kind="stable")[:n_best_size]
  ends = np.argsort(-end_L, kind="stable")[:n_best_size]
  start_k = _window_piece(starts, int(meta["context_start"][row]), offsets)
  end_k = _window_piece(ends, int(meta["context_start"][row]), offsets)
  spans = []
  for s, a in zip(starts, start_k, strict=True):
    if a < 0 or not max_context[a]:
      continue
    for e, b in zip(ends, end_k, strict=True):
      if b >= 0 and s <= e < s + max_answer_length:
        spans.append((float(start_L[s] + end_L[e]), context[offsets[a, 0] : offsets[b, 1]]))
  return spans


def _window_piece(positions: np.ndarray, context_start: int, offsets: np.ndarray) -> np.ndarray:
  """Index into the window's pieces of each sequence position; -1 where no span may end."""
  if not len(offsets):
    return np.full(len(positions), -1)
  k = positions - context_start
  inside = (k >= 0) & (k < len(offsets))
  has_chars = offsets[np.clip(k, 0, len(offsets) - 1), 0] >= 0
  return np.where(inside & has_chars, k, -1)


def _dataset(examples: list[dict]) -> list[dict]:
  """The examples as a SQuAD JSON `data` list, for the official evaluation."""
  qas = [
    {
      "id": ex["id"],
      "question": ex["question"],
      "answers": ex["answers"],
      "is_impossible": ex["is_impossible"],
    }
    for ex in examples
  ]
  return [{"title": "", "paragraphs": [{"context": "", "qas": qas}]}]


def prediction_files(task, predictions, split: str) -> dict[str, str]:
  """`predictions.json` (question id -> answer text) and, for v2, `null_odds.json`."""
  files = {"predictions.json": json.dumps(predictions.values, indent=2, ensure_ascii=False)}
  if predictions.null_odds is not None:
    files["null_odds.json"] = json.dumps(predictions.null_odds, indent=2)
  return files
