"""The one command-line convention of every `python -m albert_jax.*`.

Each entry point defines its absl flags on its own `flags.FlagValues` (so several CLIs can run
in one process, as the tests and notebooks do) — ml_collections config flags
(`--config=configs/...py --config.key=value`) for the trainers, plain flags for the tools —
and ends with `cli.run(main, FLAGS)`. Then:
  - `--help` prints the usage line and the flags;
  - a `UserError` (bad input the user can fix) or an `OSError` (a missing file, a full
    disk) prints one line, `error: <message>`, on
    stderr and exits with code 2 (`EXIT_USER_ERROR`); `ALBERT_JAX_TRACEBACK=1` or
    `--verbosity=1` shows the traceback as well;
  - a training run stopped by SIGTERM or Ctrl-C (`albert_jax.preemption`) prints where it
    stopped and exits with code 75 (`EXIT_PREEMPTED`) once its checkpoint is written;
  - with several processes, a user error also tells the other processes, which end with
    code 69; a dead or hung process ends them with 69 or 79 (`albert_jax.watchdog`);
  - results go to stdout alone; progress and logs go to stderr.

One vocabulary across the commands: `--model` names the model a command reads (convert's
source, export's input), `max_seq_length` / `max_query_length` the lengths. A command's
`RENAMED` maps its flags' old names to the new ones (they still work, with a one-line
deprecation note on stderr); `ALIASES` maps HF transformers' spellings, accepted as they are
where a command mirrors `transformers.pipeline`. `albert_jax.commands` lists every command and
writes docs/commands.md from their flags.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence

from absl import flags

from albert_jax import compilation, watchdog
from albert_jax.errors import EXIT_USER_ERROR, UserError
from albert_jax.preemption import Preempted

TRACEBACK_ENV = "ALBERT_JAX_TRACEBACK"  # set to 1 to print tracebacks of user errors too


def parse(
  flag_values: flags.FlagValues,
  argv: Sequence[str],
  usage: str,
  renamed: Mapping[str, str] | None = None,
  aliases: Mapping[str, str] | None = None,
) -> list[str]:
  """Parses `argv` into `flag_values`; returns the positional arguments (without argv[0]).

  `--help` prints `usage` and the flags and exits 0; a bad flag is a UserError naming it.
  `renamed` (old name -> name) and `aliases` (another spelling -> name) are other names of
  flags; a renamed one prints a deprecation note on stderr. Parsing again (another call in the
  same process) starts from the flags' defaults. A command with `--compilation_cache`
  (`define_compilation_cache`) gets its compilation cache set up here.
  """
  if any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv[1:]):
    print(f"{usage}\n\n{flag_values.get_help()}")
    raise SystemExit(0)
  argv = [argv[0], *(_canonical(arg, renamed or {}, aliases or {}) for arg in argv[1:])]
  flag_values.unparse_flags()
  try:
    rest = flag_values(list(argv))[1:]
  except flags.Error as e:
    raise UserError(f"{e}\n\nUsage: {usage}") from None
  if "compilation_cache" in flag_values:  # a command that compiles: its cache on or off
    compilation.setup(flag_values.compilation_cache)
  return rest


def define_compilation_cache(flag_values: flags.FlagValues) -> None:
  """`--[no]compilation_cache`, which `parse` applies (`albert_jax.compilation.setup`)."""
  flags.DEFINE_bool(
    "compilation_cache",
    True,
    f"Keep compiled XLA programs for the next run, in ${compilation.ENV} (default "
    "~/.cache/albert_jax/xla) or your own jax_compilation_cache_dir; "
    "--nocompilation_cache compiles everything again.",
    flag_values=flag_values,
  )


def _canonical(arg: str, renamed: Mapping[str, str], aliases: Mapping[str, str]) -> str:
  """`arg` with a flag's other name replaced by the name (`--old=v`, `--old`, `--noold`)."""
  dashes = "--" if arg.startswith("--") else "-" if arg.startswith("-") else ""
  if not dashes or arg == "--":
    return arg
  name, equals, value = arg[len(dashes) :].partition("=")
  negated = name not in renamed and name not in aliases and name.startswith("no")
  old = name[2:] if negated else name
  new = renamed.get(old) or aliases.get(old)
  if new is None:
    return arg
  if old in renamed:
    print(
      f"warning: --{old} is deprecated; use --{new} (the old name still works for now).",
      file=sys.stderr,
    )
  return f"{dashes}{'no' if negated else ''}{new}{equals}{value}"


def _verbose(flag_values: flags.FlagValues | None) -> bool:
  if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
    return True
  return flag_values is not None and "verbosity" in flag_values and flag_values.verbosity > 0


def run(
  main: Callable[[Sequence[str]], int | None],
  flag_values: flags.FlagValues | None = None,
  argv: Sequence[str] | None = None,
) -> None:
  """Runs `main(argv)` as a program (see the module doc for the convention); never returns."""
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  logging.getLogger("albert_jax").setLevel(logging.INFO)  # ours, not every library's
  try:
    code = main(list(sys.argv if argv is None else argv))
  except (UserError, OSError) as e:  # OSError: a missing file, no permission, a full disk
    if _verbose(flag_values):
      traceback.print_exc()
    print(f"error: {e}", file=sys.stderr)
    watchdog.fail(f"error: {e}", EXIT_USER_ERROR)  # several processes: tell the others, exit
    sys.exit(EXIT_USER_ERROR)
  except Preempted as e:  # SIGTERM / Ctrl-C: the checkpoint is written
    print(f"stopped: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
  sys.exit(code or 0)
