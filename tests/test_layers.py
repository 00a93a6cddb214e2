"""The package's layers (pyproject.toml's import-linter contract) hold, and the contract refuses an
upward import such as a loader importing a trainer."""

import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINT_IMPORTS = pathlib.Path(sys.executable).parent / "lint-imports"


def _lint(cwd: pathlib.Path) -> subprocess.CompletedProcess:
  env = {"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"}
  return subprocess.run(
    [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
  )


def test_the_layers_hold():
  done = _lint(ROOT)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  assert "1 kept, 0 broken" in done.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
  shutil.copytree(
    ROOT / "albert_jax", tmp_path / "albert_jax", ignore=shutil.ignore_patterns("assets")
  )
  shutil.copy(ROOT / "pyproject.toml", tmp_path)
  runs = tmp_path / "albert_jax" / "weights" / "runs.py"
  runs.write_text(runs.read_text() + "\nfrom albert_jax.trainer import finetune  # noqa\n")
  done = _lint(tmp_path)
  assert done.returncode != 0
  assert "albert_jax.weights.runs -> albert_jax.trainer.finetune" in done.stdout, done.stdout[
    -3000:
  ]
