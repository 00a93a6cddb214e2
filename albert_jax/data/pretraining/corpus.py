"""Pretraining text: local files (one sentence a line, blank lines between documents) or a
prepared TFDS text dataset, and the tokenizer that turns it into pieces.

The text is preprocessed as Google's data tokenizer (`tokenization.py`) does by default:
whitespace collapsed, NFKD with accents dropped, lowercased, and ``` `` ``` / `''` left as they
are (SentencePiece then makes them `<unk>`). `TOKENIZERS["hf"]` turns them into `"` first, as
HF's `AlbertTokenizer` (and `albert_jax.AlbertTokenizer()`, for the model) does.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from albert_jax.data.pretraining.config import PretrainingDataError
from albert_jax.data.pretraining.instances import Tokenizer


def google_tokenizer() -> Tokenizer:
  """The bundled 30k-clean vocabulary with Google's data preprocessing (quotes kept)."""
  from albert_jax.tokenizer import AlbertTokenizer

  return AlbertTokenizer(replace_quotes=False)


def hf_tokenizer() -> Tokenizer:
  """The bundled 30k-clean vocabulary with HF's preprocessing (``` `` ```/`''` -> `"`)."""
  from albert_jax.tokenizer import AlbertTokenizer

  return AlbertTokenizer()


# Text preprocessing name -> tokenizer factory (zero-argument and picklable, for workers).
TOKENIZERS: dict[str, Callable[[], Tokenizer]] = {"google": google_tokenizer, "hf": hf_tokenizer}
default_tokenizer = google_tokenizer


def resolve_input_files(patterns: str | Sequence[str]) -> list[str]:
  """Expands comma-separated paths/globs into existing, non-empty files (order kept, sorted
  within a glob, duplicates dropped). Raises `PretrainingDataError` naming the bad entry."""
  if isinstance(patterns, str):
    patterns = [patterns]
  items = [p.strip() for pattern in patterns for p in pattern.split(",") if p.strip()]
  if not items:
    raise PretrainingDataError(f"no input given (got {list(patterns)!r})")
  files: list[str] = []
  for item in items:
    if glob.has_magic(item):
      matches = sorted(p for p in glob.glob(item) if os.path.isfile(p))
      if not matches:
        raise PretrainingDataError(f"input glob {item!r} matches no file")
    else:
      if not os.path.exists(item):
        raise PretrainingDataError(f"input file {item!r} does not exist")
      if os.path.isdir(item):
        raise PretrainingDataError(f"input {item!r} is a directory; give files or a glob")
      matches = [item]
    for path in matches:
      if os.path.getsize(path) == 0:
        raise PretrainingDataError(f"input file {path!r} is empty")
      if path not in files:
        files.append(path)
  return files


def read_documents(path: str) -> list[list[str]]:
  """Reads one text file: one sentence per line, blank lines between documents."""
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except UnicodeDecodeError as e:
    raise PretrainingDataError(f"input file {path!r} is not UTF-8 text: {e}") from e
  except OSError as e:
    raise PretrainingDataError(f"cannot read input file {path!r}: {e}") from e
  documents: list[list[str]] = [[]]
  for line in text.splitlines():
    line = line.strip()
    if line:
      documents[-1].append(line)
    elif documents[-1]:
      documents.append([])
  documents = [d for d in documents if d]
  if not documents:
    raise PretrainingDataError(f"input file {path!r} has no text (only whitespace)")
  return documents


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s+[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
  """Heuristic sentence split for running text (TFDS): lines, then after . ! ? (and closing
  quotes or brackets) followed by whitespace and a capital letter or digit. Abbreviations such
  as "Mr. Smith" are split too: good enough for SOP chunking, not for linguistics."""
  sentences = []
  for line in text.splitlines():
    start = 0
    for match in _SENTENCE_END.finditer(line):
      sentences.append(line[start : match.end()].strip())
      start = match.end()
    sentences.append(line[start:].strip())
  return [s for s in sentences if s]


@dataclasses.dataclass(frozen=True)
class TfdsSource:
  """A TFDS text dataset: `name` (e.g. "wikipedia/20230601.en"), `split`, `text_key`.

  The dataset must already be prepared under `data_dir` (default: TFDS's, ~/tensorflow_datasets
  or $TFDS_DATA_DIR); nothing is downloaded. Each example is one document, split into sentences
  by `split_sentences`.
  """

  name: str
  split: str = "train"
  text_key: str = "text"
  data_dir: str | None = None


def tfds_documents(source: TfdsSource) -> Iterator[list[str]]:
  """The documents (lists of sentences) of a prepared TFDS text dataset.

  Checks eagerly (unknown name, dataset not prepared, unknown split), then iterates lazily.
  """
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise PretrainingDataError(
      f"--tfds_name={source.name!r} needs tensorflow_datasets: pip install tensorflow-datasets"
    ) from e
  try:
    builder = tfds.builder(source.name, data_dir=source.data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise PretrainingDataError(f"unknown TFDS dataset {source.name!r}") from e
  if not builder.is_prepared():
    raise PretrainingDataError(
      f"TFDS dataset {source.name!r} is not prepared in {builder.data_dir!r} and this tool does "
      "not download. On a machine with network access run "
      f"`tfds build {source.name} --data_dir=DIR`, then pass --tfds_data_dir=DIR."
    )
  if source.split not in builder.info.splits:
    raise PretrainingDataError(
      f"TFDS dataset {source.name!r} has no split {source.split!r}; "
      f"it has {sorted(builder.info.splits)}"
    )
  dataset = builder.as_dataset(split=source.split, shuffle_files=False)
  return _tfds_sentences(tfds.as_numpy(dataset), source)


def _tfds_sentences(examples: Iterable[dict[str, Any]], source: TfdsSource) -> Iterator[list[str]]:
  for example in examples:
    if source.text_key not in example:
      raise PretrainingDataError(
        f"TFDS dataset {source.name!r} has no feature {source.text_key!r}; it has {sorted(example)}"
      )
    text = example[source.text_key]
    sentences = split_sentences(text.decode("utf-8") if isinstance(text, bytes) else str(text))
    if sentences:
      yield sentences
