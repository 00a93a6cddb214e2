"""`python -m albert_jax.export --format saved_model|stablehlo`: the SavedModel's raw-text and
token-id signatures and the StableHLO programs against albert_jax's own pipeline and forward
pass, each run in a process that has neither jax nor albert_jax."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
import transformers

import albert_jax
from albert_jax import AlbertConfig, cli, export
from albert_jax.heads import create_module, init_params
from albert_jax.tokenizer import AlbertTokenizer
from albert_jax.trainer import finetune
from albert_jax.weights import converted, sources
from tests.runs import TINY, tiny
from tests.serve_texts import PAIRS, TEXTS

# f32 through the same StableHLO on the same CPU: what remains are reduction orders (TF's
# softmax against the pipeline's float64 one) at the scale of float32's epsilon.
TOL = 1e-5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_export(*args):
  return export.main(["export", *map(str, args)])


# Stands for a machine with neither jax nor albert_jax installed: importing them fails (as
# `tensorflow.lite` tries `import jax` and goes on without it when that fails). The script
# checks that the import is refused, and at its end that none of them got loaded.
WITHOUT_JAX = """
import sys
BLOCKED = {blocked!r}
class Block:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in BLOCKED:
      raise ImportError(f"{name} is not installed here")
sys.meta_path.insert(0, Block())
try:
  import albert_jax
  raise SystemExit("albert_jax imported")
except ImportError:
  pass
def assert_no_jax():
  loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
  assert not loaded, loaded
"""


def fresh_python(
  script: str, block=("jax", "jaxlib", "flax", "albert_jax")
) -> subprocess.CompletedProcess:
  """`script` in a new interpreter where the packages `block` cannot be imported."""
  prelude = WITHOUT_JAX.replace("{blocked!r}", repr(tuple(block)))
  return subprocess.run(
    [sys.executable, "-c", prelude + textwrap.dedent(script)],
    capture_output=True,
    text=True,
    timeout=600,
  )


def random_classifier(path, labels):
  """A converted tiny sequence classifier with random weights and named labels."""
  config = AlbertConfig(**TINY)
  module = create_module(config, "sequence_classification", len(labels))
  params = init_params(module, jax.random.key(7))
  meta = {
    "head": "sequence_classification",
    "num_labels": len(labels),
    "id2label": {str(i): name for i, name in enumerate(labels)},
  }
  head = "sequence_classification"
  converted.write_converted(
    path, converted.Converted(config, params, head, AlbertTokenizer(), meta)
  )
  return path


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
  """Two sequence classifiers, each exported as a SavedModel: a fine-tuned run's export and a
  random-weight HF model converted."""
  root = tmp_path_factory.mktemp("serve")
  workdir = root / "run"
  finetune.run(tiny("sst2_sample"), str(workdir))
  config = transformers.AlbertConfig(
    vocab_size=30000, num_labels=3, id2label={0: "neg", 1: "mixed", 2: "pos"}, **TINY
  )
  transformers.AlbertForSequenceClassification(config).save_pretrained(root / "hf")
  sources.convert(root / "hf", root / "hf_converted")
  models = {"finetuned": workdir / "export", "hf": root / "hf_converted"}
  for name, model in models.items():
    run_export("--model", model, "--format", "saved_model", "--output", root / f"{name}_sm")
  return root, models


def saved_model_answers(paths: dict) -> dict:
  """serving_default on TEXTS and text_pair on PAIRS of each SavedModel, in a process that
  imports neither jax nor albert_jax (it checks)."""
  script = f"""
    import json, sys
    import tensorflow as tf
    import tensorflow_text  # the SentencePiece ops
    texts, pairs = {TEXTS!r}, {PAIRS!r}
    out = {{}}
    for name, path in { ({k: str(v) for k, v in paths.items()})!r}.items():
      model = tf.saved_model.load(path)
      one = model.signatures["serving_default"](text=tf.constant(texts))
      two = model.signatures["text_pair"](
        text=tf.constant([a for a, _ in pairs]), text_pair=tf.constant([b for _, b in pairs])
      )
      out[name] = [
        {{"label": [l.decode() for l in o["label"].numpy()], "score": o["score"].numpy().tolist()}}
        for o in (one, two)
      ]
    assert_no_jax()
    print(json.dumps(out))
  """
  done = fresh_python(script)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.splitlines()[-1])


def test_saved_model_answers_as_the_pipeline_in_a_process_without_jax(classifiers):
  root, models = classifiers
  answers = saved_model_answers({name: root / f"{name}_sm" for name in models})
  for name, model in models.items():
    classify = albert_jax.pipeline("text-classification", model=model)
    singles = classify(TEXTS)
    pairs = classify([{"text": a, "text_pair": b} for a, b in PAIRS])
    for got, want in zip(answers[name], (singles, pairs), strict=True):
      assert got["label"] == [w["label"] for w in want], name
      np.testing.assert_allclose(got["score"], [w["score"] for w in want], atol=TOL, err_msg=name)


# ---- token ids: a head without a task (masked LM), lowered for three platforms --------------


@pytest.fixture(scope="module")
def masked_lm(tmp_path_factory):
  """A random tiny masked LM, exported in both formats for cpu, cuda and tpu."""
  root = tmp_path_factory.mktemp("mlm")
  config = AlbertConfig(**TINY)
  module = create_module(config, "masked_lm")
  params = init_params(module, jax.random.key(3))
  meta = {"head": "masked_lm", "num_labels": None, "id2label": None}
  converted.write_converted(
    root / "model", converted.Converted(config, params, "masked_lm", AlbertTokenizer(), meta)
  )
  for form in ("saved_model", "stablehlo"):
    run_export(
      "--model",
      root / "model",
      "--format",
      form,
      "--platforms",
      "cpu,cuda,tpu",
      "--output",
      root / form,
    )
  return root, module, params


def random_inputs(batch, length, seed=0):
  rng = np.random.RandomState(seed)
  ids = rng.randint(5, 30000, (batch, length)).astype(np.int32)
  mask = (np.arange(length) < rng.randint(1, length + 1, (batch, 1))).astype(np.int32)
  types = (np.arange(length) >= rng.randint(0, length + 1, (batch, 1))).astype(np.int32)
  return ids, mask, types


SHAPES = [(b, n) for b in (1, 3, 8) for n in (1, 17, TINY["max_position_embeddings"])]


@pytest.fixture(scope="module")
def forward(masked_lm):
  """The JAX forward pass's logits at each of SHAPES: {shape: (inputs, logits)}."""
  _, module, params = masked_lm
  apply = jax.jit(
    lambda ids, mask, types: module.apply({"params": params}, ids, mask, types).logits
  )
  out = {}
  for batch, length in SHAPES:
    inputs = random_inputs(batch, length, seed=batch + length)
    out[batch, length] = inputs, np.asarray(apply(*inputs))
  return out


def test_token_ids_signature_at_any_batch_and_length(masked_lm, forward):
  import tensorflow as tf

  root, _, _ = masked_lm
  signature = tf.saved_model.load(str(root / "saved_model")).signatures["token_ids"]
  for (batch, length), ((ids, mask, types), want) in forward.items():
    got = signature(input_ids=ids, attention_mask=mask, token_type_ids=types)["logits"].numpy()
    np.testing.assert_allclose(got, want, atol=TOL, rtol=TOL, err_msg=f"{batch}x{length}")


def test_a_head_without_task_gets_only_token_ids(masked_lm, tmp_path, capsys):
  import tensorflow as tf

  root, _, _ = masked_lm
  assert sorted(tf.saved_model.load(str(root / "saved_model")).signatures) == ["token_ids"]
  run_export("--model", root / "model", "--format", "saved_model", "--output", tmp_path / "sm")
  assert "has only the token_ids signature" in capsys.readouterr().err


def test_stablehlo_runs_where_albert_jax_cannot_be_imported(masked_lm, forward, tmp_path):
  """Three of the shapes (each compiles anew), through the loader the export wrote."""
  root, _, _ = masked_lm
  cases = {f"{b}x{n}": forward[b, n] for b, n in SHAPES[::4]}
  arrays = {f"{k}/{i}": a for k, (inputs, _) in cases.items() for i, a in enumerate(inputs)}
  np.savez(tmp_path / "inputs.npz", **arrays)
  out_dir = root / "stablehlo"
  script = f"""
    import numpy as np
    sys.path.insert(0, {str(out_dir)!r})
    import albert_serving  # the loader the export wrote next to the programs
    model = albert_serving.load({str(out_dir)!r})
    assert model.signatures["token_ids"].platforms == ("cpu", "cuda", "tpu")
    stored = np.load({str(tmp_path / "inputs.npz")!r})
    out = {{k: model.token_ids(*(stored[f"{{k}}/{{i}}"] for i in range(3)))["logits"]
           for k in {sorted(cases)!r}}}
    np.savez({str(tmp_path / "out.npz")!r}, **out)
    assert_no_jax()
  """
  done = fresh_python(script, block=("flax", "albert_jax"))
  assert done.returncode == 0, done.stderr[-3000:]
  out = np.load(tmp_path / "out.npz")
  assert sorted(out.files) == sorted(cases)
  for key, (_, want) in cases.items():
    np.testing.assert_allclose(out[key], want, atol=TOL, rtol=TOL, err_msg=key)


# ---- bad input: exit 2, one line, nothing written --------------------------------------------


def exits_2(argv, capsys) -> str:
  """Runs `python -m albert_jax.export ARGV` as the program does; returns its error line."""
  with pytest.raises(SystemExit) as exit_:
    cli.run(export.main, export.FLAGS, ["export", *map(str, argv)])
  assert exit_.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[0].startswith("error: ")
  return err[0]


def test_bad_input_exits_2_and_writes_nothing(masked_lm, tmp_path, capsys, monkeypatch):
  root, _, _ = masked_lm
  model, out = ["--model", root / "model"], tmp_path / "out"
  assert "--format" in exits_2([*model, "--format", "onnx", "--output", out], capsys)
  line = exits_2(
    [*model, "--format", "stablehlo", "--platforms", "cpu,gpu", "--output", out], capsys
  )
  assert "--platforms=cpu,gpu" in line and "cuda" in line
  assert "--dtype" in exits_2([*model, "--dtype", "bfloat16", "--output", out], capsys)  # hf

  out.mkdir()
  for form in ("saved_model", "stablehlo"):
    line = exits_2([*model, "--format", form, "--output", out], capsys)
    assert "already exists" in line
  assert os.listdir(out) == []
  out.rmdir()

  with monkeypatch.context() as patch:
    patch.setitem(sys.modules, "tensorflow_text", None)  # not installed
    line = exits_2([*model, "--format", "saved_model", "--output", out], capsys)
  assert "pip install 'albert_jax[serve]'" in line

  import tensorflow as tf

  def fail(module, path, **kwargs):
    (Path(path) / "saved_model.pb").write_text("half")
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(tf.saved_model, "save", fail)
  assert "No space left" in exits_2([*model, "--format", "saved_model", "--output", out], capsys)
  assert os.listdir(tmp_path) == []  # neither OUT nor its temporary sibling
