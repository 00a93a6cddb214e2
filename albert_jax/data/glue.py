"""GLUE: sentence (pair) classification and STS-B regression.

Rows (tfds records or local table rows) carry the text columns as GLUE / tensorflow-datasets
name them (`COLUMNS`) and `label`: a class id or class name (`Task.label_names`), or a score in
[0, 5] for stsb. A test split may lack labels (tfds marks them -1). An optional `idx` (or `index`)
column is the id used in submission files; without it the row number is used.

Examples: `{"idx": int, "text_a": str, "text_b": str | None, "label": int | float}` (-1: none).
Features: `[CLS] text_a [SEP] (text_b [SEP])`, the longer text cut first (`longest_first`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from albert_jax import metrics as metrics_lib

COLUMNS: dict[str, tuple[str, ...]] = {
  "cola": ("sentence",),
  "sst2": ("sentence",),
  "mrpc": ("sentence1", "sentence2"),
  "qqp": ("question1", "question2"),
  "stsb": ("sentence1", "sentence2"),
  "mnli": ("premise", "hypothesis"),
  "qnli": ("question", "sentence"),
  "rte": ("sentence1", "sentence2"),
  "wnli": ("sentence1", "sentence2"),
}
LABEL_COLUMN = "label"
STSB_RANGE = (0.0, 5.0)
UNLABELED = -1

# GLUE's submission file names; its server wants class names for these tasks, ids for the rest.
SUBMISSION_NAMES = {
  "cola": "CoLA",
  "sst2": "SST-2",
  "mrpc": "MRPC",
  "qqp": "QQP",
  "stsb": "STS-B",
  "mnli": "MNLI",
  "qnli": "QNLI",
  "rte": "RTE",
  "wnli": "WNLI",
}
NAMED_LABEL_TASKS = ("mnli", "qnli", "rte")


def examples_from_rows(task, rows: list[tuple[str, dict[str, Any]]], split: str) -> list[dict]:
  """Checked examples from rows; raises ValueError naming the row, column or value at fault."""
  columns = COLUMNS[task.name]
  may_lack_labels = split.startswith("test")
  examples, seen = [], {}
  for position, (where, row) in enumerate(rows):
    missing = [name for name in columns if name not in row]
    if LABEL_COLUMN not in row and not may_lack_labels:
      missing.append(LABEL_COLUMN)
    if missing:
      raise ValueError(
        f"{where}: missing column(s) {', '.join(missing)}; {task.name} needs columns "
        f"{', '.join((*columns, LABEL_COLUMN))} (found: {', '.join(map(str, row))})"
      )
    texts = [_text(row[name], name, where) for name in columns]
    label = row.get(LABEL_COLUMN, UNLABELED)
    idx = _index(row.get("idx", row.get("index", position)), where)
    if idx in seen:
      raise ValueError(f"{where}: idx {idx} is also the idx of {seen[idx]}; ids must be unique")
    seen[idx] = where
    examples.append(
      {
        "idx": idx,
        "text_a": texts[0],
        "text_b": texts[1] if len(texts) > 1 else None,
        "label": _label(task, label, where, may_lack_labels),
      }
    )
  return examples


def _text(value: Any, column: str, where: str) -> str:
  if not isinstance(value, str):
    raise ValueError(f"{where}: column {column!r} holds {value!r}, not text")
  return value


def _index(value: Any, where: str) -> int:
  try:
    return int(value)
  except (TypeError, ValueError):
    raise ValueError(f"{where}: idx {value!r} is not an integer; fix or drop the column") from None


def _label(task, value: Any, where: str, may_lack_labels: bool) -> int | float:
  """A class id (from an id or a class name) or an stsb score; -1 only in a test split."""
  if may_lack_labels and _as_number(value) == UNLABELED:
    return UNLABELED
  if not task.label_names:  # regression
    score = _as_number(value)
    if score is None or not STSB_RANGE[0] <= score <= STSB_RANGE[1]:
      raise ValueError(
        f"{where}: label {value!r} is not a similarity score in {STSB_RANGE[0]}..{STSB_RANGE[1]}"
      )
    return float(score)
  if isinstance(value, str) and value.strip() in task.label_names:
    return task.label_names.index(value.strip())
  number = _as_number(value)
  if number is not None and number.is_integer() and 0 <= number < len(task.label_names):
    return int(number)
  names = ", ".join(f"{i}={name}" for i, name in enumerate(task.label_names))
  raise ValueError(
    f"{where}: label {value!r} is not in {task.name}'s label set ({names}); use an id or a name"
  )


def _as_number(value: Any) -> float | None:
  if isinstance(value, bool):
    return None
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


def featurize(task, examples: list[dict], tokenizer, max_seq_length: int) -> tuple[dict, dict]:
  """Arrays of `max_seq_length` tokens per example, and no meta."""
  texts_a = [ex["text_a"] for ex in examples]
  texts_b = None if examples[0]["text_b"] is None else [ex["text_b"] for ex in examples]
  encoded = tokenizer(
    texts_a,
    texts_b,
    truncation="longest_first",
    max_length=max_seq_length,
    padding="max_length",
    return_tensors="np",
  )
  arrays = {
    name: np.asarray(encoded[name], np.int32)
    for name in ("input_ids", "attention_mask", "token_type_ids")
  }
  label_dtype = np.float32 if not task.label_names else np.int32
  arrays["label"] = np.array([ex["label"] for ex in examples], label_dtype)
  arrays["example_index"] = np.arange(len(examples), dtype=np.int32)
  return arrays, {}


def postprocess(task, examples: list[dict], features, outputs: dict[str, np.ndarray]):
  """Class ids (argmax) or scores per example idx, and GLUE's metrics when labels are known."""
  logits = outputs["logits"]
  if not task.label_names:
    if logits.ndim == 2 and logits.shape[1] == 1:
      logits = logits[:, 0]
    if logits.ndim != 1:
      raise ValueError(f"stsb logits must have shape [N] or [N, 1], got {logits.shape}")
    preds = logits.astype(np.float64)
  else:
    if logits.ndim != 2 or logits.shape[1] != task.num_labels:
      raise ValueError(
        f"{task.name} logits must have shape [N, {task.num_labels}], got {logits.shape}"
      )
    preds = np.argmax(logits, axis=-1)
  chosen = [examples[i] for i in features.arrays["example_index"]]
  values = {ex["idx"]: pred.item() for ex, pred in zip(chosen, preds, strict=True)}
  labels = np.array([ex["label"] for ex in chosen])
  if np.any(labels == UNLABELED):
    return values, None, {}
  return values, None, metrics_lib.glue_metrics(task.name, preds, labels)


def submission_file_name(task_name: str, split: str) -> str:
  """`CoLA.tsv`, `MNLI-m.tsv` (matched splits), `MNLI-mm.tsv` (mismatched splits), ..."""
  name = SUBMISSION_NAMES[task_name]
  if split.endswith("_mismatched"):
    name += "-mm"
  elif split.endswith("_matched"):
    name += "-m"
  return f"{name}.tsv"


def prediction_files(task, predictions, split: str) -> dict[str, str]:
  """GLUE's submission TSV: `index<TAB>prediction` (class name, class id or score)."""
  lines = ["index\tprediction"]
  for idx, value in predictions.values.items():
    if not task.label_names:
      shown = f"{value:.3f}"
    elif task.name in NAMED_LABEL_TASKS:
      shown = task.label_names[value]
    else:
      shown = str(value)
    lines.append(f"{idx}\t{shown}")
  return {submission_file_name(task.name, split): "\n".join(lines) + "\n"}
