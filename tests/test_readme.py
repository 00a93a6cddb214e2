"""The README and docs/ stay true: their Python example runs, their tables are what the configs
run, every command they show names a real module, real flags and real config fields, every
relative link resolves, and the headline figures are the measured ones."""

import importlib
import importlib.util
import pathlib
import re
import shlex

import ml_collections
import pytest

from albert_jax.errors import EXIT_HUNG, EXIT_PEER_FAILED, EXIT_PREEMPTED, EXIT_USER_ERROR

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
BENCHMARKS = ROOT / "benchmarks" / "README.md"
PAGES = [README, *sorted(DOCS.glob("*.md")), BENCHMARKS]

# Flag names the docs no longer use (they still work, with a deprecation note): one name per
# concept in every command.
OLD_FLAGS = {
  "convert": {"source"},
  "export": {"checkpoint"},
  "features": {"max_length"},
  "predict": {"max_seq_len", "max_question_len"},
}


def _page(path: pathlib.Path) -> str:
  return str(path.relative_to(ROOT))


def test_readme_is_a_guide():
  """The README stays short; reference material goes to docs/."""
  assert len(README.read_text().splitlines()) <= 250


def test_readme_model_example_runs():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
  example = next(b for b in blocks if "AlbertForPreTraining" in b)
  # Same code at a tiny size: the preset line gets overrides, nothing else changes.
  example = example.replace(
    'AlbertConfig.from_name("albert-large-v2")',
    'AlbertConfig.from_name("albert-large-v2", hidden_size=32, num_attention_heads=4, '
    "intermediate_size=64, num_hidden_layers=2)",
  )
  scope: dict = {}
  exec(compile(example, str(README), "exec"), scope)
  out = scope["out"]
  assert out.prediction_logits.shape[:1] == (2,) and out.prediction_logits.shape[-1] == 30000
  assert out.sop_logits.shape == (2, 2)
  length = scope["batch"]["input_ids"].shape[1]
  assert scope["hidden"].shape == (2 + 1, 2, length, 32)  # [K + 1, B, L, H]
  assert scope["maps"].shape == (2, 2, 4, length, length)  # [K, B, N, L, L]


def _config_module(file: str):
  path = ROOT / file
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_recipe_table_matches_the_configs():
  """Each row of the fine-tuning table (docs/finetuning.md) is the recipe its config runs, and
  every GLUE task has a row."""
  glue = _config_module("configs/finetune/glue.py")
  text = (DOCS / "finetuning.md").read_text()
  table = re.search(r"\| task \| lr \| batch .*?\n\|[-|]+\|\n(.*?)\n\n", text, re.S)
  seen = []
  for line in table[1].splitlines():
    task, lr, batch, steps, warmup, length = (cell.strip() for cell in line.strip("|").split("|"))
    name = task.split(" ")[0].lower().replace("-", "")
    if name == "squad":
      for file in ("squad_v1.py", "squad_v2.py"):
        c = _config_module(f"configs/finetune/{file}").get_config()
        assert (steps, warmup) == (f"{c.num_epochs:g} epochs", f"{c.warmup_fraction:.0%}"), file
        assert length == f"{c.max_seq_length}, stride {c.doc_stride}, query {c.max_query_length}"
        assert (float(lr), int(batch)) == (c.learning_rate, c.batch_size), file
      seen.append(name)
      continue
    if name == "conll2003":  # "CoNLL-2003 NER/POS/chunks, WikiANN en": epochs, as SQuAD
      for file in ("conll2003.py", "wikiann_en.py"):
        c = _config_module(f"configs/finetune/{file}").get_config()
        assert (steps, warmup) == (f"{c.num_epochs:g} epochs", f"{c.warmup_fraction:.0%}"), file
        assert length == f"{c.max_seq_length} (longer: windows)", file
        assert (float(lr), int(batch)) == (c.learning_rate, c.batch_size), file
      seen.append(name)
      continue
    if name == "race":
      c = _config_module("configs/finetune/race.py").get_config()
    else:
      c = glue.get_config(name)
    got = (c.learning_rate, c.batch_size, c.num_train_steps, c.warmup_steps, c.max_seq_length)
    assert (float(lr), int(batch), int(steps), int(warmup), int(length)) == got, task
    seen.append(name)
  assert sorted(seen) == sorted([*glue.RECIPES, "squad", "race", "conll2003"])


def test_exit_codes_are_documented():
  """docs/troubleshooting.md's table holds exactly the exit codes the commands use."""
  text = (DOCS / "troubleshooting.md").read_text()
  documented = re.findall(r"^\| `(\d+)` \|", text, re.M)
  assert sorted(map(int, documented)) == sorted(
    {0, EXIT_USER_ERROR, EXIT_PREEMPTED, EXIT_PEER_FAILED, EXIT_HUNG}
  )


# ---- every command shown is a real module with real flags and config fields ---------------


def _commands(path: pathlib.Path) -> list[tuple[str, str, list[str]]]:
  """(where, module, arguments) of each `python -m albert_jax.X ...` in a ```bash block, with
  backslash continuations joined; arguments stop at a shell operator or a comment."""
  found = []
  text = path.read_text()
  for block in re.finditer(r"```bash\n(.*?)```", text, re.S):
    first_line = text.count("\n", 0, block.start()) + 2
    lines = block[1].split("\n")
    i = 0
    while i < len(lines):
      start, joined = i, lines[i]
      while joined.endswith("\\") and i + 1 < len(lines):
        i += 1
        joined = joined[:-1] + " " + lines[i]
      where = f"{_page(path)}:{first_line + start}"
      found.extend((where, module, args) for module, args in _invocations(joined))
      i += 1
  return found


def _invocations(line: str) -> list[tuple[str, list[str]]]:
  lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
  lexer.whitespace_split = True
  tokens = list(lexer)
  found = []
  for i, token in enumerate(tokens):
    token = re.sub(r"^[A-Z_]+=", "", token)  # COMMAND="python -m ..." (a launch script's)
    if " " in token and "albert_jax." in token:
      found.extend(_invocations(token))
    elif token in ("python", "python3") and tokens[i + 1 : i + 2] == ["-m"]:
      module = tokens[i + 2]
      if not module.startswith("albert_jax."):
        continue
      args = []
      for arg in tokens[i + 3 :]:
        if set(arg) <= set("();<>|&"):  # a shell operator ends the command
          break
        args.append(arg)
      found.append((module, args))
  return found


COMMANDS = [command for page in PAGES for command in _commands(page)]


def test_the_docs_show_commands():
  """The extraction finds the commands (a broken pattern would make the checks below vacuous)."""
  pages = {where.split(":")[0] for where, _, _ in COMMANDS}
  assert {"README.md", "docs/finetuning.md", "docs/weights.md", "docs/predict.md"} <= pages
  modules = {module for _, module, _ in COMMANDS}
  assert {"albert_jax.finetune", "albert_jax.pretrain", "albert_jax.convert"} <= modules
  assert {"albert_jax.export", "albert_jax.predict", "albert_jax.features"} <= modules


def _placeholder(value: str) -> bool:
  """DIR, FILE, HF_DIR, ...: stands for the reader's own value."""
  return re.fullmatch(r"[A-Z][A-Z_]*", value) is not None or "..." in value


def _flags(args: list[str], flag_values) -> list[tuple[str, str | None]]:
  """(name, value) of each `--name[=value]` / `--name value` in `args`."""
  found = []
  for i, arg in enumerate(args):
    if not arg.startswith("--"):
      continue
    name, equals, value = arg[2:].partition("=")
    if not equals:
      value = None
      takes_value = name in flag_values and not flag_values[name].boolean
      if takes_value and i + 1 < len(args) and not args[i + 1].startswith("--"):
        value = args[i + 1]
    found.append((name, value))
  return found


def _check_config_field(config, dotted: str, where: str) -> None:
  node = config
  for depth, part in enumerate(dotted.split(".")):
    path = ".".join(dotted.split(".")[: depth + 1])
    assert isinstance(node, ml_collections.ConfigDict) and part in node, (
      f"{where}: --config.{dotted}: the config has no field {path}"
    )
    node = node[part]


@pytest.mark.parametrize("where, module, args", COMMANDS, ids=[f"{w} {m}" for w, m, _ in COMMANDS])
def test_command_uses_defined_flags(where, module, args):
  assert importlib.util.find_spec(module) is not None, f"{where}: no module {module}"
  flag_values = importlib.import_module(module).FLAGS
  command = module.removeprefix("albert_jax.")
  config = None
  for name, value in _flags(args, flag_values):
    assert name not in OLD_FLAGS.get(command, ()), f"{where}: --{name} is an old name"
    if name.startswith("config.") and "config" in flag_values:
      assert config is not None, f"{where}: --{name} before --config"
      _check_config_field(config, name.removeprefix("config."), where)
      continue
    if name not in flag_values and name.startswith("no") and name[2:] in flag_values:
      assert flag_values[name[2:]].boolean, f"{where}: --{name}: --{name[2:]} is not boolean"
      continue
    assert name in flag_values, f"{where}: {module} has no flag --{name}"
    if name == "config":
      file, _, arg = value.partition(":")
      assert (ROOT / file).is_file(), f"{where}: no config file {file}"
      get_config = _config_module(file).get_config
      config = get_config(arg) if arg else get_config()
    elif value is not None and not _placeholder(value) and not flag_values[name].boolean:
      flag_values[name].parser.parse(value)  # raises on a value the flag refuses


# ---- links and figures ----------------------------------------------------------------------


def _slug(heading: str) -> str:
  """GitHub's anchor for a heading."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _prose(path: pathlib.Path) -> str:
  """The page without its fenced code blocks."""
  return re.sub(r"```.*?```", "", path.read_text(), flags=re.S)


@pytest.mark.parametrize("page", PAGES, ids=_page)
def test_relative_links_resolve(page):
  for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page)):
    if re.match(r"[a-z]+:", target):  # https:, mailto:
      continue
    file, _, anchor = target.partition("#")
    resolved = (page.parent / file).resolve() if file else page
    assert resolved.exists(), f"{_page(page)}: the link {target} leads nowhere"
    if anchor:
      headings = re.findall(r"^#+ (.*)$", _prose(resolved), re.M)
      assert anchor in {_slug(h) for h in headings}, (
        f"{_page(page)}: {target}: no heading with that anchor in {_page(resolved)}"
      )


def test_headline_figures_are_the_measured_ones():
  """Every ratio the README and docs/performance.md quote is in the benchmark logs."""
  measured = BENCHMARKS.read_text()
  for page in (README, DOCS / "performance.md"):
    figures = re.findall(r"\b\d+\.\d+×", page.read_text())
    assert figures, _page(page)
    for figure in figures:
      assert figure in measured, f"{_page(page)}: {figure} is not in {_page(BENCHMARKS)}"
