"""Traced programs kept beside the compilation cache, so a warm process compiles without tracing.

JAX's persistent cache keeps what XLA compiled, but a new process still traces every program
(Python, holding the GIL) to find its cache key. For a prediction plan of ten shapes at
albert-base on 2 CPU cores that is ~0.1 s a shape alone and up to 0.7 s a shape beside the
batches already running: most of what a warm first call costs over a steady one.

`lower(fn, args, name, lock)` exports `fn` traced at `args` (`jax.export`: StableHLO, the
program exactly as traced) once, keeps it in the compilation cache's directory, and lowers the
exported program (`jax.jit(exported.call)`); a later process reads it back instead of tracing.
Every program goes through the exported form, traced now or read back, cache on or off, so its
numbers never depend on where it came from.

An entry's key is everything the trace depends on: `name` (what `fn` computes; callers name
their model and outputs), the arguments' shapes, dtypes and shardings, the versions of
jax, jaxlib and flax, JAX's configuration, the backend and its devices, and a digest of
albert_jax's own source files, so an edit to the code that traces starts new entries. A file
whose digest does not match (truncated, corrupted) is traced again and replaced, with one
warning line; files are written whole (`albert_jax.files`). A function that `jax.export`
refuses (a custom call without compatibility guarantees) is lowered as traced.

`beside_cache(name)` is where such a file goes: the compilation cache's directory, when one is
in use (`albert_jax.compilation` keeps its measured times there too).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import logging
import pathlib
import threading
from collections.abc import Callable

import jax
from jax import export

from albert_jax import files

log = logging.getLogger(__name__)
_PREFIX = "albert_jax-trace-"
_warned: set = set()


def lower(fn: Callable, args: tuple, name: str, lock: threading.Lock) -> jax.stages.Lowered:
  """`fn` (jitted) lowered for `args`, from its exported program: read back from the cache
  directory when there, else traced (under `lock`: traces hold the GIL) and kept there."""
  key = _key(name, args)
  file = beside_cache(_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:40])
  exported = _read(file, key) if file is not None else None
  with lock:
    if exported is None:
      try:
        exported = export.export(fn)(*args)
        payload = exported.serialize()
      except Exception as e:  # what jax.export cannot serialize: lowered as traced
        _warn_once(("export", name), f"{name}: not kept traced ({str(e).splitlines()[0]}).")
        return fn.lower(*args)
      if file is not None:
        _write(file, key, payload)
    return jax.jit(_caller(exported, getattr(fn, "__name__", "fn"))).lower(*args)


def _caller(exported: export.Exported, name: str) -> Callable:
  def call(*args):
    return exported.call(*args)

  call.__name__ = call.__qualname__ = name  # as the compile log names the traced function
  return call


def _key(name: str, args: tuple) -> str:
  leaves, tree = jax.tree.flatten(args)
  avals = [(tuple(x.shape), str(x.dtype), str(getattr(x, "sharding", None))) for x in leaves]
  devices = jax.devices()
  return json.dumps(
    {
      "name": name,
      "tree": str(tree),
      "avals": avals,
      "versions": _versions(),
      "source": _source_digest(),
      "config": {k: repr(v) for k, v in sorted(jax.config.values.items()) if "cache" not in k},
      "devices": [jax.default_backend(), len(devices), devices[0].device_kind],
    },
    sort_keys=True,
  )


@functools.cache
def _versions() -> dict[str, str]:
  return {p: importlib.metadata.version(p) for p in ("jax", "jaxlib", "flax")}


@functools.cache
def _source_digest() -> str:
  """A digest of albert_jax's Python files (names and contents)."""
  root = pathlib.Path(__file__).resolve().parent
  digest = hashlib.sha256()
  for path in sorted(root.rglob("*.py")):
    digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
  return digest.hexdigest()


def beside_cache(name: str) -> pathlib.Path | None:
  """The file `name` in the compilation cache's directory (None: no cache in use)."""
  path = jax.config.jax_compilation_cache_dir
  if not path or not jax.config.jax_enable_compilation_cache:
    return None
  return pathlib.Path(path) / name


def _read(file: pathlib.Path, key: str) -> export.Exported | None:
  """The program kept in `file` for `key`; None when there is none or it is damaged."""
  try:
    data = file.read_bytes()
  except OSError:
    return None
  header, _, payload = data.partition(b"\n")
  try:
    kept = json.loads(header)
    if kept["key"] != key:  # another key with the same file name: traced again
      return None
    if kept["sha256"] != hashlib.sha256(payload).hexdigest():
      raise ValueError("its digest does not match its contents")
    return export.deserialize(bytearray(payload))
  except Exception as e:  # truncated, corrupted
    _warn_once(("damaged", file), f"the traced program {file} is damaged ({e}); tracing again.")
    return None


def _write(file: pathlib.Path, key: str, payload: bytearray) -> None:
  header = json.dumps({"key": key, "sha256": hashlib.sha256(payload).hexdigest()})
  with contextlib.suppress(OSError):  # an unwritable cache directory warned already
    files.write_bytes(file, header.encode() + b"\n" + bytes(payload))


def _warn_once(key, message: str) -> None:
  if key not in _warned:
    _warned.add(key)
    log.warning("%s", message)
