"""sha256 of the files a directory holds, recorded when it is written and verified when it is read.

Converted models (in `albert_jax.json`), HF exports and train-state checkpoints (in
`checksums.json`) record `{relative path: sha256}` of their files once complete; a reader
verifies them before using anything, so a damaged or altered file is an error naming it, not
wrong numbers. A directory that records no checksums (written by an older version) is read
unchecked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from albert_jax import files
from albert_jax.errors import UserError

FILE = "checksums.json"  # where HF exports and checkpoints record theirs


def of_files(directory: str | os.PathLike, exclude: tuple[str, ...] = (FILE,)) -> dict[str, str]:
  """{relative path: sha256} of every file under `directory` but those named in `exclude`."""
  directory = Path(directory)
  found = (p for p in directory.rglob("*") if p.is_file())
  names = sorted(p.relative_to(directory).as_posix() for p in found)
  return {name: files.sha256(directory / name) for name in names if name not in exclude}


def verify(
  directory: str | os.PathLike, recorded: Mapping[str, str], recorded_in: str, remedy: str
) -> None:
  """Raises a UserError naming the first file of `directory` that is missing or whose sha256
  is not the one `recorded` (read from `recorded_in`) holds; `remedy` says what to do."""
  directory = Path(directory)
  for name, want in sorted(recorded.items()):
    path = directory / name
    if not path.is_file():
      raise UserError(f"{path} is missing (its checksum is in {recorded_in}). {remedy}")
    if files.sha256(path) != want:
      raise UserError(
        f"{path} does not match its checksum in {recorded_in}: the file is damaged or was "
        f"changed. {remedy}"
      )


def write(directory: str | os.PathLike, *, main_only: bool = False) -> None:
  """Records the checksums of `directory`'s files in `directory/checksums.json`. With
  `main_only`, the other processes of a multi-process run neither hash nor write: listing the
  directory while process 0 writes there, they would hash its temporary file, which the
  rename then removes (FileNotFoundError)."""
  if main_only and not files.is_main_process():
    return
  files.write_json(Path(directory) / FILE, of_files(directory))


def verify_recorded(directory: str | os.PathLike, remedy: str) -> None:
  """Verifies `directory` against its `checksums.json`; without one, returns (unchecked)."""
  recorded = Path(directory) / FILE
  if recorded.is_file():
    try:
      sums = json.loads(recorded.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise UserError(f"{recorded} is damaged ({e}). {remedy}") from None
    verify(directory, sums, str(recorded), remedy)
