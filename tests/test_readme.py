"""The README's Python example runs as written (at a tiny size)."""

import importlib.util
import pathlib
import re

README = pathlib.Path(__file__).parent.parent / "README.md"


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


def _config_module(file: str):
  path = README.parent / "configs" / "finetune" / file
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_readme_recipe_table_matches_the_configs():
  """Each row of the fine-tuning table is the recipe its config runs, and every GLUE task has
  a row."""
  glue = _config_module("glue.py")
  table = re.search(r"\| task \| lr \| batch .*?\n\|[-|]+\|\n(.*?)\n\n", README.read_text(), re.S)
  seen = []
  for line in table[1].splitlines():
    task, lr, batch, steps, warmup, length = (cell.strip() for cell in line.strip("|").split("|"))
    name = task.split(" ")[0].lower().replace("-", "")
    if name == "squad":
      for file in ("squad_v1.py", "squad_v2.py"):
        c = _config_module(file).get_config()
        assert (steps, warmup) == (f"{c.num_epochs:g} epochs", f"{c.warmup_fraction:.0%}"), file
        assert length == f"{c.max_seq_length}, stride {c.doc_stride}, query {c.max_query_length}"
        assert (float(lr), int(batch)) == (c.learning_rate, c.batch_size), file
      seen.append(name)
      continue
    if name == "conll2003":  # "CoNLL-2003 NER/POS/chunks, WikiANN en": epochs, as SQuAD
      for file in ("conll2003.py", "wikiann_en.py"):
        c = _config_module(file).get_config()
        assert (steps, warmup) == (f"{c.num_epochs:g} epochs", f"{c.warmup_fraction:.0%}"), file
        assert length == f"{c.max_seq_length} (longer: windows)", file
        assert (float(lr), int(batch)) == (c.learning_rate, c.batch_size), file
      seen.append(name)
      continue
    c = _config_module("race.py").get_config() if name == "race" else glue.get_config(name)
    got = (c.learning_rate, c.batch_size, c.num_train_steps, c.warmup_steps, c.max_seq_length)
    assert (float(lr), int(batch), int(steps), int(warmup), int(length)) == got, task
    seen.append(name)
  assert sorted(seen) == sorted([*glue.RECIPES, "squad", "race", "conll2003"])
