"""A file of pipeline inputs, read as `python -m albert_jax.predict` reads its `--input`.

JSONL (one object a line, the pipeline's fields: `text` [+ `text_pair`] for
text-classification, `question` + `context` for question-answering, `text` for
token-classification, fill-mask and feature-extraction, `question` + `choices` (a list) [+
`context`] for multiple-choice), TSV or CSV with a header row naming those fields (by the file's
extension), or plain text, one text a line. A record without a field its task needs is an
error naming its line.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from albert_jax.data import local
from albert_jax.errors import UserError

# The fields an input record needs, and the optional ones, per task.
FIELDS = {
  "text-classification": (("text",), ("text_pair",)),
  "question-answering": (("question", "context"), ()),
  "token-classification": (("text",), ()),
  "multiple-choice": (("question", "choices"), ("context",)),  # choices: a JSON list
  "fill-mask": (("text",), ()),
  "feature-extraction": (("text",), ()),
}


def read_records(path: str, text: str) -> list[tuple[int, dict[str, Any]]]:
  """(line number, record) for each input of `text`, read from `path` (named in errors)."""
  lower = path.lower()
  if lower.endswith((".tsv", ".csv")):
    reader = csv.DictReader(io.StringIO(text), delimiter="\t" if lower.endswith(".tsv") else ",")
    return [(reader.line_num, dict(row)) for row in reader]
  lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
  if lower.endswith((".jsonl", ".json")) or (lines and lines[0][1].lstrip().startswith("{")):
    return local.json_lines(text, path)
  return [(n, {"text": line}) for n, line in lines]


def pipeline_inputs(task: str, path: str, records: list[tuple[int, dict[str, Any]]]) -> list[Any]:
  """The records as the pipeline's inputs; a missing field is an error naming its line."""
  if not records:
    raise UserError(f"{path} holds no inputs.")
  required, optional = FIELDS[task]
  inputs = []
  for n, record in records:
    missing = [k for k in required if not _given(k, record.get(k))]
    if missing:
      raise UserError(
        f"{path}:{n}: no {', '.join(repr(k) for k in missing)} field for task {task} "
        f"(got fields {sorted(record)})."
      )
    item = {k: record[k] for k in (*required, *optional) if record.get(k)}
    inputs.append(item["text"] if set(item) == {"text"} else item)
  return inputs


def _given(key: str, value: Any) -> bool:
  if key == "choices":
    return isinstance(value, list) and bool(value)
  return isinstance(value, str) and bool(value)
