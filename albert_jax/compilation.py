"""The persistent XLA compilation cache every command uses, and a log of what XLA compiled.

`setup()` (each command calls it; `--nocompilation_cache` / `compilation_cache=False` calls
`setup(False)`) keeps every compiled program on disk, so a second run with the same programs
reads them back instead of compiling them again. Where:
  1. a `jax_compilation_cache_dir` of the user's own (`JAX_COMPILATION_CACHE_DIR`, or
     `jax.config.update` before the command), as it is;
  2. else `$ALBERT_JAX_CACHE`;
  3. else `~/.cache/albert_jax/xla`.
JAX keys each entry by the program, the jax and XLA versions, the compile options and flags and
the devices it runs on (the mesh), so one directory serves every version, flag set and mesh;
an entry is only ever read back by the program it was compiled from. Every program is cached,
however small or quick to compile (`jax_persistent_cache_min_compile_time_secs` is set to 0
unless the user set it: JAX's default skips those under 1 s, which are most of a CPU run's).

Entries are written whole (a temporary file renamed into place), by one process of a
multi-process run (JAX writes from process 0 only; the others read), so no process ever reads
half an entry. An entry that does not decompress (truncated, corrupted) is ignored with one
warning line, compiled again and replaced. A directory that cannot be created or written warns
once and the run goes on without a cache. The cache is trusted code: do not share a directory
with users you do not trust.

`CompileLog` counts the XLA compilations of a block of code (`with CompileLog() as log:`), each
with its function name, seconds and whether it came from the cache.

`Programs` compiles a jitted function ahead of time for each of the argument shapes a run will
give it, concurrently (a thread pool: XLA compiles outside the GIL; the traces, which hold it,
one at a time), and calls the compiled program of a call's shapes (waiting for it while it
compiles); a shape not compiled ahead goes through the jitted function as before.
`timing` / `record_timing` keep what a program took to run (a prediction plan's calibration)
beside the cache's entries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import logging
import os
import pathlib
import tempfile
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import Any

import jax
from jax.experimental.compilation_cache import compilation_cache as _public_cache

from albert_jax import files, traces

# JAX (0.10) has no public way to give its persistent cache another storage: its public module
# re-exports `set_cache_dir` and `reset_cache` only, and JAX's own file cache writes an entry in
# place (a reader can see half of it) and keeps a damaged entry forever. So `_reset` installs
# `WholeEntryCache` as the module-level `_cache` (with `_cache_initialized`) of the private
# module those public functions come from, found through them rather than imported by name,
# and uses its `decompress_executable` to check entries. Where a JAX release moves any of these
# names, `setup` keeps JAX's own cache (no whole-entry writes) instead of failing the run, and
# tests/test_compilation.py::test_the_private_cache_names_are_where_we_use_them fails first.
_jax_cache = importlib.import_module(_public_cache.reset_cache.__module__)
PRIVATE_NAMES = ("_cache", "_cache_initialized", "decompress_executable")

ENV = "ALBERT_JAX_CACHE"  # the cache directory, when no jax_compilation_cache_dir is set
DEFAULT_DIR = os.path.join("~", ".cache", "albert_jax", "xla")
_SUFFIX = "-cache"  # JAX's file name for an entry: KEY-cache
_CACHE_HIT = "/jax/compilation_cache/cache_hits"
_COMPILE = "/jax/core/compile/backend_compile_duration"  # compiled or read from the cache

log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict = {"ours": None, "installed": None, "warned": set(), "listening": False}


def cache_dir() -> str:
  """The directory `setup` uses when the user set no `jax_compilation_cache_dir`."""
  return os.path.expanduser(os.environ.get(ENV) or DEFAULT_DIR)


def setup(enabled: bool = True) -> str | None:
  """Turns the persistent compilation cache on (see the module doc for where) or off; returns
  the directory in use, None when off (or when the directory cannot be written)."""
  with _lock:
    if not enabled:
      jax.config.update("jax_enable_compilation_cache", False)
      _reset(None)
      return None
    current = jax.config.jax_compilation_cache_dir
    path = current if current and current != _state["ours"] else cache_dir()
    if (problem := _unwritable(path)) is not None:
      _warn_once(
        ("unwritable", path),
        f"the compilation cache directory {path} cannot be written ({problem}); running without "
        f"a cache. Set {ENV} to a writable directory, or pass --nocompilation_cache.",
      )
      jax.config.update("jax_enable_compilation_cache", False)
      _reset(None)
      return None
    jax.config.update("jax_enable_compilation_cache", True)
    if jax.config.jax_persistent_cache_min_compile_time_secs == 1.0:  # JAX's default
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if path != current:
      jax.config.update("jax_compilation_cache_dir", path)
      _state["ours"] = path
    if _state["installed"] != path:
      _reset(path)
    return path


def _unwritable(path: str) -> str | None:
  """Why `path` cannot hold cache entries (None: it can)."""
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
      pass
  except OSError as e:
    return e.strerror or str(e)
  return None


def _reset(path: str | None) -> None:
  """JAX's cache object dropped (read again at the next compilation), and ours installed at
  `path` (None: none). JAX's own (`LRUCache`) stays where it evicts entries (a
  `jax_compilation_cache_max_size` was set)."""
  _jax_cache.reset_cache()
  _state["installed"] = path
  evicts = jax.config.jax_compilation_cache_max_size != -1
  if path is not None and not evicts and all(hasattr(_jax_cache, n) for n in PRIVATE_NAMES):
    _jax_cache._cache = WholeEntryCache(path)
    _jax_cache._cache_initialized = True


def _warn_once(key, message: str) -> None:
  if key not in _state["warned"]:
    _state["warned"].add(key)
    log.warning("%s", message)


class WholeEntryCache:
  """JAX's file layout (`KEY-cache`, compressed), written whole and checked when read: a
  damaged entry is a miss (one warning line), replaced by the next write. It has the methods
  of JAX's cache interface (`get`, `put`, `clear`, `_path`), which JAX calls."""

  def __init__(self, path: str):
    self._path = pathlib.Path(path)

  def get(self, key: str) -> bytes | None:
    file = self._path / f"{key}{_SUFFIX}"
    try:
      data = file.read_bytes()
    except FileNotFoundError:
      return None
    except OSError as e:
      _warn_once(
        ("read", file), f"cannot read the compilation cache entry {file} ({e}); compiling."
      )
      return None
    try:
      _jax_cache.decompress_executable(data)
    except Exception as e:  # zlib.error, zstd's: truncated or corrupted
      _warn_once(
        ("damaged", file),
        f"the compilation cache entry {file} is damaged ({e}); compiling the "
        "program again and replacing it.",
      )
      return None
    return data

  def put(self, key: str, value: bytes) -> None:
    file = self._path / f"{key}{_SUFFIX}"
    try:  # readers see the old entry, none, or the whole new one
      files.write_bytes(file, value)
    except OSError as e:
      _warn_once(
        ("write", self._path), f"cannot write to the compilation cache {self._path} ({e})."
      )

  def clear(self) -> None:
    pass


# ---- what was compiled ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Compilation:
  name: str  # the jitted function's name, e.g. "train_step"
  seconds: float  # compiling, or reading from the cache
  from_cache: bool


_local = threading.local()  # per thread: whether its compilation in progress hit the cache
_logs: list[CompileLog] = []


class CompileLog:
  """The XLA compilations made while it is open (`with CompileLog() as log:`), in any thread,
  or in the opening thread only (`this_thread=True`)."""

  def __init__(self, this_thread: bool = False):
    self.compilations: list[Compilation] = []
    self._thread = threading.get_ident() if this_thread else None

  def __enter__(self) -> CompileLog:
    _listen()
    with _lock:
      _logs.append(self)
    return self

  def __exit__(self, *exc) -> None:
    with _lock:
      _logs.remove(self)

  def compiled(self, name: str | None = None) -> int:
    """How many programs (named `name`, else all) XLA compiled (not read from the cache)."""
    return sum(1 for c in self.compilations if not c.from_cache and name in (None, c.name))

  def from_cache(self, name: str | None = None) -> int:
    return sum(1 for c in self.compilations if c.from_cache and name in (None, c.name))


def _listen() -> None:
  """Registers the two monitoring listeners, once per process."""
  with _lock:
    if _state["listening"]:
      return
    _state["listening"] = True
  jax.monitoring.register_event_listener(_on_event)
  jax.monitoring.register_event_duration_secs_listener(_on_duration)


def _on_event(event: str, **_) -> None:
  if event == _CACHE_HIT:  # comes before the compilation's duration, in its thread
    _local.hit = True


def _on_duration(event: str, seconds: float, fun_name: str = "", **_) -> None:
  if event != _COMPILE:
    return
  hit, _local.hit = getattr(_local, "hit", False), False
  name = fun_name[4:-1] if fun_name.startswith("jit(") else fun_name  # jit(train_step)
  record = Compilation(name, seconds, hit)
  thread = threading.get_ident()
  with _lock:
    for compile_log in _logs:
      if compile_log._thread in (None, thread):
        compile_log.compilations.append(record)


# ---- ahead of time --------------------------------------------------------------------------


def abstract(tree: Any, sharding: Any = None) -> Any:
  """`tree`'s arrays (numpy or jax) as `jax.ShapeDtypeStruct`s, with `sharding` (else each
  jax array's own), dtypes as jax canonicalizes them."""

  def spec(x):
    dtype = jax.dtypes.canonicalize_dtype(x.dtype)
    return jax.ShapeDtypeStruct(x.shape, dtype, sharding=sharding or getattr(x, "sharding", None))

  return jax.tree.map(spec, tree)


class Programs:
  """`fn` (a jitted function with `.lower`) compiled ahead of time, shape by shape: `add(shapes)`
  starts compiling each (key, arguments to lower with) not added before, in order (put the one
  needed first first). Calling it with arguments whose `key_of(*args)` was added runs that
  compiled program (waiting for it while it compiles); any other call goes to `fn`.

  `what` names the programs in the log line ("train step"); the threads are `pool`'s, else
  this object's own (as many as CPUs). With `traced_as` (a name for what `fn` computes, see
  `albert_jax.traces`) the traced programs are kept with the cache, so a later process does
  not trace them again.
  """

  def __init__(
    self,
    fn: Callable,
    key_of: Callable[..., Hashable],
    what: str,
    shapes: Sequence[tuple[Hashable, tuple]] = (),
    pool: ThreadPoolExecutor | None = None,
    traced_as: str | None = None,
  ):
    self._fn, self._key_of, self.what, self._traced_as = fn, key_of, what, traced_as
    self._lower_lock = threading.Lock()  # traces hold the GIL: one at a time, in order
    self._pool = pool or ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="compile")
    self.start = time.perf_counter()
    self.futures: dict[Hashable, Future] = {}
    self.fallbacks = 0  # calls with shapes not compiled ahead
    self.add(shapes)

  def add(self, shapes: Sequence[tuple[Hashable, tuple]]) -> list[Hashable]:
    """Starts compiling the shapes not added before; returns their keys."""
    new = [(key, args) for key, args in shapes if key not in self.futures]
    for key, args in new:
      self.futures[key] = self._pool.submit(self._compile, args)
    return [key for key, _ in new]

  def _compile(self, args: tuple) -> tuple[Any, list[Compilation], float]:
    if not threading.main_thread().is_alive():  # the process is exiting (an error, SIGTERM):
      raise CancelledError("exiting")  # the programs still queued are not compiled
    with CompileLog(this_thread=True) as compile_log:
      if self._traced_as is None:
        with self._lower_lock:
          lowered = self._fn.lower(*args)
      else:
        lowered = traces.lower(self._fn, args, self._traced_as, self._lower_lock)
      compiled = lowered.compile()
    return compiled, compile_log.compilations, time.perf_counter()

  def compiled(self, key: Hashable) -> Any:
    """The compiled program of `key` (waits for it)."""
    return self.futures[key].result()[0]

  def __call__(self, *args):
    future = self.futures.get(self._key_of(*args))
    if future is None:
      self.fallbacks += 1
      return self._fn(*args)
    return future.result()[0](*args)

  def summary(self, keys: Sequence[Hashable] | None = None) -> dict[str, float]:
    """Once compiled (waits): how many programs (of `keys`, else all), how many came from the
    cache, seconds from the start (or the first of `keys` submitted) to the last done."""
    results = [self.futures[k].result() for k in (self.futures if keys is None else keys)]
    return {
      "programs": len(results),
      "from_cache": sum(cs[-1].from_cache for _, cs, _ in results if cs),  # the last: its own
      "seconds": max((end for _, _, end in results), default=self.start) - self.start,
    }


# ---- measured times, kept with the programs -------------------------------------------------

_timings: dict[str, float] = {}  # this process's, by key


def _timing_file(key: str) -> pathlib.Path | None:
  """Where `key`'s time is kept: beside the cache entries (None: no cache in use)."""
  return traces.beside_cache(
    f"albert_jax-timing-{hashlib.sha256(key.encode()).hexdigest()[:40]}.json"
  )


def timing(key: str) -> float | None:
  """The seconds `record_timing` kept for `key` (this process, else the cache), or None."""
  if key in _timings:
    return _timings[key]
  file = _timing_file(key)
  try:
    saved = json.loads(file.read_text()) if file is not None else {}
  except (OSError, ValueError):  # none yet, or damaged: measured again
    return None
  if saved.get("key") == key and isinstance(saved.get("seconds"), float):
    _timings[key] = saved["seconds"]
    return saved["seconds"]
  return None


def record_timing(key: str, seconds: float) -> None:
  """Keeps `seconds` for `key`: in this process, and in the cache directory (whole-file writes)."""
  _timings[key] = float(seconds)
  if (file := _timing_file(key)) is None:
    return
  with contextlib.suppress(OSError):  # an unwritable cache warned already
    files.write_json(file, {"key": key, "seconds": float(seconds)})


def device_key() -> str:
  """What measured times depend on besides the program: jax's version, the devices."""
  devices = jax.devices()
  return f"jax {jax.__version__} {jax.default_backend()} {len(devices)}x{devices[0].device_kind}"
