"""The commands as a user meets them: every `--help`, docs/commands.md, one vocabulary (old flag
names still work and say so), a mistyped config override, and the configs a wheel installs."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from albert_jax import cli, commands, convert, export, features, predict
from albert_jax.errors import EXIT_USER_ERROR, UserError
from albert_jax.trainer import command

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The tiny model and run of the wheel test: the README's command, shortened.
TINY_RUN = [
  "--config.model_overrides.hidden_size=32",
  "--config.model_overrides.num_hidden_layers=1",
  "--config.model_overrides.num_attention_heads=2",
  "--config.model_overrides.intermediate_size=64",
  "--config.model_overrides.embedding_size=16",
  "--config.max_seq_length=32",
  "--config.num_train_steps=4",
  "--config.warmup_steps=1",
  "--config.eval_every_steps=0",
  "--config.checkpoint_every_steps=4",
  "--config.mesh.shape.data=1",
]


def _env(**extra: str) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
  return {**env, "JAX_PLATFORMS": "cpu", **extra}


def test_every_command_helps_without_a_warning():
  """`python -m albert_jax.X --help` exits 0 with the usage line and no Python warning (runpy's
  "found in sys.modules" came from a command module imported by the package)."""
  runs = {
    name: subprocess.Popen(
      [sys.executable, "-W", "default", "-m", f"albert_jax.{name}", "--help"],
      cwd=ROOT,
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for name in commands.COMMANDS
  }
  for name, run in runs.items():
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, (name, err[-2000:])
    assert out.startswith(f"python -m albert_jax.{name}"), (name, out[:200])
    assert "Warning" not in err, (name, err[-2000:])


def test_every_command_module_is_listed_and_thin():
  """Every `python -m` module of the package is in COMMANDS, and no library module imports one
  (import-linter's contract says the same for the whole package)."""
  package = ROOT / "albert_jax"
  runnable = {
    p.stem
    for p in package.glob("*.py")
    if 'if __name__ == "__main__":' in p.read_text() and p.stem != "commands"
  }
  assert runnable == set(commands.COMMANDS)
  for name in commands.COMMANDS:
    module = commands.command_module(name)
    assert module.USAGE.startswith(f"python -m albert_jax.{name}")


def test_docs_commands_md_is_up_to_date():
  """docs/commands.md is what the flag definitions give (regenerate with
  `python -m albert_jax.commands > docs/commands.md`)."""
  written = (ROOT / "docs" / "commands.md").read_text()
  assert written == commands.markdown(), "regenerate docs/commands.md"
  for name in commands.COMMANDS:
    for flag in commands.command_module(name).FLAGS:
      if not flag.startswith("config."):
        assert f"`--{flag}`" in written, (name, flag)


@pytest.mark.parametrize(
  "module, old, new, value",
  [
    (convert, "source", "model", "/some/model"),
    (export, "checkpoint", "model", "/some/run/export"),
    (features, "max_length", "max_seq_length", 12),
  ],
)
def test_old_flag_names_still_work_and_say_they_are_deprecated(module, old, new, value, capsys):
  rest = cli.parse(module.FLAGS, ["x", f"--{old}={value}"], module.USAGE, module.RENAMED)
  assert rest == [] and module.FLAGS[new].value == value
  assert capsys.readouterr().err.splitlines() == [
    f"warning: --{old} is deprecated; use --{new} (the old name still works for now)."
  ]
  cli.parse(module.FLAGS, ["x", f"--{old}", str(value)], module.USAGE, module.RENAMED)
  assert module.FLAGS[new].value == value  # the separate-value form too


def test_hf_spellings_are_accepted_by_predict_without_a_note(capsys):
  argv = ["x", "--max_seq_len=128", "--max_question_len", "20", "--nopack"]
  cli.parse(predict.FLAGS, argv, predict.USAGE, aliases=predict.ALIASES)
  assert (predict.FLAGS.max_seq_length, predict.FLAGS.max_query_length) == (128, 20)
  assert predict.FLAGS.pack is False and capsys.readouterr().err == ""


@pytest.mark.parametrize("module, old", [(convert, "source"), (export, "checkpoint")])
def test_the_commands_take_their_old_names(module, old, capsys):
  """`main` itself accepts the old name: without --output, the error is the missing --output."""
  with pytest.raises(UserError, match="Pass --model and --output"):
    module.main(["x", f"--{old}", "/some/model"])
  assert f"--{old} is deprecated" in capsys.readouterr().err


def test_a_mistyped_config_override_is_one_error_line_naming_the_field(tmp_path):
  cmd = [
    sys.executable,
    "-m",
    "albert_jax.finetune",
    "--config=configs/finetune/sst2_sample.py",
    "--config.num_train_step=10",
    f"--workdir={tmp_path / 'run'}",
  ]
  done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
  assert done.returncode == EXIT_USER_ERROR
  assert done.stderr.splitlines() == [
    "error: --config.num_train_step: configs/finetune/sst2_sample.py has no field "
    "'num_train_step' in the config; did you mean --config.num_train_steps?"
  ]
  assert not (tmp_path / "run").exists()


def test_nested_overrides_missing_configs_and_the_configs_own_errors_are_named():
  argv = ["x", "--config=configs/finetune/sst2_sample.py", "--config.mesh.shap.data=2"]
  with pytest.raises(UserError, match=r"no field 'shap' in mesh; did you mean --config.mesh.shape"):
    command.check_overrides(argv)
  command.check_overrides([*argv[:2], "--config.mesh.shape.data=2"])  # a real field: no error
  with pytest.raises(UserError, match=r"--config=configs/finetune/nope.py: no such file"):
    command.check_overrides(["x", "--config=configs/finetune/nope.py", "--config.seed=1"])
  with pytest.raises(
    UserError, match=r"--config=configs/finetune/glue.py:mnlx: glue.py needs a task"
  ):
    command.check_overrides(["x", "--config=configs/finetune/glue.py:mnlx"])  # its own check


def test_packaged_configs_resolve_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  resolved = command.resolve_config_path("configs/finetune/glue.py:mnli")
  assert resolved == f"{command.PACKAGED_CONFIGS / 'finetune' / 'glue.py'}:mnli"
  assert command.load_config("configs/finetune/glue.py:mnli").task == "mnli"
  (tmp_path / "configs" / "finetune").mkdir(parents=True)
  own = tmp_path / "configs" / "finetune" / "glue.py"
  own.write_text("def get_config(arg):\n  raise SystemExit('mine')\n")
  assert command.resolve_config_path("configs/finetune/glue.py") == "configs/finetune/glue.py"


def test_a_wheel_installed_elsewhere_runs_the_readme_command(tmp_path):
  """`pip wheel` of the checkout, installed into a fresh directory (no editable install on its
  path), runs the README's fine-tuning command from a directory that is not the checkout."""
  wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
  elsewhere.mkdir()
  pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
  build = subprocess.run(
    [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
    capture_output=True,
    text=True,
    timeout=600,
    cwd=tmp_path,
  )
  assert build.returncode == 0, build.stderr[-3000:]
  (wheel,) = wheels.glob("albert_jax-*.whl")
  install = [*pip, "install", "--no-deps", "--target", str(site), str(wheel)]
  done = subprocess.run(install, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  env = _env(PYTHONPATH=str(site))
  where = subprocess.run(
    [sys.executable, "-c", "import albert_jax; print(albert_jax.__file__)"],
    cwd=elsewhere,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert where.stdout.strip() == str(site / "albert_jax" / "__init__.py"), where.stderr[-2000:]
  workdir = elsewhere / "albert_demo"
  cmd = [sys.executable, "-m", "albert_jax.finetune", "--config=configs/finetune/sst2_sample.py"]
  cmd += [*TINY_RUN, f"--workdir={workdir}"]
  run = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads(run.stdout)
  assert result["step"] == 4 and 0.0 <= result["validation"]["accuracy"] <= 1.0
  assert (workdir / "export" / "albert_jax.json").is_file()
