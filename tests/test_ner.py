"""Token classification: word -> piece alignment, windows merged back, words without pieces,
tfds mock data and local CoNLL files end to end, bad input, the bundled NER sample learning
through the command line, and resuming a killed run.

Metrics themselves are tested against seqeval in tests/test_entity_metrics.py.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from albert_jax.data import conll, ner, tasks
from albert_jax.errors import UserError
from albert_jax.tokenizer import AlbertTokenizer
from albert_jax.trainer import finetune
from tests.make_ner_sample import OUT as SAMPLE_DIR
from tests.make_ner_sample import generate
from tests.runs import (
  assert_killed_run_resumes,
  load_config,
  read,
  run_command,
  tb_scalars,
  tiny,
)

CONLL = tasks.get_task("conll2003")


@pytest.fixture(scope="module")
def tok():
  return AlbertTokenizer()


def _example(tokens, tags, task=CONLL, id_=0):
  return {"id": id_, "tokens": tokens, "tags": [task.label_names.index(t) for t in tags]}


def _pieces(tok, word):
  return len(tok.tokenize(word))


def _write(path, text):
  path.write_text(text, encoding="utf-8")
  return str(path)


# ---- the registry -----------------------------------------------------------------------------


@pytest.mark.parametrize(
  "name, builder, column",
  [
    ("conll2003", "conll2003", "ner"),
    ("conll2003_pos", "conll2003", "pos"),
    ("conll2003_chunk", "conll2003", "chunks"),
    ("wikiann_en", "wikiann/en", "tags"),
  ],
)
def test_label_names_are_the_tfds_builders(name, builder, column, tmp_path):
  task = tasks.get_task(name)
  assert task.head == tasks.HEAD_TOKEN_CLASSIFICATION == "token_classification"
  assert tasks.TFDS_BUILDERS[name] == (builder,)
  features = tfds.builder(builder, data_dir=str(tmp_path)).info.features  # no download
  assert task.label_names == tuple(features[column].feature.names)
  assert task.num_labels == len(task.label_names)
  assert ner.is_entity_scheme(task.label_names) == (name != "conll2003_pos")


# ---- alignment --------------------------------------------------------------------------------


def test_one_labelled_piece_per_word_or_all_with_label_all_tokens(tok):
  words = ["Anna", "Smith-Jones", "visited", "U.N.", "headquarters", "in", "New", "York"]
  tags = ["B-PER", "I-PER", "O", "B-ORG", "O", "O", "B-LOC", "I-LOC"]
  assert [_pieces(tok, w) for w in words] == [1, 3, 1, 4, 1, 1, 1, 1]  # multi-piece words
  example = _example(words, tags)
  for label_all in (False, True):
    features = tasks.featurize(CONLL, [example], tok, 32, label_all_tokens=label_all)
    labels = features.arrays["labels"][0]
    ids = features.arrays["input_ids"][0]
    n = sum(_pieces(tok, w) for w in words)
    assert ids[0] == tok.cls_token_id and ids[n + 1] == tok.sep_token_id
    assert labels[0] == labels[n + 1] == -1 and np.all(labels[n + 2 :] == -1)  # never counted
    assert np.all(features.arrays["attention_mask"][0] == (np.arange(32) < n + 2))
    position = 1
    for word, tag in zip(words, tags, strict=True):
      k = _pieces(tok, word)
      assert labels[position] == CONLL.label_names.index(tag), word
      inside = "I-" + tag[2:] if tag.startswith("B-") else tag
      later = [CONLL.label_names.index(inside)] * (k - 1) if label_all else [-1] * (k - 1)
      assert labels[position + 1 : position + k].tolist() == later, word
      position += k
  # the U.N. ORG entity: B-ORG on "_u", I-ORG on ".", "n", "." with label_all_tokens
  assert labels[6:10].tolist() == [3, 4, 4, 4]


def _home_window(first_piece, starts, num_pieces, width):
  """Brute force: the window holding `first_piece` with the most context, the earlier on ties."""
  best, best_score = None, None
  for w, s in enumerate(starts):
    e = min(s + width, num_pieces)
    if s <= first_piece < e:
      score = min(first_piece - s, e - 1 - first_piece) + 0.01 * (e - s)
      if best is None or score > best_score:
        best, best_score = w, score
  return best


@pytest.mark.parametrize("doc_stride", [3, 7, 14])
def test_long_sentence_comes_back_whole_each_word_predicted_once(tok, doc_stride):
  words = [f"word{i % 7}" if i % 5 else "Smith-Jones" for i in range(40)]
  tags = ["B-PER" if i % 5 == 0 else "O" for i in range(40)]
  short = _example(["Oslo", "is", "cold"], ["B-LOC", "O", "O"], id_=1)
  examples = [_example(words, tags), short]
  features = tasks.featurize(CONLL, examples, tok, 16, doc_stride=doc_stride)
  width = 14
  firsts = np.cumsum([0] + [_pieces(tok, w) for w in words])
  num_pieces = int(firsts[-1])
  starts = ner.window_starts(num_pieces, width, doc_stride)
  assert num_pieces > width and len(starts) > 1 and starts[-1] + width >= num_pieces
  assert features.arrays["example_index"].tolist() == [0] * len(starts) + [1]
  # Each window row predicts its own row number, so the tags show which window each word came
  # from; it must be the max-context window, and every word predicted exactly once.
  logits = np.zeros((len(features), 16, CONLL.num_labels), np.float32)
  for n in range(len(features)):
    logits[n, :, n % CONLL.num_labels] = 1.0
  predictions, scores = tasks.postprocess(CONLL, examples, features, {"logits": logits})
  triples = predictions.values[0]
  assert [w for w, _, _ in triples] == words and [g for _, g, _ in triples] == tags
  for i, (_, _, predicted) in enumerate(triples):
    home = _home_window(int(firsts[i]), starts, num_pieces, width)
    assert predicted == CONLL.label_names[home % CONLL.num_labels], i
  assert len(predictions.values[1]) == 3 and scores["words_without_pieces"] == 0.0
  scored = features.meta["scored_word"]
  assert sorted(scored[: len(starts)][scored[: len(starts)] >= 0].tolist()) == list(range(40))

  perfect = np.where(features.arrays["labels"][..., None] == np.arange(CONLL.num_labels), 1.0, 0.0)
  _, scores = tasks.postprocess(CONLL, examples, features, {"logits": perfect})
  assert scores["f1"] == scores["accuracy"] == 1.0


def test_a_word_without_pieces_is_predicted_o_and_counted(tok, caplog):
  words = ["Anna", "\u0301", "works", "in", "Oslo"]  # a lone combining accent: no pieces
  assert tok.tokenize("\u0301") == []
  example = _example(words, ["B-PER", "B-MISC", "O", "O", "B-LOC"])
  with caplog.at_level("WARNING"):
    features = tasks.featurize(CONLL, [example], tok, 16)
  assert "1 word(s) tokenize to no pieces" in caplog.text
  labels = features.arrays["labels"][0]
  assert labels[1:6].tolist() == [1, 0, 0, 5, -1]  # Anna, works, in, Oslo, [SEP]
  perfect = np.where(features.arrays["labels"][..., None] == np.arange(CONLL.num_labels), 1.0, 0.0)
  predictions, scores = tasks.postprocess(CONLL, [example], features, {"logits": perfect})
  assert [p for _, _, p in predictions.values[0]] == ["B-PER", "O", "O", "O", "B-LOC"]
  assert scores["words_without_pieces"] == 1.0
  assert scores["accuracy"] == pytest.approx(4 / 5)  # the accent's gold B-MISC is missed
  assert (scores["precision"], scores["recall"]) == (1.0, pytest.approx(2 / 3))


# ---- tfds mock data and local files, end to end ------------------------------------------------

WORDS = ("Anna", "Berlin", "visited", "the", "bank", "on", "Monday", "Okafor", "said", ".")


def _tagged_as_dataset(self, *args, **kwargs):
  """Well-formed records through tfds' real loading path: tokens and every tag sequence of one
  length (tfds' random mock data gives each sequence its own length, which the loader rejects)."""
  features = self.info.features
  rng = np.random.default_rng(0)

  def records():
    for i in range(6):
      n = 3 + i
      record = {}
      for key, feature in features.items():
        if isinstance(feature.feature, tfds.features.ClassLabel):
          record[key] = rng.integers(0, feature.feature.num_classes, n)
        else:
          record[key] = [WORDS[j] for j in rng.integers(0, len(WORDS), n)]
      yield record

  return tf.data.Dataset.from_generator(
    records, output_types=features.dtype, output_shapes=features.shape
  )


def test_tfds_random_mock_data_is_rejected_naming_the_record(tmp_path):
  with tfds.testing.mock_data(num_examples=2):
    with pytest.raises(UserError, match=r"tfds conll2003 dev\[0\]: \d+ tokens but \d+ 'ner' tags"):
      tasks.load_examples(CONLL, "dev", data_dir=str(tmp_path))


@pytest.mark.parametrize("name", ["conll2003", "wikiann_en"])
def test_tfds_mock_data_loads_trains_and_evaluates(name, tok, tmp_path):
  task = tasks.get_task(name)
  with tfds.testing.mock_data(as_dataset_fn=_tagged_as_dataset):
    examples = tasks.load_examples(task, task.eval_splits[0], data_dir=str(tmp_path))
    assert [len(ex["tokens"]) for ex in examples] == [3, 4, 5, 6, 7, 8]
    assert all(0 <= t < task.num_labels for ex in examples for t in ex["tags"])
    features = tasks.featurize(task, examples, tok, 16)
    assert features.arrays["labels"].shape == (len(features), 16)
    config = tiny("conll2003" if name == "conll2003" else "wikiann_en", data_dir=str(tmp_path))
    workdir = str(tmp_path / "run")
    metrics = finetune.run(config, workdir)
  assert metrics["step"] == 3 and set(metrics) == {"step", *task.eval_splits}
  for split in task.eval_splits:
    types = {"PER", "ORG", "LOC"} | ({"MISC"} if name == "conll2003" else set())
    assert {"f1", "precision", "recall", "accuracy", "words_without_pieces"} <= set(metrics[split])
    assert {k[3:] for k in metrics[split] if k.startswith("f1_")} <= types
    lines = read(os.path.join(workdir, "predictions", split, f"{split}.conll")).split("\n\n")
    assert len([s for s in lines if s.strip()]) == 6
    assert all(len(line.split()) == 3 for line in lines[0].splitlines())


def test_local_conll_file_with_its_own_tags_end_to_end(tmp_path):
  text = "-DOCSTART- -X- O\n\n" + "".join(
    f"The NN O\nBRCA{i} NN B-GENE\nprotein NN I-GENE\nbinds VB O\np53 NN B-GENE\n\n"
    for i in range(8)
  )
  path = _write(tmp_path / "genes.txt", text)
  config = tiny("conll2003", train_file=path, eval_file=path, label_names="O,B-GENE,I-GENE")
  metrics = finetune.run(config, str(tmp_path / "run"))
  assert set(metrics) == {"step", "dev"} and "f1_GENE" in metrics["dev"]
  lines = read(str(tmp_path / "run" / "predictions" / "dev" / "dev.conll")).splitlines()
  assert lines[:2] == [f"The O {lines[0].split()[2]}", f"BRCA0 B-GENE {lines[1].split()[2]}"]
  assert len(lines) == 8 * 6

  examples = tasks.load_examples(
    tasks.with_labels(CONLL, "O,B-GENE,I-GENE"), "dev", files={"dev": path}
  )
  assert len(examples) == 8 and examples[0]["tags"] == [0, 1, 2, 0, 1]


def test_bad_input_names_the_file_and_line(tok, tmp_path):
  bad_tag = _write(tmp_path / "tag.conll", "Anna B-PER\nworks O\n\nin O\nOslo B-PLACE\n")
  with pytest.raises(UserError, match=r"tag\.conll line 5: tag 'B-PLACE' is not in conll2003's"):
    tasks.load_examples(CONLL, "train", files={"train": bad_tag})
  one_column = _write(tmp_path / "one.conll", "Anna B-PER\nworks\n")
  with pytest.raises(UserError, match=r"one\.conll line 2: one field \('works'\)"):
    tasks.load_examples(CONLL, "train", files={"train": one_column})
  for text in ("", "\n\n", "-DOCSTART- -X- O\n\n"):
    empty = _write(tmp_path / "empty.conll", text)
    with pytest.raises(UserError, match=r"empty\.conll holds no sentences"):
      conll.read_conll(empty)
  with pytest.raises(UserError, match=r"doc_stride=15 must be in 1..14"):
    tasks.featurize(CONLL, [_example(["Oslo"], ["B-LOC"])], tok, 16, doc_stride=15)
  with pytest.raises(UserError, match="must be distinct, non-empty"):
    tasks.with_labels(CONLL, "O,B-X,B-X")
  with pytest.raises(UserError, match="token classification tasks only"):
    tasks.with_labels(tasks.get_task("sst2"), "a,b")
  features = tasks.featurize(CONLL, [_example(["Oslo"], ["B-LOC"])], tok, 16)
  with pytest.raises(UserError, match=r"logits must have shape \[N, 16, 9\]"):
    tasks.postprocess(
      CONLL, [_example(["Oslo"], ["B-LOC"])], features, {"logits": np.zeros((1, 16, 7))}
    )


# ---- the bundled sample -----------------------------------------------------------------------


def test_ner_sample_is_what_its_generator_writes():
  texts = generate()
  for split in ("train", "dev"):
    assert (SAMPLE_DIR / f"{split}.conll").read_text(encoding="utf-8") == texts[split], split
  files = tasks.sample_files("conll2003")
  train = tasks.load_examples(CONLL, "train", files=files)
  dev = tasks.load_examples(CONLL, "dev", files=files)
  assert (len(train), len(dev)) == (300, 100)
  assert not {tuple(ex["tokens"]) for ex in train} & {tuple(ex["tokens"]) for ex in dev}
  tags = {CONLL.label_names[t] for ex in train for t in ex["tags"]}
  assert tags == set(CONLL.label_names)


LEARN = {  # as --config.X overrides
  "model_overrides.hidden_size": 64,
  "model_overrides.num_hidden_layers": 2,
  "model_overrides.num_attention_heads": 2,
  "model_overrides.intermediate_size": 128,
  "model_overrides.embedding_size": 32,
  "model_overrides.max_position_embeddings": 32,
  "max_seq_length": 32,
  "batch_size": 32,
  "learning_rate": 3e-3,
  "num_train_steps": 40,
  "warmup_steps": 5,
  "eval_every_steps": 1,  # step 1's model is the initial one: the warm-up's first rate is 0
  "checkpoint_every_steps": 10,
  "log_every_steps": 10,
  "batching": "max_length",  # the killed-run test below checks positions counted in examples
  "mesh.shape.data": 1,
}


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
  """The README's command on the NER sample, with a smaller model and a shorter run."""
  workdir = str(tmp_path_factory.mktemp("ner") / "run")
  return workdir, run_command(workdir, LEARN, "configs/finetune/ner_sample.py")


def test_command_line_run_learns_the_ner_sample(learned):
  workdir, done = learned
  metrics = json.loads(read(os.path.join(workdir, "metrics.json")))
  assert json.loads(done.stdout) == metrics
  f1 = tb_scalars(workdir)["eval_dev/f1"]
  assert sorted(f1) == list(range(1, 41))
  print("dev entity F1 by step:", {s: round(f1[s], 3) for s in (1, 5, 10, 20, 30, 40)})
  assert f1[1] <= 0.2  # the initial model: (almost) no entity right
  assert metrics["dev"]["f1"] == pytest.approx(f1[40]) and f1[40] >= 0.8
  assert metrics["dev"]["accuracy"] >= 0.9
  lines = read(os.path.join(workdir, "predictions", "dev", "dev.conll")).split("\n\n")
  assert len([s for s in lines if s.strip()]) == 100


def test_killed_ner_run_resumes_to_the_same_result(learned, tmp_path):
  straight, _ = learned
  resumed_from, position, _ = assert_killed_run_resumes(
    load_config("ner_sample", LEARN),
    str(tmp_path / "run"),
    straight,
    at_step=25,  # between the checkpoints of steps 20 and 30
    predictions=os.path.join("predictions", "dev", "dev.conll"),
  )
  assert resumed_from == 20 and position == {"epoch": 2, "index": 40}  # 640 = 2 x 300 + 40
