"""The CoNLL text format of tagged sentences: one word per line, blank lines between sentences.

  EU NNP B-NP B-ORG
  rejects VBZ B-VP O
  German JJ B-NP B-MISC

Each line is `word ... tag`: fields separated by whitespace (spaces or tabs), the word first and
the tag last; the columns between them (CoNLL-2003's POS and chunk tags) are read but not used.
`-DOCSTART-` lines (document boundaries) end the sentence before them and are skipped. This is
the format conlleval reads and CoNLL-2003, WikiANN and most NER corpora are shipped in.
"""

from __future__ import annotations

import os
from pathlib import Path

from albert_jax.errors import UserError

DOCSTART = "-DOCSTART-"


def read_conll(path: str | os.PathLike[str]) -> list[tuple[str, dict]]:
  """The sentences of a CoNLL file as rows `(where, {"tokens", "tags", "file", "line"})`:
  `tags` are the last column's strings, `line` the 1-based line of the first word (word k is on
  line `line + k`). Raises UserError naming the file and line of a line with one field, and for
  a file without sentences."""
  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(f"data file {path} does not exist; check the path given for it")
  if path.is_dir():
    raise UserError(f"{path} is a directory; give the path of the CoNLL file itself")
  rows: list[tuple[str, dict]] = []
  tokens: list[str] = []
  tags: list[str] = []
  first = 0

  def end_sentence() -> None:
    if tokens:
      row = {"tokens": list(tokens), "tags": list(tags), "file": str(path), "line": first}
      rows.append((f"{path} line {first}", row))
    tokens.clear()
    tags.clear()

  with path.open(encoding="utf-8") as f:
    for line_num, line in enumerate(f, start=1):
      fields = line.split()
      if not fields or fields[0] == DOCSTART:
        end_sentence()
        continue
      if len(fields) < 2:
        raise UserError(
          f"{path} line {line_num}: one field ({line.strip()!r}); a CoNLL line is `word ... tag` "
          "(whitespace separated, the tag last), with a blank line between sentences"
        )
      if not tokens:
        first = line_num
      tokens.append(fields[0])
      tags.append(fields[-1])
  end_sentence()
  if not rows:
    raise UserError(
      f"{path} holds no sentences; a CoNLL file has one `word ... tag` line per word and a blank "
      "line between sentences"
    )
  return rows
