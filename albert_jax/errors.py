"""The one error type for bad input: every `python -m albert_jax.*` prints it as one line.

Library code raises `UserError` (or a subclass) when the user can fix the cause: a wrong
file, a value out of range, a config that cannot run. The message names the offending value
and says what to do. `albert_jax.cli.run` prints it as `error: <message>` and exits with
`EXIT_USER_ERROR`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2  # a user error: fix the input or the flags and rerun
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by SIGTERM / Ctrl-C after saving; rerun to resume
EXIT_PEER_FAILED = 69  # EX_UNAVAILABLE: another process of the job died, stopped or failed
EXIT_HUNG = 79  # no training step completed within step_timeout (albert_jax.watchdog)


class UserError(ValueError):
  """Bad input (a file, a flag, a config value) that the user can fix; see the module doc."""
