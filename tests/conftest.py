"""Test setup, made before jax is imported: 8 simulated CPU devices, and one persistent XLA
compilation cache for the whole run.

The cache is a temporary directory named in the environment (JAX_COMPILATION_CACHE_DIR, and
ALBERT_JAX_CACHE for the commands' own setup, `albert_jax.compilation`), so the
subprocesses the tests start (the command-line runs, the multi-process runs, the notebooks'
kernels) and pytest-xdist's workers use it too: a program compiled once (a tiny model's train
step, a resumed run's programs, the second process of a two-process run) is read back
everywhere else. A cache directory already set in the environment is used as it is.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
  _cache_dir = tempfile.mkdtemp(prefix="albert_jax_xla_cache_")
  atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)  # this process made it
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
# the product's own cache (albert_jax.compilation) where a test sets no JAX directory: the same,
# never ~/.cache
os.environ.setdefault("ALBERT_JAX_CACHE", os.environ["JAX_COMPILATION_CACHE_DIR"])
# every program, however small or quick to compile (the defaults skip those under 1 s)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
