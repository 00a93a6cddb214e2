"""Tests of albert_jax.data.pretraining and the create_pretraining_data CLI.

Statistics are measured on a generated corpus (3,351 sentences in 300 documents of 3-20
sentences) at max_seq_length 128, where num_to_predict = round(T * 0.15) <= 19 < 20, so the
cap of max_predictions_per_seq never binds.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from albert_jax.data import pretraining
from albert_jax.data.pretraining import (
  PretrainingDataConfig,
  PretrainingDataError,
  create_instances_from_document,
  create_pretraining_data,
  mask_tokens,
  read_pretraining_dataset,
  sample_masked_spans,
  tokenize_document,
  word_spans,
)
from albert_jax.tokenizer import AlbertTokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLS, SEP, MASK = 2, 3, 4
MAX_SEQ_LENGTH = 128  # round(128 * 0.15) = 19 < 20: the prediction cap never binds
TOKENIZER = AlbertTokenizer()


def make_tokenizer() -> AlbertTokenizer:
  """The tokenizer factory given to generation (a class is picklable for spawned workers)."""
  return AlbertTokenizer()


def to_pieces(ids: np.ndarray) -> list[str]:
  return TOKENIZER.convert_ids_to_tokens([int(i) for i in ids])


# ---------------------------------------------------------------------------------------------
# A corpus of English-like text.

NOUNS = (
  "river mountain teacher village engine garden window letter market soldier harbor library "
  "painting bicycle kingdom festival scientist musician volcano treaty parliament cathedral "
  "algorithm telescope manuscript orchestra lighthouse archipelago merchant blacksmith"
).split()
VERBS = (
  "found crossed painted described visited repaired discovered announced built carried "
  "photographed celebrated translated negotiated reconstructed illuminated abandoned"
).split()
ADJECTIVES = (
  "old quiet famous narrow bright ancient wooden remarkable enormous mysterious colonial "
  "unprecedented extraordinary picturesque controversial"
).split()
ADVERBS = "quickly slowly carefully eventually reluctantly unexpectedly".split()
NAMES = "Anna Tomas Okonkwo Ingrid Xiaoling Bartholomew Guadalupe Przemyslaw".split()
FUNCTION = "the a of in on with from near after before".split()
SYLLABLES = "ka lo mir tun sel dra vok pen zu qua rith om bel".split()


def make_sentence(rng: random.Random) -> str:
  words = [rng.choice(NAMES), rng.choice(VERBS), "the", rng.choice(ADJECTIVES), rng.choice(NOUNS)]
  for _ in range(rng.randint(0, 4)):
    extra = rng.choice(
      [
        [rng.choice(FUNCTION), "the", rng.choice(NOUNS)],
        [rng.choice(ADVERBS)],
        ["and", rng.choice(VERBS), "a", rng.choice(ADJECTIVES), rng.choice(NOUNS)],
        ["near", "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))).title()],
        [str(rng.randint(1800, 2020)) + ","],
      ]
    )
    words.extend(extra)
  return " ".join(words) + rng.choice([".", ".", ".", "!", "?"])


def make_documents(num_documents: int, seed: int) -> list[list[str]]:
  rng = random.Random(seed)
  return [[make_sentence(rng) for _ in range(rng.randint(3, 20))] for _ in range(num_documents)]


def write_corpus(path: str, documents: list[list[str]]) -> str:
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n\n".join("\n".join(d) for d in documents) + "\n")
  return path


def restored_pieces(example: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
  """The unmasked ids [T] and pieces of a written example."""
  ids_T = pretraining.original_input_ids(example)[: int(example["input_mask"].sum())]
  return ids_T, to_pieces(ids_T)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
  directory = tmp_path_factory.mktemp("corpus")
  documents = make_documents(300, seed=0)
  for i in range(3):
    write_corpus(str(directory / f"part-{i}.txt"), documents[i::3])
  return str(directory)


@pytest.fixture(scope="module")
def examples(corpus_dir: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
  output = str(tmp_path_factory.mktemp("out") / "data")
  config = PretrainingDataConfig(max_seq_length=MAX_SEQ_LENGTH, dupe_factor=3, random_seed=1)
  manifest = create_pretraining_data(
    os.path.join(corpus_dir, "*.txt"),
    output,
    config,
    tokenizer_factory=make_tokenizer,
    num_shards=2,
    show_progress=False,
  )
  result = list(read_pretraining_dataset(output))
  assert len(result) == manifest["num_instances"] > 1500
  assert [f["num_instances"] for f in manifest["files"]] == [
    (len(result) + 1) // 2,
    len(result) // 2,
  ]
  return result


# ---------------------------------------------------------------------------------------------
# The pure masking functions.


def test_word_spans_group_continuations_and_skip_specials() -> None:
  pieces = ["[CLS]", "▁the", "▁qui", "x", "otic", "[SEP]", "s", "▁a", "[SEP]", "<pad>"]
  assert word_spans(pieces).tolist() == [[1, 2], [2, 5], [6, 7], [7, 8]]


def test_mask_tokens_shapes_padding_and_determinism() -> None:
  tokenizer = make_tokenizer()
  pieces = ["[CLS]", *tokenizer.tokenize("the quixotic zephyrs unbelievably played . " * 8)]
  pieces = [*pieces[:60], "[SEP]"]
  ids = [CLS, *tokenizer.convert_tokens_to_ids(pieces[1:-1]), SEP]
  result = mask_tokens(pieces, ids, np.random.default_rng(3), vocab_size=30000)
  again = mask_tokens(pieces, ids, np.random.default_rng(3), vocab_size=30000)
  for a, b in zip(result, again, strict=True):
    np.testing.assert_array_equal(a, b)
  num_masked = round(61 * 0.15)
  assert result.masked_lm_positions.shape == (20,)
  assert result.masked_lm_weights.tolist() == [1.0] * num_masked + [0.0] * (20 - num_masked)
  positions = result.masked_lm_positions[:num_masked]
  assert np.all(np.diff(positions) > 0)
  assert result.masked_lm_positions[num_masked:].tolist() == [0] * (20 - num_masked)
  assert result.masked_lm_ids[num_masked:].tolist() == [0] * (20 - num_masked)
  np.testing.assert_array_equal(result.masked_lm_ids[:num_masked], np.asarray(ids)[positions])
  unmasked = np.setdiff1d(np.arange(len(ids)), positions)
  np.testing.assert_array_equal(result.input_ids[unmasked], np.asarray(ids)[unmasked])
  assert result.input_ids[0] == CLS and result.input_ids[-1] == SEP


def test_sample_masked_spans_budget_and_segments() -> None:
  # Two segments of 3 words each: [1, 3) [3, 4) [4, 6) | [7, 8) [8, 9) [9, 11)
  pieces = ["[CLS]", "▁ab", "c", "▁d", "▁e", "f", "[SEP]", "▁g", "▁h", "▁i", "j", "[SEP]"]
  words = word_spans(pieces)
  for seed in range(200):
    spans = sample_masked_spans(words, 4, np.random.default_rng(seed), ngram=3)
    covered = [p for s in spans for p in range(s.start, s.end)]
    assert len(covered) == len(set(covered)) <= 4
    for span in spans:
      assert not {"[CLS]", "[SEP]"} & set(pieces[span.start : span.end])
      assert pieces[span.start].startswith("▁")
      assert span.end == len(pieces) or not pieces[span.end][0].isalpha()  # whole words


def test_mask_tokens_without_masking_prob() -> None:
  result = mask_tokens(
    ["[CLS]", "▁a", "[SEP]"],
    [2, 21, 3],
    np.random.default_rng(0),
    vocab_size=30000,
    masked_lm_prob=0.0,
  )
  assert result.input_ids.tolist() == [2, 21, 3] and result.masked_lm_weights.sum() == 0


# ---------------------------------------------------------------------------------------------
# Statistics and structure of generated data.


def test_special_tokens_segment_ids_and_input_mask(examples: list[dict]) -> None:
  for example in examples:
    assert example["input_ids"].shape == (MAX_SEQ_LENGTH,)
    length = int(example["input_mask"].sum())
    np.testing.assert_array_equal(example["input_mask"], np.arange(MAX_SEQ_LENGTH) < length)
    ids = example["input_ids"]
    assert ids[0] == CLS and np.all(ids[length:] == 0)
    seps = np.flatnonzero(ids[:length] == SEP)
    assert len(seps) == 2 and seps[1] == length - 1 and 1 < seps[0] < length - 2
    expected_segments = (np.arange(MAX_SEQ_LENGTH) > seps[0]) & (np.arange(MAX_SEQ_LENGTH) < length)
    np.testing.assert_array_equal(example["segment_ids"], expected_segments)
    assert not np.isin(ids[:length], [0, 1]).any()  # no <pad>/<unk> inside, the corpus has none


def test_masked_fraction_is_15_percent(examples: list[dict]) -> None:
  predictions = sum(float(e["masked_lm_weights"].sum()) for e in examples)
  ordinary = sum(int(e["input_mask"].sum()) - 3 for e in examples)  # minus [CLS] [SEP] [SEP]
  fraction = predictions / ordinary
  print(f"masked fraction {fraction:.4f} ({predictions:.0f} / {ordinary})")
  assert abs(fraction - 0.15) <= 0.015
  assert max(e["masked_lm_weights"].sum() for e in examples) <= 19  # the cap of 20 never binds


def test_replacements_are_80_10_10(examples: list[dict]) -> None:
  counts = collections.Counter()
  for example in examples:
    real_K = example["masked_lm_weights"] > 0
    positions_K = example["masked_lm_positions"][real_K]
    now_K = example["input_ids"][positions_K]
    original_K = example["masked_lm_ids"][real_K]
    counts["mask"] += int(np.sum(now_K == MASK))
    counts["kept"] += int(np.sum(now_K == original_K))
    random_K = now_K[(now_K != MASK) & (now_K != original_K)]
    counts["random"] += len(random_K)
    assert np.all(random_K >= 5)  # never a special id
  total = sum(counts.values())
  shares = {k: v / total for k, v in counts.items()}
  print(f"replacements over {total} positions: {shares}")
  assert abs(shares["mask"] - 0.8) <= 0.03
  assert abs(shares["kept"] - 0.1) <= 0.03
  assert abs(shares["random"] - 0.1) <= 0.03


def test_masks_never_split_a_word(examples: list[dict]) -> None:
  for example in examples:
    _, pieces = restored_pieces(example)
    masked = set(example["masked_lm_positions"][example["masked_lm_weights"] > 0].tolist())
    assert masked and not {0, len(pieces) - 1} & masked
    for start, end in word_spans(pieces):
      inside = {p in masked for p in range(start, end)}
      assert len(inside) == 1, (pieces[start:end], sorted(masked))
      assert pieces[start].startswith("▁") or pieces[start - 1] in ("[CLS]", "[SEP]")


def test_ngram_lengths_follow_one_over_n(examples: list[dict]) -> None:
  """p(n) = 6/11, 3/11, 2/11, measured in whole words on the spans chosen for real instances.

  Exactly so (within 2 points) for the spans drawn while the remaining budget still admitted
  any n-gram of the sequence; over all spans within 5 points, since the last n-gram of each
  sequence has to fit the remaining budget (num_to_predict is exact, as in Google's tool).
  """
  rng = np.random.default_rng(0)
  free, overall = collections.Counter(), collections.Counter()
  for example in examples:
    ids, pieces = restored_pieces(example)
    budget = pretraining.num_to_predict(len(ids), 0.15, 20)
    words = word_spans(pieces)
    contiguous_3grams = [
      words[i + 2, 1] - words[i, 0]
      for i in range(len(words) - 2)
      if words[i, 1] == words[i + 1, 0] and words[i + 1, 1] == words[i + 2, 0]
    ]
    longest = max(contiguous_3grams, default=0)
    remaining = budget
    for span in sample_masked_spans(words, budget, rng, ngram=3):
      num_words = len(word_spans(pieces[span.start : span.end]))
      assert num_words == span.num_words  # counted in whole words on the span itself
      overall[num_words] += 1
      if remaining >= longest:
        free[num_words] += 1
      remaining -= span.end - span.start
  for name, counts, tolerance in (("budget-free", free, 0.02), ("all", overall, 0.05)):
    total = sum(counts.values())
    shares = [counts[n] / total for n in (1, 2, 3)]
    print(f"n-gram shares, {name} spans ({total}): {[round(s, 4) for s in shares]}")
    for share, expected in zip(shares, (6 / 11, 3 / 11, 2 / 11), strict=True):
      assert abs(share - expected) <= tolerance, (name, shares)


def test_sentence_order_labels_are_balanced(examples: list[dict]) -> None:
  labels = np.concatenate([e["next_sentence_labels"] for e in examples])
  print(f"SOP label 1 share {labels.mean():.4f} over {len(labels)}")
  assert set(labels.tolist()) == {0, 1}
  assert abs(labels.mean() - 0.5) <= 0.05


def test_every_sentence_used_and_sop_label_matches_order() -> None:
  """No chunk is dropped and label 1 <=> swapped: un-swapping the segments of each pass
  rebuilds the document exactly (documents of < 509 tokens, so nothing is truncated)."""
  tokenizer = make_tokenizer()
  config = PretrainingDataConfig(max_seq_length=512, masked_lm_prob=0.0, short_seq_prob=1.0)
  rng = np.random.default_rng(7)
  num_instances = 0
  for sentences in make_documents(40, seed=5):
    doc = tokenize_document(sentences, tokenizer)
    assert len(doc.ids) < 509
    for _ in range(3):  # three passes, each with its own targets and split points
      instances = create_instances_from_document(doc, config, rng, vocab_size=30000)
      rebuilt = []
      for instance in instances:
        ids = instance.input_ids.tolist()
        end_first = instance.num_first_segment
        first, second = ids[1 : end_first - 1], ids[end_first:-1]
        assert first and second
        rebuilt += second + first if instance.sentence_order_label else first + second
      assert rebuilt == doc.ids.tolist()
      num_instances += len(instances)
  assert num_instances > 1.3 * 3 * 40  # short targets: often several chunks per document


def test_one_sentence_chunks_split_inside_and_tiny_documents_skipped(tmp_path) -> None:
  tokenizer = make_tokenizer()
  config = PretrainingDataConfig(max_seq_length=64, masked_lm_prob=0.0)
  doc = tokenize_document(["Anna crossed the unprecedented archipelago quickly."], tokenizer)
  for seed in range(20):
    (instance,) = create_instances_from_document(
      doc, config, np.random.default_rng(seed), vocab_size=30000
    )
    ids = instance.input_ids.tolist()
    first, second = ids[1 : instance.num_first_segment - 1], ids[instance.num_first_segment : -1]
    assert first and second and sorted(first + second) == sorted(doc.ids.tolist())
    later = first if instance.sentence_order_label else second
    assert to_pieces(later[:1])[0].startswith("▁")  # split at a word boundary
  path = write_corpus(str(tmp_path / "c.txt"), [["Hello"], ["Anna found it.", "It rained."]])
  manifest = create_pretraining_data(
    path,
    str(tmp_path / "out"),
    PretrainingDataConfig(max_seq_length=64, dupe_factor=2),
    tokenizer_factory=make_tokenizer,
    show_progress=False,
  )
  assert manifest["stats"]["skipped_documents"] == 1
  assert manifest["stats"]["documents"] == 2 and manifest["num_instances"] == 2


def test_long_sentence_is_truncated(tmp_path) -> None:
  long_sentence = " ".join(["the remarkable river"] * 60)
  path = write_corpus(str(tmp_path / "c.txt"), [[long_sentence, "Anna found it."]])
  output = str(tmp_path / "out")
  manifest = create_pretraining_data(
    path,
    output,
    PretrainingDataConfig(max_seq_length=32, dupe_factor=3),
    tokenizer_factory=make_tokenizer,
    show_progress=False,
  )
  assert manifest["stats"]["long_sentences"] == 1
  for example in read_pretraining_dataset(output):
    assert example["input_mask"].sum() <= 32 and example["input_ids"].shape == (32,)


# ---------------------------------------------------------------------------------------------
# Files: determinism, parallelism, formats, the CLI, bad inputs.


def _generate(corpus_dir: str, output: str, seed: int, **kwargs) -> dict:
  config = PretrainingDataConfig(max_seq_length=64, dupe_factor=1, random_seed=seed)
  return create_pretraining_data(
    os.path.join(corpus_dir, "part-*.txt"),
    output,
    config,
    tokenizer_factory=make_tokenizer,
    num_shards=2,
    show_progress=False,
    **kwargs,
  )


def _file_bytes(directory: str) -> dict[str, bytes]:
  return {
    name: open(os.path.join(directory, name), "rb").read() for name in sorted(os.listdir(directory))
  }


def test_same_seed_same_bytes_other_seed_differs(corpus_dir: str, tmp_path) -> None:
  _generate(corpus_dir, str(tmp_path / "a"), seed=3)
  _generate(corpus_dir, str(tmp_path / "b"), seed=3)
  _generate(corpus_dir, str(tmp_path / "c"), seed=4)
  a, b, c = (_file_bytes(str(tmp_path / x)) for x in "abc")
  assert list(a) == [
    "manifest.json",
    "train-00000-of-00002.tfrecord",
    "train-00001-of-00002.tfrecord",
  ]
  assert a == b
  assert a.keys() == c.keys()
  assert all(a[name] != c[name] for name in a)


def test_parallel_workers_equal_serial(corpus_dir: str, tmp_path) -> None:
  _generate(corpus_dir, str(tmp_path / "serial"), seed=5)
  _generate(corpus_dir, str(tmp_path / "parallel"), seed=5, num_workers=2)
  assert _file_bytes(str(tmp_path / "serial")) == _file_bytes(str(tmp_path / "parallel"))


def test_arrayrecord_matches_tfrecord(corpus_dir: str, tmp_path) -> None:
  pytest.importorskip("array_record.python.array_record_module")
  _generate(corpus_dir, str(tmp_path / "tf"), seed=6)
  manifest = _generate(corpus_dir, str(tmp_path / "ar"), seed=6, data_format="arrayrecord")
  assert manifest["files"][0]["path"] == "train-00000-of-00002.array_record"
  from_tf = list(read_pretraining_dataset(str(tmp_path / "tf")))
  from_ar = list(read_pretraining_dataset(str(tmp_path / "ar")))
  assert len(from_tf) == len(from_ar) == manifest["num_instances"]
  for x, y in zip(from_tf, from_ar, strict=True):
    assert x.keys() == y.keys()
    for name in x:
      assert x[name].dtype == y[name].dtype
      np.testing.assert_array_equal(x[name], y[name])


def test_output_is_refused_unless_overwrite(corpus_dir: str, tmp_path) -> None:
  output = tmp_path / "out"
  output.mkdir()
  (output / "keep.txt").write_text("x")
  with pytest.raises(PretrainingDataError, match=r"out' is not empty.*--overwrite"):
    _generate(corpus_dir, str(output), seed=1)
  assert os.listdir(output) == ["keep.txt"]
  manifest = _generate(corpus_dir, str(output), seed=1, overwrite=True)
  assert sorted(os.listdir(output)) == ["manifest.json"] + [f["path"] for f in manifest["files"]]
  assert not glob.glob(str(tmp_path / ".*"))  # no temporary directory left behind


def test_bad_inputs_name_the_culprit(corpus_dir: str, tmp_path) -> None:
  def run(inputs: str) -> None:
    create_pretraining_data(
      inputs,
      str(tmp_path / "out"),
      PretrainingDataConfig(max_seq_length=64, dupe_factor=1),
      tokenizer_factory=make_tokenizer,
      show_progress=False,
    )

  with pytest.raises(PretrainingDataError, match=r"glob '.*nothing-\*\.txt' matches no file"):
    run(str(tmp_path / "nothing-*.txt"))
  with pytest.raises(PretrainingDataError, match=r"'.*missing\.txt' does not exist"):
    run(str(tmp_path / "missing.txt"))
  (tmp_path / "empty.txt").write_text("")
  with pytest.raises(PretrainingDataError, match=r"'.*empty\.txt' is empty"):
    run(os.path.join(corpus_dir, "part-0.txt") + "," + str(tmp_path / "empty.txt"))
  (tmp_path / "blank.txt").write_text("  \n\n \n")
  with pytest.raises(PretrainingDataError, match=r"'.*blank\.txt' has no text"):
    run(str(tmp_path / "blank.txt"))
  (tmp_path / "binary.txt").write_bytes(b"caf\xe9 \xff\xfe\n")
  with pytest.raises(PretrainingDataError, match=r"'.*binary\.txt' is not UTF-8"):
    run(str(tmp_path / "binary.txt"))
  with pytest.raises(PretrainingDataError, match=r"is a directory"):
    run(str(tmp_path))
  (tmp_path / "tiny.txt").write_text("a\n\nb\n")
  with pytest.raises(PretrainingDataError, match=r"no instance could be made"):
    run(str(tmp_path / "tiny.txt"))
  with pytest.raises(PretrainingDataError, match=r"max_seq_length=4"):
    PretrainingDataConfig(max_seq_length=4)
  assert not os.path.exists(tmp_path / "out")


def test_tfds_dataset_not_prepared_offline(tmp_path) -> None:
  pytest.importorskip("tensorflow_datasets")
  source = pretraining.TfdsSource("wikipedia/20230601.en", data_dir=str(tmp_path / "tfds"))
  with pytest.raises(
    PretrainingDataError, match=r"'wikipedia/20230601.en' is not prepared.*tfds build"
  ):
    create_pretraining_data(
      None,
      str(tmp_path / "out"),
      tfds_source=source,
      tokenizer_factory=make_tokenizer,
      show_progress=False,
    )
  with pytest.raises(PretrainingDataError, match=r"unknown TFDS dataset 'no_such_dataset_xyz'"):
    pretraining.tfds_documents(pretraining.TfdsSource("no_such_dataset_xyz"))


def test_tfds_documents_are_blocked_into_units(monkeypatch, tmp_path) -> None:
  """The TFDS path past the download: documents arrive in order and form seeded units."""
  documents = make_documents(30, seed=2)
  monkeypatch.setattr(pretraining, "TFDS_DOCS_PER_UNIT", 8)
  monkeypatch.setattr(pretraining, "tfds_documents", lambda source: iter(documents))
  manifest = create_pretraining_data(
    None,
    str(tmp_path / "out"),
    PretrainingDataConfig(max_seq_length=64, dupe_factor=1),
    tfds_source=pretraining.TfdsSource("fake"),
    tokenizer_factory=make_tokenizer,
    show_progress=False,
  )
  assert manifest["stats"]["documents"] == 30
  assert manifest["source"] == {
    "tfds": {"name": "fake", "split": "train", "text_key": "text", "data_dir": None}
  }
  assert len(list(read_pretraining_dataset(str(tmp_path / "out")))) == manifest["num_instances"]


def test_split_sentences() -> None:
  text = 'He left. She stayed! "Why?" Nobody knew.\nA new line e.g. here.'
  assert pretraining.split_sentences(text) == [
    "He left.",
    "She stayed!",
    '"Why?"',
    "Nobody knew.",
    "A new line e.g. here.",
  ]


def test_cli_end_to_end(corpus_dir: str, tmp_path) -> None:
  output = str(tmp_path / "cli")
  command = [
    sys.executable,
    "-m",
    "albert_jax.create_pretraining_data",
    f"--input={os.path.join(corpus_dir, 'part-1.txt')},{os.path.join(corpus_dir, 'part-2.txt')}",
    f"--output={output}",
    "--max_seq_length=64",
    "--max_predictions_per_seq=10",
    "--dupe_factor=1",
    "--num_shards=3",
    "--random_seed=9",
    "--ngram=2",
  ]
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  manifest = json.load(open(os.path.join(output, "manifest.json")))
  assert manifest["config"] == {
    "max_seq_length": 64,
    "max_predictions_per_seq": 10,
    "masked_lm_prob": 0.15,
    "dupe_factor": 1,
    "short_seq_prob": 0.1,
    "ngram": 2,
    "random_seed": 9,
  }
  assert manifest["vocab"]["vocab_size"] == 30000
  assert len(manifest["files"]) == 3
  assert f"wrote {manifest['num_instances']} examples" in result.stdout
  examples = list(read_pretraining_dataset(output))
  assert len(examples) == manifest["num_instances"] > 50
  assert examples[0]["masked_lm_ids"].shape == (10,)
  again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert again.returncode != 0 and "--overwrite" in again.stderr
