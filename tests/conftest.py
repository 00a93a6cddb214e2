"""Test setup: 8 simulated CPU devices (set before jax is imported) and shared fixtures."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


import jax  # noqa: E402  (after XLA_FLAGS)
import pytest  # noqa: E402
from jax.experimental.compilation_cache import compilation_cache  # noqa: E402


@pytest.fixture(scope="module")
def xla_cache(tmp_path_factory):
  """A persistent XLA cache for one test module, shared with the subprocesses it starts: runs of
  one model compile their steps once (a resumed run reuses the first run's programs). Yields
  the environment variables that give a subprocess the same cache; restored afterwards."""
  options = {
    "jax_compilation_cache_dir": str(tmp_path_factory.mktemp("xla_cache")),
    "jax_persistent_cache_min_compile_time_secs": 0.0,
    "jax_persistent_cache_min_entry_size_bytes": 0,
  }
  saved = {name: jax.config.values[name] for name in options}
  for name, value in options.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()
  yield {name.upper(): str(value) for name, value in options.items()}
  for name, value in saved.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()
