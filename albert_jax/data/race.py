"""RACE: reading comprehension as four-way multiple choice.

Rows are articles (`article`, `questions`, `options` (4 per question), `answers` (letters),
`id`/`example_id`: the original release and tensorflow-datasets' race builders) or single
questions (`article`, `question`, `options`, `answer`, optional `id`: a JSONL line). A test
split may lack answers.

Examples: `{"id", "article", "question", "options": [4 str], "label": 0..3 (-1: none),
"level": "high" | "middle" | ""}`, one per question; ids are `<article id>-<question number>`.

Features, as Google's ALBERT RACE code makes them: per option `[CLS] article [SEP] qa [SEP]`
with qa = the question with its '_' blanks replaced by the option, or `question + ' ' + option`
when it has no blank; qa keeps its last `max_qa_length` (128) pieces, the article its first
`max_seq_length - 3 - len(qa)`. Arrays are [N, 4, L]; `label` [N] is the answer's index.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from albert_jax import metrics as metrics_lib

LETTERS = ("A", "B", "C", "D")
MAX_QA_LENGTH = 128
UNLABELED = -1


def examples_from_rows(task, rows: list[tuple[str, dict[str, Any]]], split: str) -> list[dict]:
  """One checked example per question; raises ValueError naming the row and field at fault."""
  may_lack_labels = split.startswith("test")
  examples = []
  for position, (where, row) in enumerate(rows):
    article_id = str(row.get("id", row.get("example_id", position)))
    if "questions" in row:  # an article with its questions
      for name in ("article", "options"):
        _require(row, name, where)
      answers = row.get("answers") or [None] * len(row["questions"])
      if not len(row["questions"]) == len(row["options"]) == len(answers):
        raise ValueError(
          f"{where}: {len(row['questions'])} questions, {len(row['options'])} option lists and "
          f"{len(answers)} answers; RACE needs one option list and one answer per question"
        )
      for q, (question, options, answer) in enumerate(
        zip(row["questions"], row["options"], answers, strict=True)
      ):
        examples.append(
          _example(
            f"{article_id}-{q}",
            row,
            question,
            options,
            answer,
            f"{where} question {q}",
            may_lack_labels,
          )
        )
    else:  # a single question
      for name in ("article", "question", "options"):
        _require(row, name, where)
      examples.append(
        _example(
          str(row.get("id", f"{article_id}-0")),
          row,
          row["question"],
          row["options"],
          row.get("answer"),
          where,
          may_lack_labels,
        )
      )
  if task.name != "race_all":
    level = task.name.removeprefix("race_")
    examples = [ex for ex in examples if ex["level"] in (level, "")]
  return examples


def _require(row: dict[str, Any], name: str, where: str) -> None:
  if name not in row:
    raise ValueError(
      f"{where}: missing field {name!r}; a RACE row has article, questions, options, answers "
      f"(or article, question, options, answer); found {', '.join(map(str, row))}"
    )


def _example(qid, row, question, options, answer, where, may_lack_labels) -> dict[str, Any]:
  if not isinstance(question, str) or not isinstance(row["article"], str):
    raise ValueError(f"{where}: article and question must be text")
  if not isinstance(options, list) or len(options) != len(LETTERS):
    raise ValueError(f"{where}: options {options!r:.200} must be a list of {len(LETTERS)} texts")
  if not all(isinstance(option, str) for option in options):
    raise ValueError(f"{where}: options {options!r:.200} must all be text")
  if answer is None and may_lack_labels:
    label = UNLABELED
  elif isinstance(answer, str) and answer.strip() in LETTERS:
    label = LETTERS.index(answer.strip())
  else:
    raise ValueError(f"{where}: answer {answer!r} is not one of {', '.join(LETTERS)}")
  return {
    "id": qid,
    "article": row["article"],
    "question": question,
    "options": list(options),
    "label": label,
    "level": row.get("level", ""),
  }


def qa_text(question: str, option: str) -> str:
  """The second segment for one option: blanks ('_') filled with it, else appended."""
  return question.replace("_", option) if "_" in question else f"{question} {option}"


def featurize(
  task, examples: list[dict], tokenizer, max_seq_length: int, *, max_qa_length: int | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Arrays [N, 4, max_seq_length] (see the module docstring), and no meta.

  max_qa_length: None for 128 (Google's value), or half of `max_seq_length` when that is less.
  """
  if max_qa_length is None:
    max_qa_length = min(MAX_QA_LENGTH, max_seq_length // 2)
  if not 1 <= max_qa_length <= max_seq_length - 4:
    raise ValueError(
      f"max_qa_length={max_qa_length} must be in 1..{max_seq_length - 4} so that the article "
      f"keeps a piece in max_seq_length={max_seq_length}"
    )
  articles: dict[str, list[int]] = {}
  shape = (len(examples), len(LETTERS), max_seq_length)
  arrays = {
    name: np.zeros(shape, np.int32) for name in ("input_ids", "attention_mask", "token_type_ids")
  }
  arrays["input_ids"][:] = tokenizer.pad_token_id
  for n, example in enumerate(examples):
    if example["article"] not in articles:
      articles[example["article"]] = _ids(tokenizer, example["article"])
    article = articles[example["article"]]
    for c, option in enumerate(example["options"]):
      qa = _ids(tokenizer, qa_text(example["question"], option))[-max_qa_length:]
      kept = article[: max_seq_length - 3 - len(qa)]
      ids = [tokenizer.cls_token_id, *kept, tokenizer.sep_token_id, *qa, tokenizer.sep_token_id]
      arrays["input_ids"][n, c, : len(ids)] = ids
      arrays["attention_mask"][n, c, : len(ids)] = 1
      arrays["token_type_ids"][n, c, len(kept) + 2 : len(ids)] = 1
  arrays["label"] = np.array([ex["label"] for ex in examples], np.int32)
  arrays["example_index"] = np.arange(len(examples), dtype=np.int32)
  return arrays, {}


def _ids(tokenizer, text: str) -> list[int]:
  return list(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)))


def postprocess(task, examples: list[dict], features, outputs: dict[str, np.ndarray]):
  """The chosen letter per question id, and accuracy (also per level for race_all)."""
  logits = outputs["logits"]
  if logits.ndim != 2 or logits.shape[1] != len(LETTERS):
    raise ValueError(f"RACE logits must have shape [N, {len(LETTERS)}], got {logits.shape}")
  choices = np.argmax(logits, axis=-1)
  chosen = [examples[i] for i in features.arrays["example_index"]]
  values = {ex["id"]: LETTERS[c] for ex, c in zip(chosen, choices, strict=True)}
  labels = np.array([ex["label"] for ex in chosen])
  if np.any(labels == UNLABELED):
    return values, None, {}
  scores = {"accuracy": metrics_lib.accuracy(choices, labels)}
  if task.name == "race_all":
    for level in ("high", "middle"):
      mask = np.array([ex["level"] == level for ex in chosen])
      if mask.any():
        scores[f"accuracy_{level}"] = metrics_lib.accuracy(choices[mask], labels[mask])
  return values, None, scores


def prediction_files(task, predictions, split: str) -> dict[str, str]:
  """`answers.json`: question id -> the chosen letter."""
  return {"answers.json": json.dumps(predictions.values, indent=2)}
