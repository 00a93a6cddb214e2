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
from albert_jax.errors import UserError
from albert_jax.heads import create_module, init_params
from albert_jax.serve import qa
from albert_jax.tokenizer import AlbertTokenizer
from albert_jax.trainer import finetune
from albert_jax.weights import converted, sources
from tests.runs import TINY, tiny
from tests.serve_qa import QA_PAIRS
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


NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  """{name: (pipeline task, model directory, SavedModel)}: a sequence classifier, a token
  classifier and a question answerer each from a fine-tuning run's export and from a
  random-weight HF model converted, each exported once."""
  root = tmp_path_factory.mktemp("serve")
  models = {}
  for name, task, config in [
    ("sst2_run", "text-classification", tiny("sst2_sample")),
    ("ner_run", "token-classification", tiny("ner_sample")),
    (
      "squad_run",
      "question-answering",
      tiny("squad_sample", max_query_length=8, doc_stride=8, num_train_steps=2),
    ),
  ]:
    finetune.run(config, str(root / name))
    models[name] = task, root / name / "export"
  for name, task, hf_class, labels in [
    (
      "hf_classifier",
      "text-classification",
      "AlbertForSequenceClassification",
      {0: "neg", 1: "mixed", 2: "pos"},
    ),
    ("hf_tagger", "token-classification", "AlbertForTokenClassification", NER_LABELS),
    ("hf_qa", "question-answering", "AlbertForQuestionAnswering", {0: "LABEL_0", 1: "LABEL_1"}),
  ]:
    config = transformers.AlbertConfig(vocab_size=30000, id2label=labels, **TINY)
    getattr(transformers, hf_class)(config).save_pretrained(root / name)
    sources.convert(root / name, root / f"{name}_converted")
    models[name] = task, root / f"{name}_converted"
  for name, (_, model) in models.items():
    run_export("--model", model, "--format", "saved_model", "--output", root / f"{name}_sm")
  return {name: (task, model, root / f"{name}_sm") for name, (task, model) in models.items()}


def fits(text: str) -> bool:
  """Whether the token-classification pipeline takes `text` with the tiny model (it refuses
  longer texts; the SavedModel truncates them)."""
  return len(AlbertTokenizer().tokenize(text)) + 2 <= TINY["max_position_embeddings"]


TAG_TEXTS = [t for t in TEXTS if fits(t)]
# Where the SavedModel's entities differ from the pipeline's (docs/serving.md, tested below):
# special tokens written in the text are text to the graph's offsets tokenizer (other pieces).
SPECIAL_TEXT = "special [CLS] tokens [SEP] in <unk> the [MASK] text<pad>"

# Question answering: one window of the tiny model's 64 positions (the question cut to 32
# pieces); contexts longer than it, where the pipeline would also rank later windows; and
# inputs the pipeline refuses (no question or context text).
WINDOW = qa.window_size(TINY["max_position_embeddings"])
QUESTION_LEN = qa.question_length(WINDOW)
LONG_PAIRS = [
  ("Which word?", "word " * 100),
  ("Who came?", "Ada came first, then Bob, and later Carol with Dave and Eve. " * 8),
]
REFUSED_PAIRS = [("", "a context"), ("   ", "a context"), ("a question", ""), ("a question", " \t")]
QA_INPUTS = QA_PAIRS + LONG_PAIRS + REFUSED_PAIRS


@pytest.fixture(scope="module")
def answers(served) -> dict:
  """Every SavedModel's answers on the test texts, from a process that cannot import jax or
  albert_jax: text classification's serving_default on TEXTS and text_pair on PAIRS, token
  classification's serving_default on TAG_TEXTS, question answering's on QA_INPUTS (and each
  SavedModel's signature names)."""
  paths = {name: (task, str(sm)) for name, (task, _, sm) in served.items()}
  script = f"""
    import json
    import tensorflow as tf
    import tensorflow_text  # the SentencePiece ops
    texts, pairs, tag_texts = {TEXTS!r}, {PAIRS!r}, {TAG_TEXTS!r}
    qa_inputs = {QA_INPUTS!r}

    def plain(x):
      if isinstance(x, bytes):
        return x.decode()
      return [plain(y) for y in x] if isinstance(x, list) else x

    def lists(out):
      return {{k: plain(v.numpy().tolist()) for k, v in out.items()}}

    out = {{}}
    for name, (task, path) in {paths!r}.items():
      model = tf.saved_model.load(path)
      if task == "text-classification":
        one = model.signatures["serving_default"](text=tf.constant(texts))
        two = model.signatures["text_pair"](
          text=tf.constant([a for a, _ in pairs]), text_pair=tf.constant([b for _, b in pairs])
        )
        out[name] = [lists(one), lists(two)]
      elif task == "question-answering":
        out[name] = lists(model.signatures["serving_default"](
          question=tf.constant([q for q, _ in qa_inputs]),
          context=tf.constant([c for _, c in qa_inputs]),
        ))
      else:
        out[name] = lists(model.signatures["serving_default"](text=tf.constant(tag_texts)))
      out[name + "/signatures"] = sorted(model.signatures)
    assert_no_jax()
    print(json.dumps(out))
  """
  done = fresh_python(script)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("name", ["sst2_run", "hf_classifier"])
def test_text_classification_answers_as_the_pipeline(served, answers, name):
  _, model, _ = served[name]
  classify = albert_jax.pipeline("text-classification", model=model)
  singles = classify(TEXTS)
  pairs = classify([{"text": a, "text_pair": b} for a, b in PAIRS])
  for got, want in zip(answers[name], (singles, pairs), strict=True):
    assert got["label"] == [w["label"] for w in want]
    np.testing.assert_allclose(got["score"], [w["score"] for w in want], atol=TOL)


def saved_entities(out: dict, b: int) -> list[dict]:
  """Text b's pieces from the token-classification signature's [B, T] outputs."""
  n = sum(1 for i in out["index"][b] if i > 0)
  return [{key: out[key][b][k] for key in ENTITY_KEYS} for k in range(n)]


ENTITY_KEYS = ("entity", "score", "index", "word", "start", "end")


@pytest.mark.parametrize("name", ["ner_run", "hf_tagger"])
def test_token_classification_answers_as_the_pipeline(served, answers, name):
  _, model, _ = served[name]
  tag = albert_jax.pipeline("token-classification", model=model, ignore_labels=[])
  assert len(TAG_TEXTS) >= 28
  for b, (text, want) in enumerate(zip(TAG_TEXTS, tag(TAG_TEXTS), strict=True)):
    got = saved_entities(answers[name], b)
    if text == SPECIAL_TEXT:
      assert [g["word"] for g in got] != [w["word"] for w in want]
      continue
    assert [g["entity"] for g in got] == [w["entity"] for w in want], repr(text)
    np.testing.assert_allclose([g["score"] for g in got], [w["score"] for w in want], atol=TOL)
    for key in ("index", "word", "start", "end"):
      assert [g[key] for g in got] == [w[key] for w in want], (key, repr(text))


def test_token_classification_exceptions_are_as_documented(served, answers):
  """Special tokens: the graph's pieces are those of the words `[`, `cls`, `]`."""
  out = answers["hf_tagger"]
  words = [g["word"] for g in saved_entities(out, TAG_TEXTS.index(SPECIAL_TEXT))]
  assert "[CLS]" not in words and "▁[" in words


def saved_answer(out: dict, b: int) -> dict:
  """Input b's answer from the question-answering signature's [B] outputs."""
  return {key: out[key][b] for key in ("answer", "start", "end", "score")}


def assert_same_answer(got: dict, want: dict, what: str) -> None:
  assert (got["answer"], got["start"], got["end"]) == (
    want["answer"],
    want["start"],
    want["end"],
  ), what
  np.testing.assert_allclose(got["score"], want["score"], atol=TOL, err_msg=what)


@pytest.mark.parametrize("name", ["squad_run", "hf_qa"])
def test_question_answering_answers_as_the_pipeline(served, answers, name):
  """Contexts that fit one window: the pipeline's answer, offsets and score, and the answer
  is the characters its offsets name."""
  _, model, _ = served[name]
  assert answers[name + "/signatures"] == ["serving_default", "token_ids"]
  answer = albert_jax.pipeline("question-answering", model=model, max_question_len=QUESTION_LEN)
  assert WINDOW == answer.resolved()["max_seq_len"]
  assert len(QA_PAIRS) >= 30
  want = answer([{"question": q, "context": c} for q, c in QA_PAIRS])
  for b, (_, context) in enumerate(QA_PAIRS):
    got = saved_answer(answers[name], b)
    assert got["answer"] == context[got["start"] : got["end"]], repr(context)
    assert_same_answer(got, want[b], repr(context))


@pytest.mark.parametrize("name", ["squad_run", "hf_qa"])
def test_question_answering_reads_one_window(served, answers, name):
  """A context longer than the window: the graph answers from its first window alone, as the
  pipeline does on the text that window holds (the pipeline, given the whole context, also
  ranks the spans of later windows)."""
  _, model, _ = served[name]
  answer = albert_jax.pipeline("question-answering", model=model, max_question_len=QUESTION_LEN)
  tokenizer = answer.model.tokenizer
  for b, (question, context) in enumerate(LONG_PAIRS, start=len(QA_PAIRS)):
    room = WINDOW - 3 - min(len(tokenizer.tokenize(question)), QUESTION_LEN)
    pieces, offsets = tokenizer.tokenize_with_offsets(context)
    assert len(pieces) > room  # more than one window
    cut = int(offsets[room - 1, 1])
    got = saved_answer(answers[name], b)
    assert got["end"] <= cut
    assert_same_answer(got, answer(question=question, context=context[:cut]), repr(context))


def test_question_answering_without_question_or_context_answers_nothing(served, answers):
  """What the pipeline refuses (an error), the graph answers with "" at 0 scored 0."""
  _, model, _ = served["hf_qa"]
  answer = albert_jax.pipeline("question-answering", model=model)
  for b, (question, context) in enumerate(REFUSED_PAIRS, start=len(QA_PAIRS) + len(LONG_PAIRS)):
    with pytest.raises(UserError, match="has no"):
      answer(question=question, context=context)
    got = saved_answer(answers["hf_qa"], b)
    assert got == {"answer": "", "start": 0, "end": 0, "score": 0.0}, (question, context)


def test_feature_extraction_gives_the_pipeline_hidden_states(tmp_path):
  import tensorflow as tf

  config = AlbertConfig(**TINY)
  params = init_params(create_module(config, "base"), jax.random.key(5))
  meta = {"head": "base", "num_labels": None, "id2label": None}
  path = tmp_path / "model"
  converted.write_converted(
    path, converted.Converted(config, params, "base", AlbertTokenizer(), meta)
  )
  run_export("--model", path, "--format", "saved_model", "--output", tmp_path / "sm")
  texts = TAG_TEXTS[:8]
  signature = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
  out = signature(text=tf.constant(texts))
  want = albert_jax.pipeline("feature-extraction", model=path)(texts)
  for b, rows in enumerate(want):
    n = int(out["attention_mask"][b].numpy().sum())
    assert n == len(rows[0])
    np.testing.assert_allclose(out["last_hidden_state"][b, :n].numpy(), rows[0], atol=TOL, rtol=TOL)


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


def test_bfloat16_stablehlo_computes_as_the_bfloat16_model(masked_lm, tmp_path):
  """--dtype bfloat16: the program computes in bfloat16, as the model loaded with that dtype
  (the same XLA program on the same CPU: equal up to float32 rounding of its outputs)."""
  import jax.numpy as jnp

  from albert_jax import from_pretrained, serving

  root, _, _ = masked_lm
  out = tmp_path / "bf16"
  run_export(
    "--model", root / "model", "--format", "stablehlo", "--dtype", "bfloat16", "--output", out
  )
  assert json.loads((out / serving.MANIFEST_FILE).read_text())["dtype"] == "bfloat16"
  ids, mask, types = random_inputs(2, 9)
  got = serving.load(out).token_ids(ids, mask, types)["logits"]
  logits = {}
  for dtype in (jnp.bfloat16, jnp.float32):
    model = from_pretrained(root / "model", dtype=dtype)
    apply = jax.jit(lambda p, *x, m=model: m.module.apply({"params": p}, *x).logits)
    logits[dtype] = np.asarray(apply(model.params, ids, mask, types).astype(jnp.float32))
  want, f32 = logits[jnp.bfloat16], logits[jnp.float32]
  np.testing.assert_allclose(got, want, atol=TOL, rtol=TOL)
  assert np.abs(got - f32).max() > 1e-3  # it did compute in bfloat16
