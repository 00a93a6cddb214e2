"""The README's Python example runs as written (at a tiny size)."""

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
