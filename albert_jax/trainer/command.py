"""The command line both trainers share: `--config=FILE.py[:ARG]`, `--config.key=value`
overrides, `--workdir=DIR`; the result printed as JSON on stdout (process 0).

Each `python -m albert_jax.KIND` trainer is `FLAGS = flag_values(KIND)`,
`main = main_of(run, FLAGS, KIND)` and `cli.run(main, FLAGS)` (`albert_jax.cli`: a `UserError`
prints one line, exit code 2).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from absl import flags
from ml_collections import config_flags

from albert_jax import cli, distributed
from albert_jax.errors import UserError


def flag_values(kind: str) -> flags.FlagValues:
  """The flags of `python -m albert_jax.KIND`: --config (a configs/KIND/*.py file, then
  --config.key=value) and --workdir."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file(
    "config",
    None,
    f"A configs/{kind}/*.py file; FILE.py:ARG passes ARG to its get_config.",
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


def main_of(
  run: Callable[[Any, str], Any], flag_values: flags.FlagValues, kind: str
) -> Callable[[Sequence[str]], None]:
  """`main(argv)`: parses the flags, joins a multi-process run, runs, prints the result."""
  usage = f"python -m albert_jax.{kind} --config=configs/{kind}/FILE.py --workdir=DIR"

  def main(argv: Sequence[str]) -> None:
    if extra := cli.parse(flag_values, argv, usage):
      raise UserError(f"Unexpected arguments: {extra}\n\nUsage: {usage}")
    if flag_values.config is None or not flag_values.workdir:
      raise UserError(f"--config and --workdir are required.\n\nUsage: {usage}")
    distributed.initialize()  # joins the processes of a multi-host run; else nothing
    result = run(flag_values.config, flag_values.workdir)
    if distributed.is_main_process():  # output from process 0 only, as for every file
      print(json.dumps(result, indent=2, sort_keys=True))

  return main
