"""Readers for task data kept in local files; the task modules check what the rows hold.

* `read_table`: a `.tsv` (tab separated, first line the header, no quoting: the GLUE files'
  format), a `.csv` (comma separated, header, standard quoting) or a `.jsonl` (one JSON object
  per line) file -> rows as dicts.
* `read_squad`: a SQuAD v1.1 / v2.0 JSON file (`{"data": [{"title", "paragraphs": [{"context",
  "qas": [...]}]}]}`) -> one dict per question, with its paragraph's context and title.
* `read_race`: RACE in the original layout (a directory of one-JSON-object files, e.g.
  `RACE/dev/high`, or one such file) or a `.jsonl` file whose lines are either such article
  objects or single questions (`article`, `question`, `options`, `answer`).

Each row comes as `(where, row)`: `where` names the file and line (or file) for error messages.
Nothing here downloads anything; a missing file raises FileNotFoundError naming the path.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from albert_jax.errors import UserError

Row = tuple[str, dict[str, Any]]

TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl")
RACE_FILE_SUFFIXES = ("", ".txt", ".json")  # the RACE tarball's files end in .txt


def read_table(path: str | os.PathLike[str]) -> list[Row]:
  """The rows of a `.tsv`, `.csv` or `.jsonl` file, each a dict of column -> value."""
  path = _existing_file(path)
  suffix = path.suffix.lower()
  if suffix == ".jsonl":
    return _read_jsonl(path)
  if suffix not in (".tsv", ".csv"):
    raise UserError(
      f"{path}: unknown table format {suffix!r}; use a .tsv, .csv or .jsonl file "
      "(header line with the column names for .tsv and .csv)"
    )
  delimiter, quoting = ("\t", csv.QUOTE_NONE) if suffix == ".tsv" else (",", csv.QUOTE_MINIMAL)
  csv.field_size_limit(sys.maxsize)
  with io.StringIO(read_text(path), newline="") as f:
    reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
    header = next(reader, None)
    if header is None:
      return []
    header = [name.strip() for name in header]
    rows: list[Row] = []
    for values in reader:
      if not values or values == [""]:
        continue  # a blank line
      where = f"{path} line {reader.line_num}"
      if len(values) != len(header):
        raise UserError(
          f"{where}: {len(values)} fields, but the header has {len(header)} ({', '.join(header)}); "
          + (
            "a .tsv file has no quoting, so a field must not contain a tab"
            if delimiter == "\t"
            else "quote fields that contain commas"
          )
        )
      rows.append((where, dict(zip(header, values, strict=True))))
  return rows


def read_squad(path: str | os.PathLike[str]) -> list[Row]:
  """One row per question of a SQuAD-format JSON file: id, title, context, question, answers,
  is_impossible (False when absent, as in v1.1)."""
  path = _existing_file(path)
  data = _load_json(path)
  if not isinstance(data, dict) or not isinstance(data.get("data"), list):
    raise UserError(
      f"{path} is not a SQuAD file: expected a JSON object with a 'data' list "
      '({"version": ..., "data": [{"title": ..., "paragraphs": [...]}]})'
    )
  rows: list[Row] = []
  for a, article in enumerate(data["data"]):
    for p, paragraph in enumerate(_field(article, "paragraphs", f"{path} data[{a}]")):
      where_p = f"{path} data[{a}].paragraphs[{p}]"
      context = _field(paragraph, "context", where_p)
      for q, qa in enumerate(_field(paragraph, "qas", where_p)):
        where = f"{where_p}.qas[{q}]"
        row = {
          "id": str(_field(qa, "id", where)),
          "title": article.get("title", ""),
          "context": context,
          "question": _field(qa, "question", where),
          "answers": qa.get("answers", []),
          "is_impossible": bool(qa.get("is_impossible", False)),
        }
        rows.append((f"{where} (id {row['id']})", row))
  return rows


def read_race(path: str | os.PathLike[str]) -> list[Row]:
  """RACE rows: article objects (`article`, `questions`, `options`, `answers`, `id`) from a
  directory or file of the original release, or the lines of a `.jsonl` file."""
  path = Path(path)
  if path.is_dir():
    files = sorted(
      f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in RACE_FILE_SUFFIXES
    )
    rows = [(str(f), _race_level(_load_json(f), f)) for f in files]
    return rows
  path = _existing_file(path)
  if path.suffix.lower() == ".jsonl":
    return [(where, _race_level(row, path)) for where, row in _read_jsonl(path)]
  return [(str(path), _race_level(_load_json(path), path))]


def _race_level(row: Any, path: Path) -> Any:
  """Adds `level` (high/middle) from the RACE directory layout or file id, if known."""
  if not isinstance(row, dict) or "level" in row:
    return row
  for level in ("high", "middle"):
    if level in path.parts[-2:-1] or str(row.get("id", "")).startswith(level):
      return {**row, "level": level}
  return row


def _read_jsonl(path: Path) -> list[Row]:
  return [(f"{path} line {n}", row) for n, row in json_lines(read_text(path), path)]


def json_lines(text: str, path: str | os.PathLike[str]) -> list[tuple[int, dict[str, Any]]]:
  """(line number, object) for each non-blank line of JSON Lines `text`, read from `path`
  (named in errors, with the line)."""
  rows = []
  for line_num, line in enumerate(io.StringIO(text), start=1):
    if not line.strip():
      continue
    where = f"{path} line {line_num}"
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise UserError(f"{where} is not valid JSON ({e.msg}); fix or remove that line") from None
    if not isinstance(row, dict):
      raise UserError(f"{where}: expected a JSON object per line, got {type(row).__name__}")
    rows.append((line_num, row))
  return rows


def _load_json(path: Path) -> Any:
  try:
    return json.loads(read_text(path))
  except json.JSONDecodeError as e:
    raise UserError(f"{path} is not valid JSON ({e}); fix or replace the file") from None


def read_text(path: str | os.PathLike[str]) -> str:
  """A data file's text: UTF-8, a leading byte-order mark (as Excel and Notepad write) dropped.

  Bytes that are not UTF-8 raise UserError naming the file, the line and the bytes."""
  path = Path(path)
  data = path.read_bytes()
  try:
    return data.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    raise UserError(
      f"{path} line {line} is not UTF-8 (bytes {data[e.start : e.end]!r}); save the file as "
      "UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
    ) from None


def _existing_file(path: str | os.PathLike[str]) -> Path:
  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(f"data file {path} does not exist; check the path given for it")
  if path.is_dir():
    raise UserError(f"{path} is a directory; give the path of the data file itself")
  return path


def _field(obj: Any, key: str, where: str) -> Any:
  if not isinstance(obj, dict) or key not in obj:
    raise UserError(f"{where} has no {key!r} field, which the SQuAD format requires")
  return obj[key]
