"""Atomic writes: a file or a directory appears complete or not at all.

Every output albert_jax writes (metrics, predictions, configs, converted models, exports,
pretraining data) goes through here: the content is written to a temporary sibling and renamed
into place, so a kill, Ctrl-C or full disk never leaves a half-written file. In a multi-process
run, pass `main_only=True` for files that process 0 alone writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from albert_jax.errors import UserError


def is_main_process() -> bool:
  """True on process 0 of a multi-process run (and in a single process)."""
  import jax  # noqa: PLC0415  (only multi-process writers need it)

  return jax.process_index() == 0


def write_bytes(path: str | os.PathLike, data: bytes, *, main_only: bool = False) -> None:
  """Writes `data` to `path` through a temporary file in the same directory."""
  if main_only and not is_main_process():
    return
  path = Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  except OSError as e:  # a full disk: name the file; the old one (if any) is untouched
    Path(tmp).unlink(missing_ok=True)
    raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from e
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def write_text(path: str | os.PathLike, text: str, *, main_only: bool = False) -> None:
  """Writes `text` (UTF-8, newlines as given) atomically (see `write_bytes`)."""
  write_bytes(path, text.encode("utf-8"), main_only=main_only)


def write_json(path: str | os.PathLike, obj: Any, *, main_only: bool = False) -> None:
  """`obj` as indented, key-sorted JSON, written atomically (see `write_text`)."""
  write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", main_only=main_only)


def refuse_existing(path: str | os.PathLike, overwrite: bool) -> None:
  """Raises UserError for an existing output path, unless `overwrite`."""
  if Path(path).exists() and not overwrite:
    raise UserError(
      f"Output {path} already exists; pass --overwrite to replace it (it is kept until the "
      "new one is complete), or choose another output."
    )


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
  """Yields a fresh sibling `PATH.tmp-XXXX` to write into; on success it becomes `path`.

  On any error (Ctrl-C included) the temporary directory is removed and `path` is untouched.
  An existing `path` is refused unless `overwrite`; then it is kept until the new one is
  complete, and replaced by two renames.
  """
  path = Path(path)
  refuse_existing(path, overwrite)
  in_the_way = next(p for p in path.absolute().parents if p.exists())  # the nearest that exists
  if not in_the_way.is_dir():
    raise UserError(
      f"Cannot write {path}: {in_the_way} is a file, not a directory; move it away or choose "
      "another output."
    )
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f"{path.name}.tmp-", dir=path.parent))
  try:
    os.chmod(tmp, 0o755)
    yield tmp
    refuse_existing(path, overwrite)
    _replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _replace(new: Path, path: Path) -> None:
  """Renames `new` to `path`; an existing `path` is moved aside first and restored on error."""
  if not path.exists():
    os.replace(new, path)
    return
  old = Path(tempfile.mkdtemp(prefix=f"{path.name}.old-", dir=path.parent))
  os.replace(path, old / path.name)
  try:
    os.replace(new, path)
  except BaseException:
    os.replace(old / path.name, path)
    raise
  finally:
    shutil.rmtree(old, ignore_errors=True)


def sha256(path: str | os.PathLike) -> str:
  """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()
