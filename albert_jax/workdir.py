"""A run's working directory: its saved config (a rerun must match it) and atomic file writes.

Shared by `albert_jax.finetune` and `albert_jax.pretrain`: a rerun with the same command
resumes, a rerun with another config is refused with the fields that differ.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from typing import Any

import ml_collections


class ConfigError(ValueError):
  """A config that cannot run; found before any weights or data are loaded."""


def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1}, as the config flags name the fields."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def check_resumable(
  config: ml_collections.ConfigDict, workdir: str, resumable: Iterable[str]
) -> None:
  """Refuses a workdir whose saved config.json differs from `config` outside `resumable`
  (top-level fields a resumed run may change, e.g. the number of steps)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = flat(json.load(f))
  current = flat(json.loads(config.to_json()))
  allowed = set(resumable)
  changed = sorted(
    k
    for k in set(saved) | set(current)
    if k.split(".")[0] not in allowed and saved.get(k) != current.get(k)
  )
  if changed:
    diff = "; ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
    raise ConfigError(
      f"Workdir {workdir} holds a run with a different config ({diff}). To resume that run, "
      f"rerun with its config (saved in {path}); to start a new run, pass another --workdir "
      "or delete this one."
    )


def write_text(path: str, text: str) -> None:
  """Writes atomically: a temporary file in the same directory, then a rename."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, obj: Any) -> None:
  write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
