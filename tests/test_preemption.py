"""albert_jax.preemption: stop requests from real signals, and the CLI's exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from albert_jax import preemption
from albert_jax.errors import EXIT_PREEMPTED


def test_sigterm_and_sigint_set_the_flag_and_handlers_are_restored():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.StopRequests() as stop:
    assert not stop.requested() and not stop.agreed()
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested() and stop.agreed() and stop.received == "SIGTERM"
  assert signal.getsignal(signal.SIGTERM) is before
  with preemption.StopRequests() as stop:
    os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C only asks to stop
    assert stop.received == "SIGINT"
    with pytest.raises(KeyboardInterrupt):  # the second quits at once
      os.kill(os.getpid(), signal.SIGINT)


def test_preempted_exits_75_through_the_cli_convention(tmp_path):
  script = tmp_path / "job.py"
  script.write_text(
    textwrap.dedent(
      """
      import os, signal, sys
      from albert_jax import cli, preemption

      def main(argv):
        with preemption.StopRequests() as stop:
          for step in range(1, 1000):
            if step == 3:
              os.kill(os.getpid(), signal.SIGTERM)
            if stop.agreed():
              raise preemption.Preempted(step, stop.received)
        return 0

      cli.run(main)
      """
    )
  )
  run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
  assert run.returncode == EXIT_PREEMPTED == 75
  assert "stopped: Stopped by SIGTERM after step 3" in run.stderr
  assert run.stdout == ""
