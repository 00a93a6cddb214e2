"""The journey hub name -> fine-tune -> predict -> export, each one command: `python -m
albert_jax.finetune` on the bundled SST-2 sample writes WORKDIR/export, `python -m
albert_jax.predict` runs it on new sentences, `python -m albert_jax.export` writes an HF model
that transformers' own pipeline runs with the same labels and scores."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from albert_jax import AlbertTokenizer, export, from_pretrained, pipeline, predict
from albert_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_RUN = dict(
  hidden_size=32,
  num_attention_heads=2,
  intermediate_size=64,
  embedding_size=16,
  num_hidden_layers=2,
)
RUN_FLAGS = dict(
  num_train_steps=20,
  warmup_steps=2,
  eval_every_steps=10,
  checkpoint_every_steps=10,
  log_every_steps=10,
  batch_size=16,
  learning_rate=3e-3,
)
SENTENCES = [
  "A gripping, beautifully acted film.",
  "Dull and far too long.",
  "Café owners won’t like it — 1,000 reasons  why.",
  "an utterly forgettable , lifeless exercise in style over substance that goes nowhere",
  "Great!",
]
F32 = 1e-5  # probabilities in [0, 1] from float32 logits of two implementations


def cli(module, *args, stdin=None):
  env = {**os.environ, "PYTHONPATH": ROOT}
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=ROOT,
    env=env,
    input=stdin,
    capture_output=True,
    text=True,
    timeout=600,
  )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """`python -m albert_jax.finetune` on the SST-2 sample (a smaller model, 20 steps)."""
  workdir = tmp_path_factory.mktemp("sst2") / "run"
  flags = [f"--config.model_overrides.{k}={v}" for k, v in SMALL_RUN.items()]
  flags += [f"--config.{k}={v}" for k, v in RUN_FLAGS.items()] + ["--config.mesh.shape.data=1"]
  done = cli(
    "albert_jax.finetune",
    "--config=configs/finetune/sst2_sample.py",
    *flags,
    f"--workdir={workdir}",
  )
  assert done.returncode == 0, done.stderr[-3000:]
  return workdir


def test_finetune_exports_the_best_step_with_labels(run):
  directory = run / "export"
  meta = json.loads((directory / "albert_jax.json").read_text())
  config = json.loads((directory / "config.json").read_text())
  best_step = int(os.listdir(run / "best")[0])
  assert meta["step"] == best_step and meta["task"] == "sst2" and meta["num_labels"] == 2
  assert meta["head"] == "sequence_classification"
  assert config["id2label"] == {"0": "negative", "1": "positive"}
  assert config["label2id"] == {"negative": 0, "positive": 1}
  final = json.loads((run / "metrics.json").read_text())
  if best_step == final["step"]:
    assert meta["metrics"] == {"validation": final["validation"]}
  assert set(meta["metrics"]["validation"]) == {"accuracy"}
  model = from_pretrained(directory)
  assert model.metadata["id2label"] == {"0": "negative", "1": "positive"}


def test_predict_export_and_transformers_agree(run, tmp_path):
  import transformers

  inputs = tmp_path / "new.txt"
  inputs.write_text("\n".join(SENTENCES) + "\n")
  out = tmp_path / "pred.jsonl"
  args = [
    "p",
    "--model",
    str(run / "export"),
    "--task",
    "text-classification",
    "--input",
    str(inputs),
    "--output",
    str(out),
    "--top_k",
    "none",
    "--noprogress",
  ]
  assert predict.main(args) == 0
  ours = [json.loads(line) for line in out.read_text().splitlines()]
  assert len(ours) == len(SENTENCES)
  assert export.main(["e", "--model", str(run / "export"), "--output", str(tmp_path / "hf")]) == 0
  hf = transformers.pipeline("text-classification", model=str(tmp_path / "hf"), device="cpu")
  theirs = hf(SENTENCES, top_k=None)
  worst = 0.0
  for a, b in zip(ours, theirs, strict=True):
    assert {r["label"] for r in a} == {r["label"] for r in b} == {"negative", "positive"}
    got = {r["label"]: r["score"] for r in a}
    for r in b:
      worst = max(worst, abs(got[r["label"]] - r["score"]))
  print(f"text-classification: max |score - transformers'| = {worst:.2e}")
  assert worst <= F32
  # the best label alone (top_k 1), in input order, from the library call
  best = pipeline("text-classification", model=str(run / "export"))(SENTENCES)
  assert [b["label"] for b in best] == [max(r, key=lambda x: x["score"])["label"] for r in ours]


def test_older_run_without_export_loads_through_its_checkpoint(run, tmp_path):
  old = tmp_path / "old"
  shutil.copytree(run, old, ignore=shutil.ignore_patterns("export"))
  exported, from_workdir = from_pretrained(run / "export"), from_pretrained(old)
  step = from_pretrained(old / "best" / os.listdir(old / "best")[0])
  assert from_workdir.metadata["step"] == exported.metadata["step"]
  assert from_workdir.head == "sequence_classification" and from_workdir.num_labels == 2
  assert from_workdir.metadata["id2label"] == exported.metadata["id2label"]
  for a, b, c in zip(
    *(jax.tree.leaves(m.params) for m in (exported, from_workdir, step)), strict=True
  ):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
  latest = max(os.listdir(old / "checkpoints"), key=int)
  assert from_pretrained(old / "checkpoints" / latest).metadata["step"] == int(latest)
  # and exports to HF with its labels
  assert export.main(["e", "--model", str(old), "--output", str(tmp_path / "hf")]) == 0
  config = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert config["id2label"] == {"0": "negative", "1": "positive"}


# ---- input files and bad input ------------------------------------------------------------------


def test_input_formats_give_the_same_results_in_input_order(run, tmp_path):
  texts = SENTENCES[:3]
  files = {
    "in.jsonl": "".join(json.dumps({"text": t}) + "\n" for t in texts),
    "in.tsv": "text\n" + "".join(t + "\n" for t in texts),
    "in.csv": "text\n" + "".join(f'"{t}"\n' for t in texts),  # quoted: the texts have commas
    "in.txt": "".join(t + "\n" for t in texts),
  }
  outputs = []
  for name, content in files.items():
    (tmp_path / name).write_text(content)
    out = tmp_path / f"{name}.out"
    args = [
      "p",
      "--model",
      str(run / "export"),
      "--task",
      "text-classification",
      "--input",
      str(tmp_path / name),
      "--output",
      str(out),
      "--noprogress",
    ]
    assert predict.main(args) == 0
    outputs.append(out.read_text())
  assert all(o == outputs[0] for o in outputs)
  assert len(outputs[0].splitlines()) == 3


@pytest.mark.parametrize(
  "task, content, message",
  [
    (
      "text-classification",
      '{"text": "fine"}\n{"sentence": "no text field"}\n',
      r"in\.jsonl:2: no 'text'",
    ),
    ("text-classification", "\n\n", r"holds no inputs"),
    (
      "question-answering",
      '{"question": "who?", "context": "me"}\n',
      r"needs a model with head 'question_answering'",
    ),
  ],
)
def test_bad_input_is_a_user_error_without_output(run, tmp_path, task, content, message):
  (tmp_path / "in.jsonl").write_text(content)
  out = tmp_path / "out.jsonl"
  args = [
    "p",
    "--model",
    str(run / "export"),
    "--task",
    task,
    "--input",
    str(tmp_path / "in.jsonl"),
    "--output",
    str(out),
    "--noprogress",
  ]
  with pytest.raises(UserError, match=message):
    predict.main(args)
  assert not out.exists() and os.listdir(tmp_path) == ["in.jsonl"]


def test_command_line_exit_code_and_stdin(run, tmp_path):
  def predict(*args: str, stdin: str | None = None):
    command = ("albert_jax.predict", "--model", str(run / "export"), "--task")
    return cli(*command, "text-classification", *args, stdin=stdin)

  done = predict("--input", "-", "--output", "-", "--max_tokens", "8", stdin="so good\nso bad\n")
  assert done.returncode == 0, done.stderr[-2000:]
  lines = [json.loads(line) for line in done.stdout.splitlines()]
  assert [set(r) for r in lines] == [{"label", "score"}] * 2
  missing = tmp_path / "absent.txt"
  done = predict("--input", str(missing))
  assert done.returncode == 2 and f"--input={missing}: no such file" in done.stderr
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"txt": "x"}\n')
  done = predict("--input", str(bad), "--output", str(tmp_path / "o.jsonl"))
  assert done.returncode == 2 and "bad.jsonl:1" in done.stderr and done.stdout == ""
  assert not (tmp_path / "o.jsonl").exists()


# ---- question answering: the SQuAD sample, the same way ----------------------------------------

QUESTIONS = [
  {
    "question": "Where did Charles Babbage live?",
    "context": "Charles Babbage lived in London with his friend near 1,000 old trees",
  },
  {"question": "What is my name?", "context": "My name is Wolfgang and I live in Berlin"},
]


@pytest.fixture(scope="module")
def squad_run(tmp_path_factory):
  """`python -m albert_jax.finetune` on the SQuAD sample (a smaller model, one epoch)."""
  workdir = tmp_path_factory.mktemp("squad") / "run"
  flags = [f"--config.model_overrides.{k}={v}" for k, v in SMALL_RUN.items()]
  flags += ["--config.num_epochs=1.0", "--config.mesh.shape.data=1", "--config.log_every_steps=1"]
  done = cli(
    "albert_jax.finetune",
    "--config=configs/finetune/squad_sample.py",
    *flags,
    f"--workdir={workdir}",
  )
  assert done.returncode == 0, done.stderr[-3000:]
  return workdir


def test_question_answering_journey(squad_run, tmp_path):
  import transformers

  from tests.test_pipelines import _hf_answer

  meta = json.loads((squad_run / "export" / "albert_jax.json").read_text())
  assert meta["head"] == "question_answering" and meta["task"] == "squad_v1"
  assert "f1" in meta["metrics"]["validation"]
  inputs = tmp_path / "q.jsonl"
  inputs.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
  out = tmp_path / "a.jsonl"
  args = [
    "p",
    "--model",
    str(squad_run / "export"),
    "--task",
    "question-answering",
    "--input",
    str(inputs),
    "--output",
    str(out),
    "--noprogress",
  ]
  assert predict.main(args) == 0
  ours = [json.loads(line) for line in out.read_text().splitlines()]
  assert export.main(["e", "--model", str(squad_run), "--output", str(tmp_path / "hf")]) == 0
  ref = transformers.AlbertForQuestionAnswering.from_pretrained(str(tmp_path / "hf")).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
  for q, a in zip(QUESTIONS, ours, strict=True):
    assert AlbertTokenizer().tokenize(q["context"]) == tokenizer.tokenize(q["context"])
    want = _hf_answer(ref, tokenizer, q["question"], q["context"], max_answer_len=15)
    assert (a["start"], a["end"], a["answer"]) == (want["start"], want["end"], want["answer"])
    assert a["score"] == pytest.approx(want["score"], abs=1e-4)
  # the length flags reach the pipeline under either name: short windows, as the library call
  direct = pipeline("question-answering", model=str(squad_run / "export"), max_seq_len=32,
                    doc_stride=8)(QUESTIONS)  # fmt: skip
  for lengths in (["--max_seq_length", "32"], ["--max_seq_len", "32"]):
    assert predict.main([*args, *lengths, "--doc_stride", "8"]) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == direct
  # a question that leaves no room for the context: an error naming it, no output file
  inputs.write_text(json.dumps({"question": "why " * 200, "context": "short."}) + "\n")
  out.unlink()
  with pytest.raises(UserError, match=r"Question 0 .* leaves no room for the context"):
    predict.main(args)
  assert not out.exists()


# ---- bf16: the same labels, scores within the error bf16's precision allows -------------------

BF16_U = (
  2.0**-8
)  # bf16 keeps 8 significant bits: rounding to nearest moves a value by <= 2^-8 of it


def _predict_scores(model_dir, inputs, out, dtype, function):
  args = ["p", "--model", str(model_dir), "--task", "text-classification", "--input", str(inputs)]
  args += ["--output", str(out), "--top_k", "none", "--function_to_apply", function]
  assert predict.main([*args, "--dtype", dtype, "--noprogress"]) == 0
  rows = [
    {r["label"]: r["score"] for r in json.loads(line)} for line in out.read_text().splitlines()
  ]
  return np.array([[row[k] for k in sorted(row)] for row in rows])  # [inputs, labels]


def test_predict_bfloat16_agrees_with_float32_within_bf16_precision(tmp_path):
  """The error bound, from bf16's unit roundoff u = 2^-8:

  - the pooled features h (tanh, |h_i| <= 1) come out of n bf16-rounded stages: the embeddings'
    lookup, LayerNorm and projection; per transformer block the attention projections, the
    probabilities, the context, the output projection, the residual + LayerNorm, the FFN's two
    projections and its GELU, the second residual + LayerNorm (9); the pooler's dense and tanh.
    LayerNorm brings each block's activations back to scale ~1, so each stage adds an error of
    at most u of an O(1) value; these rounding errors are independent, and add in quadrature
    (the usual probabilistic rounding-error model): each h_i is off by <= sqrt(n) u;
  - a logit z_k = W_k . h + b_k sums H such independent errors: |dz_k| <= sqrt(n) u |W_k|_2,
    plus its own rounding to bf16, u |z_k|. eps = the largest over the labels;
  - softmax: p_i' / p_i = exp(dz_i) / sum_j p_j exp(dz_j) lies in [e^-2eps, e^2eps], so
    |p_i' - p_i| <= (e^(2 eps) - 1) min(p_i, 1 - p_i) (the same for the other labels' sum);
    and where the float32 logits' margin (best - second) exceeds 2 eps, the best label stays.
  """
  from tests.test_pipelines import _convert_and_export

  ref, model_dir, _ = _convert_and_export(tmp_path, "sequence_classification", seed=7, num_labels=3)
  texts = [f"Sentence {i}: " + "a rather long and winding " * (i % 9) + "story." for i in range(24)]
  inputs = tmp_path / "in.txt"
  inputs.write_text("\n".join(texts) + "\n")
  z32, z16 = (
    _predict_scores(model_dir, inputs, tmp_path / f"z_{d}", d, "none")
    for d in ("float32", "bfloat16")
  )
  p32, p16 = (
    _predict_scores(model_dir, inputs, tmp_path / f"p_{d}", d, "softmax")
    for d in ("float32", "bfloat16")
  )
  config = from_pretrained(model_dir).config
  blocks = config.num_hidden_layers * config.inner_group_num
  n = 3 + 9 * blocks + 2
  W = ref.classifier.weight.detach().numpy().astype(np.float64)  # [labels, H]
  eps = np.sqrt(n) * BF16_U * np.linalg.norm(W, axis=1).max() + BF16_U * np.abs(z32).max(1)
  print(f"bf16: max |dz| {np.abs(z16 - z32).max():.2g}, bound {eps.min():.2g}..{eps.max():.2g}")
  assert np.abs(z16 - z32).max() > 0  # the option computes in bf16
  assert np.all(np.abs(z16 - z32) <= eps[:, None])
  bound = np.expm1(2 * eps)[:, None] * np.minimum(p32, 1 - p32)
  assert np.all(np.abs(p16 - p32) <= bound)
  top2 = np.sort(z32, axis=1)[:, -2:]
  clear = top2[:, 1] - top2[:, 0] > 2 * eps
  assert clear.mean() >= 0.5  # most inputs are far enough from a tie to compare labels
  np.testing.assert_array_equal(p16[clear].argmax(1), p32[clear].argmax(1))


# ---- multiple choice from a JSONL file --------------------------------------------------------

CHOICE_ITEMS = [
  {"question": "The sky is", "choices": ["blue.", "a large green fish in the sea.", "red"]},
  {"context": "Paris is in France.", "question": "Paris is in", "choices": ["France", "Peru"]},
  {"question": "Which is a fruit?", "choices": ["an apple", "a chair", "a rock", "a cloud"]},
]


def test_predict_multiple_choice_file_equals_the_pipeline_and_the_model(tmp_path):
  import torch
  import transformers

  from tests.test_pipelines import _convert_and_export

  ref, model_dir, hf_dir = _convert_and_export(tmp_path, "multiple_choice", seed=5)
  inputs, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
  inputs.write_text("".join(json.dumps(item) + "\n" for item in CHOICE_ITEMS))
  args = ["p", "--model", str(model_dir), "--task", "multiple-choice", "--input", str(inputs)]
  assert predict.main([*args, "--output", str(out), "--noprogress"]) == 0
  got = [json.loads(line) for line in out.read_text().splitlines()]
  want = pipeline("multiple-choice", model=str(model_dir))(CHOICE_ITEMS)
  assert [set(g) for g in got] == [{"label", "scores"}] * len(CHOICE_ITEMS)
  assert [g["label"] for g in got] == [w["label"] for w in want]
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(g["scores"], w["scores"], atol=F32)
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
  for item, g in zip(CHOICE_ITEMS, got, strict=True):  # HF's AlbertForMultipleChoice
    first = " ".join(t for t in (item.get("context"), item["question"]) if t)
    enc = tokenizer(
      [first] * len(item["choices"]), item["choices"], padding=True, return_token_type_ids=True
    )
    with torch.no_grad():
      logits = ref(**{k: torch.tensor(v)[None] for k, v in enc.items()}).logits[0].numpy()
    np.testing.assert_allclose(g["scores"], np.exp(logits) / np.exp(logits).sum(), atol=F32)
    assert g["label"] == int(logits.argmax())

  bad = [CHOICE_ITEMS[0], {"question": "No choices here?", "context": "none"}]
  inputs.write_text("".join(json.dumps(item) + "\n" for item in bad))
  out.unlink()
  done = cli("albert_jax.predict", *args[1:], "--output", str(out))
  assert done.returncode == 2, done.stderr[-2000:]
  assert "in.jsonl:2: no 'choices' field" in done.stderr and done.stdout == ""
  assert not out.exists()
