"""The command line both trainers share: `--config=FILE.py[:ARG]`, `--config.key=value`
overrides, `--workdir=DIR`; the result printed as JSON on stdout (process 0).

`--config=configs/KIND/NAME.py` names the configs installed with the package
(`albert_jax/configs/`) from any directory, as it names the checkout's `configs/` in one; any
other path is a file of the user's. An override of a field the config does not have is a
`UserError` naming the closest field (`--config.num_train_step` -> `num_train_steps`).

Each `python -m albert_jax.KIND` trainer is `FLAGS = flag_values(KIND)`,
`main = main_of(run, FLAGS, KIND)` and `cli.run(main, FLAGS)` (`albert_jax.cli`: a `UserError`
prints one line, exit code 2).
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from absl import flags
from ml_collections import config_flags

from albert_jax import cli, distributed
from albert_jax.errors import UserError

PACKAGED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"  # albert_jax/configs


def flag_values(kind: str) -> flags.FlagValues:
  """The flags of `python -m albert_jax.KIND`: --config (a configs/KIND/*.py file, then
  --config.key=value) and --workdir."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file(
    "config",
    None,
    f"A configs/{kind}/*.py file (the packaged configs, from any directory) or a config file "
    "of your own; FILE.py:ARG passes ARG to its get_config.",
    flag_values=fv,
    lock_config=True,
  )
  flags.DEFINE_string(
    "workdir",
    None,
    "Where the run's checkpoints, TensorBoard files and results go; rerun with the same one "
    "to resume.",
    flag_values=fv,
  )
  return fv


def usage_of(kind: str) -> str:
  return f"python -m albert_jax.{kind} --config=configs/{kind}/FILE.py[:ARG] --workdir=DIR"


def main_of(
  run: Callable[[Any, str], Any], flag_values: flags.FlagValues, kind: str
) -> Callable[[Sequence[str]], None]:
  """`main(argv)`: parses the flags, joins a multi-process run, runs, prints the result."""
  usage = usage_of(kind)

  def main(argv: Sequence[str]) -> None:
    check_overrides(argv)
    argv = [argv[0], *(_resolve_config_arg(arg) for arg in argv[1:])]
    if extra := cli.parse(flag_values, argv, usage):
      raise UserError(f"Unexpected arguments: {extra}\n\nUsage: {usage}")
    if flag_values.config is None or not flag_values.workdir:
      raise UserError(f"--config and --workdir are required.\n\nUsage: {usage}")
    distributed.initialize()  # joins the processes of a multi-host run; else nothing
    result = run(flag_values.config, flag_values.workdir)
    if distributed.is_main_process():  # output from process 0 only, as for every file
      print(json.dumps(result, indent=2, sort_keys=True))

  return main


def resolve_config_path(path: str) -> str:
  """`path` (a config file, `FILE.py[:ARG]`), or, when it names no file here and starts with
  `configs/`, the packaged config of that name."""
  file, colon, arg = path.partition(":")
  if not os.path.exists(file) and Path(file).parts[:1] == ("configs",):
    packaged = PACKAGED_CONFIGS.joinpath(*Path(file).parts[1:])
    if packaged.is_file():
      return f"{packaged}{colon}{arg}"
  return path


def _resolve_config_arg(arg: str) -> str:
  if arg.startswith(("--config=", "-config=")):
    flag, _, value = arg.partition("=")
    return f"{flag}={resolve_config_path(value)}"
  return arg


def load_config(path: str) -> Any:
  """`get_config(ARG)` of the config file `FILE.py[:ARG]` (packaged names resolved)."""
  file, _, arg = resolve_config_path(path).partition(":")
  if not os.path.isfile(file):
    raise UserError(
      f"--config={path}: no such file. Give a config file, e.g. configs/finetune/sst2_sample.py "
      f"(the packaged ones: {', '.join(sorted(_packaged_names()))})."
    )
  spec = importlib.util.spec_from_file_location(Path(file).stem, file)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
  except (ValueError, KeyError, TypeError, AttributeError) as e:  # the config's own checks
    raise UserError(f"--config={path}: {e}") from None


def _packaged_names() -> list[str]:
  return [f"configs/{p.relative_to(PACKAGED_CONFIGS)}" for p in PACKAGED_CONFIGS.glob("*/*.py")]


def check_overrides(argv: Sequence[str]) -> None:
  """The `--config` file of `argv` loads, and every `--config.a.b=...` names a field of its
  config; else a UserError naming the closest field."""
  overrides = [
    a.lstrip("-").split("=", 1)[0] for a in argv if a.startswith(("--config.", "-config."))
  ]
  configs = [a.split("=", 1)[1] for a in argv if a.startswith(("--config=", "-config="))]
  if not configs:
    return  # --config missing: parsing says so
  config = load_config(configs[-1])
  for override in overrides:
    node, path = config, override.split(".")[1:]
    for depth, key in enumerate(path):
      fields = list(node.keys()) if hasattr(node, "keys") else []
      if key not in fields:
        where = ".".join(path[:depth]) or "the config"
        close = difflib.get_close_matches(key, fields, n=1)
        hint = (
          f"did you mean --config.{'.'.join([*path[:depth], close[0]])}?"
          if close
          else (
            f"its fields are {', '.join(sorted(fields))}." if fields else f"{where} has no fields."
          )
        )
        raise UserError(f"--{override}: {configs[-1]} has no field {key!r} in {where}; {hint}")
      node = node[key]
