"""Task data: the registry, GLUE and RACE loading (tfds mock data and local files), features,
postprocessing of crafted logits, prediction files, the bundled SST-2 sample, and bad input.

SQuAD's windows, offsets and span search are in tests/test_squad_features.py.
"""

import collections
import csv
import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from albert_jax import metrics
from albert_jax.data import glue, race, tasks
from albert_jax.tokenizer import AlbertTokenizer

GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")
LEN = 32


@pytest.fixture(scope="module")
def tok():
  return AlbertTokenizer()


def _ids(tok, text):
  return tok.convert_tokens_to_ids(tok.tokenize(text))


def _write_tsv(path, header, rows):
  path.write_text("\n".join("\t".join(map(str, r)) for r in [header, *rows]) + "\n")
  return str(path)


# ---- the registry -----------------------------------------------------------------------------


def test_registry():
  assert tuple(tasks.TASKS) == (
    *GLUE_TASKS,
    "squad_v1",
    "squad_v2",
    "race_high",
    "race_middle",
    "race_all",
    "conll2003",
    "conll2003_pos",
    "conll2003_chunk",
    "wikiann_en",
  )
  mnli = tasks.get_task("MNLI")
  assert (mnli.head, mnli.num_labels) == ("sequence_classification", 3)
  assert mnli.eval_splits == ("validation_matched", "validation_mismatched")
  assert mnli.label_names == ("entailment", "neutral", "contradiction")
  stsb = tasks.get_task("sts-b")
  assert (stsb.num_labels, stsb.label_names) == (1, ())
  squad = tasks.get_task("squad_v2")
  assert (squad.head, squad.num_labels, squad.eval_splits) == (
    "question_answering",
    0,
    ("validation",),
  )
  race_all = tasks.get_task("race_all")
  assert (race_all.head, race_all.num_labels, race_all.label_names) == (
    "multiple_choice",
    4,
    ("A", "B", "C", "D"),
  )
  with pytest.raises(ValueError, match=r"unknown task 'glue'.*cola.*race_all"):
    tasks.get_task("glue")


# ---- GLUE ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GLUE_TASKS)
def test_glue_from_tfds_mock_data(name, tok, tmp_path):
  task = tasks.get_task(name)
  split = task.eval_splits[-1]
  # 5: tfds' random mock `idx` values repeat from the 6th mnli record on (see the next test)
  with tfds.testing.mock_data(num_examples=5):
    examples = tasks.load_examples(task, split, data_dir=str(tmp_path))
  assert len(examples) == 5
  features = tasks.featurize(task, examples, tok, LEN)
  arrays = features.arrays
  assert arrays["input_ids"].shape == (5, LEN) and arrays["input_ids"].dtype == np.int32
  assert arrays["label"].dtype == (np.float32 if name == "stsb" else np.int32)
  first = examples[0]
  expected = tok(first["text_a"], first["text_b"], truncation=True, max_length=LEN)["input_ids"]
  assert arrays["input_ids"][0, : len(expected)].tolist() == expected
  assert arrays["attention_mask"][0].sum() == len(expected)

  logits = np.random.default_rng(0).normal(size=(5, task.num_labels)).astype(np.float32)
  predictions, scores = tasks.postprocess(task, examples, features, {"logits": logits})
  preds = logits[:, 0] if name == "stsb" else logits.argmax(-1)
  assert list(predictions.values) == [ex["idx"] for ex in examples]
  np.testing.assert_allclose(list(predictions.values.values()), preds, rtol=1e-6)
  labels = [ex["label"] for ex in examples]
  assert scores == metrics.glue_metrics(name, preds, labels)
  [path] = tasks.write_predictions(task, predictions, tmp_path / "out", split)
  assert path == str(tmp_path / "out" / split / glue.submission_file_name(name, split))
  assert path.endswith({"mnli": "MNLI-mm.tsv", "sst2": "SST-2.tsv"}.get(name, ".tsv"))
  with open(path) as f:
    rows = list(csv.reader(f, delimiter="\t"))
  assert rows[0] == ["index", "prediction"] and len(rows) == 6


def test_glue_duplicate_idx_rejected(tmp_path):
  with tfds.testing.mock_data(num_examples=8):
    with pytest.raises(ValueError, match=r"idx 250 is also the idx of tfds glue/mnli"):
      tasks.load_examples(tasks.get_task("mnli"), "train", data_dir=str(tmp_path))


def test_glue_local_files_pairs_label_names_and_submission(tok, tmp_path):
  task = tasks.get_task("mnli")
  rows = [
    ("A man is playing a guitar.", "A person plays music.", "entailment"),
    ("The cat sleeps on the sofa.", "The cat is running outside.", "contradiction"),
    ("Two kids are at the beach.", "The kids are siblings.", "neutral"),
    ("A woman reads a book.", "Someone is reading.", "0"),
  ]
  files = {
    "validation_matched": _write_tsv(tmp_path / "dev.tsv", ("premise", "hypothesis", "label"), rows)
  }
  examples = tasks.load_examples(task, "validation_matched", files=files)
  assert [ex["label"] for ex in examples] == [0, 2, 1, 0]
  assert [ex["idx"] for ex in examples] == [0, 1, 2, 3]
  features = tasks.featurize(task, examples, tok, LEN)
  a, b = _ids(tok, rows[1][0]), _ids(tok, rows[1][1])
  row = [tok.cls_token_id, *a, tok.sep_token_id, *b, tok.sep_token_id]
  assert features.arrays["input_ids"][1, : len(row)].tolist() == row
  assert features.arrays["token_type_ids"][1].tolist() == [0] * (len(a) + 2) + [1] * (
    len(b) + 1
  ) + [0] * (LEN - len(row))

  # three of four right: predicted classes 0, 2, 0 (wrong), 0
  logits = np.array([[3, 1, 0], [0, 1, 2], [2, 1, 0], [5, 0, 0]], np.float32)
  predictions, scores = tasks.postprocess(task, examples, features, {"logits": logits})
  assert predictions.values == {0: 0, 1: 2, 2: 0, 3: 0}
  assert scores == {"accuracy": 0.75}
  [path] = tasks.write_predictions(task, predictions, tmp_path, "validation_matched")
  assert path.endswith("validation_matched/MNLI-m.tsv")
  assert open(path).read().splitlines() == [
    "index\tprediction",
    "0\tentailment",
    "1\tcontradiction",
    "2\tentailment",
    "3\tentailment",
  ]


def test_glue_local_csv_jsonl_regression_and_unlabeled_test(tok, tmp_path):
  stsb = tasks.get_task("stsb")
  path = tmp_path / "stsb.csv"
  path.write_text('sentence1,sentence2,label,idx\n"A, b",c,4.5,7\nd,e,0,8\n')
  examples = tasks.load_examples(stsb, "train", files={"train": str(path)})
  assert [(ex["idx"], ex["text_a"], ex["label"]) for ex in examples] == [
    (7, "A, b", 4.5),
    (8, "d", 0.0),
  ]
  features = tasks.featurize(stsb, examples, tok, 16)
  assert features.arrays["label"].tolist() == [4.5, 0.0]
  predictions, scores = tasks.postprocess(
    stsb, examples, features, {"logits": np.array([[4.0], [1.0]], np.float32)}
  )
  assert predictions.values == {7: 4.0, 8: 1.0}
  assert scores["pearson"] == pytest.approx(1.0)
  [out] = tasks.write_predictions(stsb, predictions, tmp_path, "test")
  assert open(out).read() == "index\tprediction\n7\t4.000\n8\t1.000\n"

  sst2 = tasks.get_task("sst2")
  path = tmp_path / "test.jsonl"
  path.write_text('{"sentence": "great fun", "idx": 0}\n\n{"sentence": "dull", "idx": 1}\n')
  examples = tasks.load_examples(sst2, "test", files={"test": str(path)})
  assert [ex["label"] for ex in examples] == [-1, -1]
  features = tasks.featurize(sst2, examples, tok, 16)
  predictions, scores = tasks.postprocess(
    sst2, examples, features, {"logits": np.array([[0.0, 1.0], [2.0, 1.0]], np.float32)}
  )
  assert predictions.values == {0: 1, 1: 0} and scores == {}


def test_bad_input_errors(tok, tmp_path):
  sst2, mrpc = tasks.get_task("sst2"), tasks.get_task("mrpc")
  path = _write_tsv(tmp_path / "a.tsv", ("sentence1", "label"), [("x", 1)])
  with pytest.raises(ValueError, match=r"a\.tsv line 2: missing column\(s\) sentence2"):
    tasks.load_examples(mrpc, "train", files={"train": path})
  path = _write_tsv(tmp_path / "b.tsv", ("sentence", "label"), [("ok", 1), ("bad", 2)])
  with pytest.raises(ValueError, match=r"b\.tsv line 3: label '2' is not in sst2's label set"):
    tasks.load_examples(sst2, "train", files={"train": path})
  path = _write_tsv(tmp_path / "c.tsv", ("sentence", "label"), [("x", "positve")])
  with pytest.raises(ValueError, match="label 'positve'"):
    tasks.load_examples(sst2, "train", files={"train": path})
  path = _write_tsv(tmp_path / "d.tsv", ("sentence1", "sentence2", "label"), [("a", "b", 5.5)])
  with pytest.raises(ValueError, match=r"label '5.5' is not a similarity score in 0.0..5.0"):
    tasks.load_examples(tasks.get_task("stsb"), "train", files={"train": path})
  path = _write_tsv(tmp_path / "empty.tsv", ("sentence", "label"), [])
  with pytest.raises(ValueError, match=r"empty\.tsv holds no examples"):
    tasks.load_examples(sst2, "train", files={"train": path})
  with pytest.raises(ValueError, match="no local file for split 'validation'"):
    tasks.load_examples(sst2, "validation", files={"train": path})
  with pytest.raises(TypeError, match="files must map split names to paths"):
    tasks.load_examples(sst2, "train", files=[path])
  with pytest.raises(FileNotFoundError, match="nope.tsv does not exist"):
    tasks.load_examples(sst2, "train", files={"train": str(tmp_path / "nope.tsv")})
  (tmp_path / "x.txt").write_text("sentence\tlabel\n")
  with pytest.raises(ValueError, match=r"unknown table format '\.txt'"):
    tasks.load_examples(sst2, "train", files={"train": str(tmp_path / "x.txt")})

  examples = [{"idx": 0, "text_a": "fine", "text_b": None, "label": 1}]
  with pytest.raises(ValueError, match=r"max_seq_length=513 .* at most 512"):
    tasks.featurize(sst2, examples, tok, 513)
  short = AlbertTokenizer(model_max_length=64)
  with pytest.raises(ValueError, match=r"max_seq_length=128 is outside 8..64"):
    tasks.featurize(sst2, examples, short, 128)
  with pytest.raises(ValueError, match=r"outside 8..96: .* model max_position_embeddings 96\)"):
    tasks.featurize(sst2, examples, tok, 128, max_positions=96)  # the model's, not 512
  with pytest.raises(ValueError, match=r"logits must have shape \[N, 2\]"):
    features = tasks.featurize(sst2, examples, tok, 16)
    tasks.postprocess(sst2, examples, features, {"logits": np.zeros((1, 3))})
  with pytest.raises(
    ValueError, match="featurize for sst2 takes no option doc_stride; its options: none"
  ):
    tasks.featurize(sst2, examples, tok, 16, doc_stride=8)
  with pytest.raises(ValueError, match="takes no option n_best; its options: n_best_size"):
    tasks.postprocess(tasks.get_task("squad_v1"), [], features, {}, n_best=3)
  with pytest.raises(ValueError, match="there are 1 feature rows"):
    tasks.postprocess(sst2, examples, features, {"logits": np.zeros((2, 2))})


def test_sst2_sample_is_balanced_distinct_and_learnable(tok):
  """The bundled sample: 200/60 sentences, balanced, no overlap, and a bag of pieces with a
  logistic regression trained on train gets dev right (the labels are consistent)."""
  task = tasks.get_task("sst2")
  files = tasks.sample_files("sst2")
  train = tasks.load_examples(task, "train", files=files)
  dev = tasks.load_examples(task, "validation", files=files)
  assert (len(train), len(dev)) == (200, 60)
  assert collections.Counter(ex["label"] for ex in train) == {0: 100, 1: 100}
  assert collections.Counter(ex["label"] for ex in dev) == {0: 30, 1: 30}
  assert not {ex["text_a"] for ex in train} & {ex["text_a"] for ex in dev}

  vocab = {i: k for k, i in enumerate(sorted({i for ex in train for i in _ids(tok, ex["text_a"])}))}

  def bag(examples):  # bag of the pieces seen in training
    x = np.zeros((len(examples), len(vocab)), np.float32)
    for i, ex in enumerate(examples):
      x[i, [vocab[j] for j in _ids(tok, ex["text_a"]) if j in vocab]] = 1.0
    return x, np.array([ex["label"] for ex in examples], np.float32)

  x, y = bag(train)
  w, b = np.zeros(len(vocab), np.float32), 0.0
  for _ in range(300):
    p = 1 / (1 + np.exp(-(x @ w + b)))
    w -= 0.5 * x.T @ (p - y) / len(y)
    b -= 0.5 * float(np.mean(p - y))
  x_dev, y_dev = bag(dev)
  dev_accuracy = np.mean(((x_dev @ w + b) > 0) == y_dev)
  assert dev_accuracy >= 0.9, dev_accuracy


# ---- RACE ---------------------------------------------------------------------------------------

ARTICLE = "Tom walked to the old market on Sunday. He bought apples, bread and a red kite."
QUESTIONS = ["Tom went to the market on _.", "What did Tom buy?"]
OPTIONS = [["Monday", "Sunday", "Friday", "Saturday"], ["a kite", "a car", "a dog", "a boat"]]


def _race_as_dataset(self, *args, **kwargs):
  """Well-formed RACE records through tfds' real loading path (its random mock data gives
  36 options per question and answers that are not letters, which the loader rejects)."""
  level = self.builder_config.name

  def records():
    for i in range(3):
      yield {
        "article": f"{ARTICLE} ({level} {i})",
        "questions": QUESTIONS,
        "answers": ["B", "A"],
        "options": OPTIONS,
        "example_id": f"{level}{i}.txt",
      }

  return tf.data.Dataset.from_generator(
    records, output_types=self.info.features.dtype, output_shapes=self.info.features.shape
  )


def test_race_from_tfds_mock_data(tok, tmp_path):
  with tfds.testing.mock_data(num_examples=2):  # random data: rejected, naming what is wrong
    with pytest.raises(ValueError, match=r"tfds race/high dev\[0\]: \d+ questions, \d+ option"):
      tasks.load_examples(tasks.get_task("race_high"), "dev", data_dir=str(tmp_path))

  task = tasks.get_task("race_all")
  with tfds.testing.mock_data(as_dataset_fn=_race_as_dataset):
    examples = tasks.load_examples(task, "dev", data_dir=str(tmp_path))
  assert len(examples) == 12  # 2 levels x 3 articles x 2 questions
  assert [ex["level"] for ex in examples] == ["high"] * 6 + ["middle"] * 6
  assert examples[0]["id"] == "high0.txt-0" and examples[0]["label"] == 1
  features = tasks.featurize(task, examples, tok, 48)
  assert features.arrays["input_ids"].shape == (12, 4, 48)
  assert features.arrays["label"].tolist() == [1, 0] * 6

  logits = np.zeros((12, 4), np.float32)
  logits[np.arange(12), [1, 0] * 3 + [2, 0] * 3] = 1.0  # the middle's first questions wrong
  predictions, scores = tasks.postprocess(task, examples, features, {"logits": logits})
  assert predictions.values["high0.txt-0"] == "B" and predictions.values["middle0.txt-0"] == "C"
  assert scores == {"accuracy": 0.75, "accuracy_high": 1.0, "accuracy_middle": 0.5}
  [path] = tasks.write_predictions(task, predictions, tmp_path, "dev")
  assert json.load(open(path)) == predictions.values


def test_race_features_blank_substitution_and_truncation(tok):
  assert (
    race.qa_text("Tom went to the market on _.", "Sunday") == "Tom went to the market on Sunday."
  )
  assert race.qa_text("What did Tom buy?", "a kite") == "What did Tom buy? a kite"
  task = tasks.get_task("race_middle")
  rows = [
    ("x", {"article": ARTICLE, "questions": QUESTIONS, "options": OPTIONS, "answers": ["B", "A"]})
  ]
  examples = race.examples_from_rows(task, rows, "train")
  features = tasks.featurize(task, examples, tok, 64)
  article = _ids(tok, ARTICLE)
  for c, option in enumerate(OPTIONS[0]):
    qa = _ids(tok, f"Tom went to the market on {option}.")
    row = [tok.cls_token_id, *article, tok.sep_token_id, *qa, tok.sep_token_id]
    assert features.arrays["input_ids"][0, c, : len(row)].tolist() == row
    assert features.arrays["token_type_ids"][0, c].sum() == len(qa) + 1
    assert features.arrays["attention_mask"][0, c].sum() == len(row)

  # a long article is cut at the end; a long question keeps its last max_qa_length pieces
  long_rows = [
    (
      "y",
      {
        "article": ARTICLE * 20,
        "question": "why " * 40 + "_?",
        "options": ["a", "b", "c", "d"],
        "answer": "D",
      },
    )
  ]
  [example] = race.examples_from_rows(task, long_rows, "train")
  features = tasks.featurize(task, [example], tok, 64, max_qa_length=10)
  qa = _ids(tok, "why " * 40 + "a?")[-10:]
  expected = [
    tok.cls_token_id,
    *_ids(tok, ARTICLE * 20)[: 64 - 3 - 10],
    tok.sep_token_id,
    *qa,
    tok.sep_token_id,
  ]
  assert features.arrays["input_ids"][0, 0].tolist() == expected
  assert features.arrays["label"].tolist() == [3]


def test_race_local_files_and_errors(tok, tmp_path):
  for level, n in (("high", 2), ("middle", 1)):
    (tmp_path / "dev" / level).mkdir(parents=True)
    for i in range(n):
      record = {
        "id": f"{level}{i}.txt",
        "article": ARTICLE,
        "questions": QUESTIONS,
        "options": OPTIONS,
        "answers": ["B", "A"],
      }
      (tmp_path / "dev" / level / f"{i}.txt").write_text(json.dumps(record))
  all_examples = tasks.load_examples(
    tasks.get_task("race_all"), "dev", files={"dev": str(tmp_path / "dev")}
  )
  assert len(all_examples) == 6
  middle = tasks.load_examples(
    tasks.get_task("race_middle"), "dev", files={"dev": str(tmp_path / "dev")}
  )
  assert [ex["id"] for ex in middle] == ["middle0.txt-0", "middle0.txt-1"]

  flat = tmp_path / "race.jsonl"
  line = {"article": ARTICLE, "question": QUESTIONS[0], "options": OPTIONS[0], "answer": "E"}
  flat.write_text(json.dumps(line) + "\n")
  with pytest.raises(ValueError, match=r"race\.jsonl line 1: answer 'E' is not one of A, B, C, D"):
    tasks.load_examples(tasks.get_task("race_high"), "train", files={"train": str(flat)})
  flat.write_text(json.dumps({**line, "answer": "A", "options": OPTIONS[0][:3]}) + "\n")
  with pytest.raises(ValueError, match="must be a list of 4 texts"):
    tasks.load_examples(tasks.get_task("race_high"), "train", files={"train": str(flat)})
  flat.write_text(json.dumps({"article": ARTICLE, "options": OPTIONS[0], "answer": "A"}) + "\n")
  with pytest.raises(ValueError, match="missing field 'question'"):
    tasks.load_examples(tasks.get_task("race_high"), "train", files={"train": str(flat)})
