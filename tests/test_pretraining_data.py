"""Tests of albert_jax.data.pretraining (writing side) and the create_pretraining_data CLI.

Fidelity to Google's `create_pretraining_data.py` is checked against `tests/google_pretraining.py`,
a literal transcription of its rules: exactly on crafted cases, and statistically on a generated
prose-like corpus (`make_prose_documents`: 300 documents, 1-41 sentences of ~29 pieces, with
punctuation, numbers, names, possessives and hyphens: ~16% of pieces start a word without "▁")
at max_seq_length 128, where num_to_predict = round(T * 0.15) <= 19 < 20.

Tolerances of the statistics: both sides are samples, so a share is compared within 4 standard
errors of the difference of the two estimates. A run-length share is a ratio over runs that
come clustered in sequences, so its standard error is the ratio estimator's,
sqrt(sum_i (c_i - p r_i)^2) / sum_i r_i (c_i: runs of the bucket in sequence i, r_i: all its
runs), which is the binomial sqrt(p (1 - p) / N) when runs are independent; the larger of the
two is used. Per-instance shares (label 1, < 32 tokens) are binomial: sqrt(p (1 - p) / N).
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
  is_word_start,
  mask_tokens,
  read_pretraining_dataset,
  sample_masked_ngrams,
  tokenize_document,
  whole_words,
)
from albert_jax.tokenizer import AlbertTokenizer
from tests import google_pretraining as google

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLS, SEP, MASK = 2, 3, 4
MAX_SEQ_LENGTH = 128  # round(128 * 0.15) = 19 < 20: the prediction cap never binds
SIGMAS = 4  # tolerance of a statistic, in standard errors of the compared difference


def make_tokenizer() -> AlbertTokenizer:
  """The data tokenizer (Google's preprocessing), a picklable factory for spawned workers."""
  return AlbertTokenizer(replace_quotes=False)


TOKENIZER = make_tokenizer()
PIECES = TOKENIZER.convert_ids_to_tokens(list(range(TOKENIZER.vocab_size)))


def to_pieces(ids: np.ndarray) -> list[str]:
  return [PIECES[int(i)] for i in ids]


# ---------------------------------------------------------------------------------------------
# Corpora. `make_sentence` (short, regular sentences) is also the generator of test_pretrain.

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


PROSE_FUNCTION = (
  "the the the the of of of and and and to to in in a a is was for on that with as by at "
  "from it his her their its which who this these an or but not had has have were are been "
  "also after during while into over under between about"
).split()
PROSE_NOUNS = (
  "city river school family government war church album station county village season team "
  "company population film series party election university island museum bridge railway "
  "region capital century language species novel character league district emperor "
  "cathedral manuscript archipelago parliament telescope orchestra blacksmith lighthouse "
  "constituency municipality headquarters archaeologist choreographer biochemistry "
  "photosynthesis"
).split()
PROSE_VERBS = (
  "was is became joined founded built released married moved won lost described received "
  "published reconstructed photographed nominated abandoned negotiated commissioned excavated"
).split()
PROSE_ADJECTIVES = (
  "first new large small national local former early late main several major public "
  "traditional controversial picturesque unprecedented mediterranean"
).split()
PROSE_NAMES = (
  "John Mary Smith London Paris Germany France Anna Tomás José Müller Zürich Dvořák O'Brien "
  "McGregor Okonkwo Przemyslaw Nakamura São Paulo"
).split()
PROSE_ODD = ["U.S.", "(", ")", "don't", "it's", "St.", "£5", "km²"]


def make_prose_word(rng: random.Random) -> str:
  r = rng.random()
  if r < 0.42:
    return rng.choice(PROSE_FUNCTION)
  if r < 0.65:
    return rng.choice(PROSE_NOUNS) + ("s" if rng.random() < 0.2 else "")
  if r < 0.77:
    return rng.choice(PROSE_VERBS)
  if r < 0.87:
    return rng.choice(PROSE_ADJECTIVES)
  if r < 0.93:
    return rng.choice(PROSE_NAMES) + ("'s" if rng.random() < 0.15 else "")
  if r < 0.965:
    return rng.choice(
      [
        str(rng.randint(1800, 2020)),
        f"{rng.randint(1, 99)},{rng.randint(100, 999)}",
        f"{rng.randint(1, 9)}.{rng.randint(0, 9)}",
        f"{rng.randint(1, 99)}%",
        str(rng.randint(2, 60)),
      ]
    )
  if r < 0.98:
    return f"{rng.choice(PROSE_ADJECTIVES)}-{rng.choice(PROSE_NOUNS)}"
  return rng.choice(PROSE_ODD)


def make_prose_sentence(rng: random.Random) -> str:
  """3+ words (gamma-distributed, mean ~22), some commas, quotes and ``quotes''."""
  words = [make_prose_word(rng) for _ in range(max(3, int(rng.gammavariate(4.0, 5.5))))]
  words[0] = words[0][:1].upper() + words[0][1:]
  for i in range(1, len(words) - 1):
    if rng.random() < 0.07:
      words[i] += rng.choice([",", ",", ",", ";", ":"])
  text = " ".join(words)
  if rng.random() < 0.04:
    text = text.replace(" ", ' "', 1) + '"'
  if rng.random() < 0.02:
    text = f"``{text}''"
  return text + rng.choice([".", ".", ".", ".", ".", "?", "!"])


def make_prose_documents(num_documents: int, seed: int) -> list[list[str]]:
  """Documents of 1 + Exp(mean 9) sentences, at most 41 (about 11% have one sentence)."""
  rng = random.Random(seed)
  return [
    [make_prose_sentence(rng) for _ in range(1 + min(40, int(rng.expovariate(1 / 9))))]
    for _ in range(num_documents)
  ]


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


@pytest.fixture(scope="module")
def prose() -> tuple[list, list[list[list[str]]]]:
  """The prose corpus tokenized: our documents, and Google's (lists of sentence pieces)."""
  docs = [tokenize_document(d, TOKENIZER) for d in make_prose_documents(300, seed=0)]
  google_docs = [
    [d.pieces[s:e] for s, e in zip(d.sentence_starts[:-1], d.sentence_starts[1:], strict=True)]
    for d in docs
  ]
  return docs, google_docs


def our_instances(docs: list, passes: int, **config) -> list:
  """`passes` passes of create_instances_from_document over `docs` (one pool), unmasked."""
  config = PretrainingDataConfig(max_seq_length=MAX_SEQ_LENGTH, masked_lm_prob=0.0, **config)
  rng = np.random.default_rng(0)
  return [
    instance
    for _ in range(passes)
    for i in range(len(docs))
    for instance in create_instances_from_document(docs, i, config, rng, vocab_size=30000)
  ]


# ---------------------------------------------------------------------------------------------
# Word boundaries and n-gram selection: exactly Google's rules.


def test_word_starts_follow_googles_rule() -> None:
  expected = {
    "▁the": True,  # a ▁ piece
    "▁": True,
    ",": True,  # a punctuation piece
    ".": True,
    "9": True,  # a character outside a-z: digits, accents, symbols, apostrophes
    "99": True,
    "é": True,
    "x²": True,
    "£": True,
    "'s": True,
    "<unk>": True,
    "ing": False,  # letters only: a continuation
    "s.": False,  # letters and punctuation: a continuation too
    "``": False,
    "..": False,
  }
  assert {piece: is_word_start(piece) for piece in expected} == expected
  assert {piece: google.is_start_piece(piece) for piece in expected} == expected
  disagree = [p for p in PIECES if is_word_start(p) != google.is_start_piece(p)]
  assert disagree == []  # the whole 30k vocabulary


def test_whole_words_are_googles_candidates() -> None:
  pieces = ["[CLS]", "▁the", "▁qui", "x", "otic", ",", "▁19", "99", "[SEP]", "s", "▁a", "é"]
  pieces += ["'", "s", "ing", "[SEP]"]
  expected = [[1], [2, 3, 4], [5], [6], [7, 9], [10], [11], [12, 13, 14]]
  assert whole_words(pieces) == google.candidate_words(pieces) == expected


class ScriptedRng:
  """Stands in for the generator: a given visiting order and n per word."""

  def __init__(self, order: list[int], n_per_word: list[int]):
    self.order, self.n_per_word = order, n_per_word

  def permutation(self, num_words: int) -> np.ndarray:
    assert num_words == len(self.order)
    return np.asarray(self.order)

  def choice(self, values: np.ndarray, size: int, p: np.ndarray) -> np.ndarray:
    assert size == len(self.n_per_word)
    np.testing.assert_allclose(p, 1 / values / np.sum(1 / values))  # p(n) ∝ 1/n
    return np.asarray(self.n_per_word)


def ours_vs_google(sizes: list[int], budget: int, order: list[int], ns: list[int]) -> list:
  words, start = [], 1
  for size in sizes:
    words.append(list(range(start, start + size)))
    start += size
  chosen = sample_masked_ngrams(words, budget, ScriptedRng(order, ns), ngram=3)
  reference = google.select_ngrams(words, budget, order, lambda w: ns[w])
  assert [list(range(g.first_word, g.first_word + g.num_words)) for g in chosen] == reference
  for gram in chosen:
    assert list(gram.positions) == [p for w in reference[chosen.index(gram)] for p in words[w]]
  return [(g.first_word, g.num_words) for g in chosen]


def test_ngrams_shortened_at_the_budget_and_overlaps_skipped() -> None:
  # Words of 2, 1, 3, 1, 1 pieces; budget 4.
  # word 0, n=3: 6 pieces > 4 -> n=2: 3 pieces, chosen (3 masked);
  # word 2, n=1: 3 pieces, 6 > 4 and no shorter n-gram -> skipped;
  # word 1, n=2: 4 pieces > 1 left -> n=1: word 1, already covered -> skipped;
  # word 3, n=1: 1 piece, chosen (4 masked): the budget is met.
  assert ours_vs_google([2, 1, 3, 1, 1], 4, [0, 2, 1, 3, 4], [3, 1, 2, 1, 1]) == [(0, 2), (3, 1)]
  # An n-gram starting at the last word has one word; an overlapping one is skipped whole, not
  # shortened to its free part.
  assert ours_vs_google([1, 1, 1, 1], 4, [3, 2, 0, 1], [3, 2, 3, 1]) == [(3, 1), (0, 3)]
  assert ours_vs_google([1, 1, 1, 1], 4, [1, 0, 3, 2], [2, 2, 1, 1]) == [(1, 2), (3, 1)]


def test_ngram_selection_equals_google_on_random_cases() -> None:
  rng = np.random.default_rng(0)
  for _ in range(500):
    sizes = rng.integers(1, 5, size=rng.integers(1, 30)).tolist()
    order = rng.permutation(len(sizes)).tolist()
    ns = rng.integers(1, 4, size=len(sizes)).tolist()
    ours_vs_google(sizes, int(rng.integers(1, 25)), order, ns)


def test_mask_tokens_shapes_padding_and_determinism() -> None:
  pieces = ["[CLS]", *TOKENIZER.tokenize("the quixotic zephyrs unbelievably played . " * 8)]
  pieces = [*pieces[:60], "[SEP]"]
  ids = [CLS, *TOKENIZER.convert_tokens_to_ids(pieces[1:-1]), SEP]
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
# Statistics against Google's rules on the prose corpus.


def masked_runs(tokens: list[str], positions: list[int]) -> list[int]:
  """Lengths of the maximal runs of masked words, in Google's word units."""
  chosen = set(positions)
  runs, current = [], 0
  for word in google.candidate_words(tokens):
    inside = [p in chosen for p in word]
    assert all(inside) or not any(inside), "a word is masked in part"
    if all(inside):
      current += 1
    elif current:
      runs, current = [*runs, current], 0
  return runs + ([current] if current else [])


def run_statistics(runs_per_sequence: list[list[int]], pieces: list[int], short: list[bool]):
  """Shares of runs of 1/2/3/4+ words with their standard errors, pieces per run (mean, se),
  and the share of sequences short of their budget."""
  r_i = np.asarray([len(runs) for runs in runs_per_sequence], dtype=float)
  total = r_i.sum()
  shares, errors = [], []
  for bucket in (1, 2, 3, 4):
    c_i = np.asarray([sum(min(r, 4) == bucket for r in runs) for runs in runs_per_sequence])
    p = c_i.sum() / total
    clustered = np.sqrt(np.sum((c_i - p * r_i) ** 2)) / total
    shares.append(p)
    errors.append(max(clustered, np.sqrt(p * (1 - p) / total)))
  k_i = np.asarray(pieces, dtype=float)
  per_run = k_i.sum() / total
  per_run_error = np.sqrt(np.sum((k_i - per_run * r_i) ** 2)) / total
  return np.asarray(shares), np.asarray(errors), per_run, per_run_error, float(np.mean(short))


def test_masking_statistics_match_google(prose) -> None:
  docs, _ = prose
  sequences = [to_pieces(i.input_ids) for i in our_instances(docs, passes=3)]
  assert len(sequences) > 2000
  rng = np.random.default_rng(1)
  python_rng, numpy_rng = random.Random(1), np.random.RandomState(1)
  measured = {}
  for name in ("ours", "google"):
    runs, pieces, short = [], [], []
    for tokens in sequences * 2:  # two independent maskings of each sequence
      if name == "ours":
        ids = TOKENIZER.convert_tokens_to_ids(tokens)
        masked = mask_tokens(tokens, ids, rng, vocab_size=30000)
        positions = masked.masked_lm_positions[masked.masked_lm_weights > 0].tolist()
      else:
        positions = google.masked_positions(tokens, python_rng, numpy_rng)
      runs.append(masked_runs(tokens, positions))
      pieces.append(len(positions))
      short.append(len(positions) < google.budget(len(tokens)))
    measured[name] = run_statistics(runs, pieces, short)
    shares, _, per_run, _, short_share = measured[name]
    print(
      f"{name}: {sum(map(len, runs))} runs of 1/2/3/4+ words "
      f"{' / '.join(f'{100 * s:.1f}%' for s in shares)}, {per_run:.3f} pieces per run, "
      f"{100 * short_share:.2f}% of {len(runs)} sequences short of their budget"
    )
  ours, theirs = measured["ours"], measured["google"]
  bucket_tolerance = SIGMAS * np.hypot(ours[1], theirs[1])
  assert np.all(np.abs(ours[0] - theirs[0]) <= bucket_tolerance), (ours[0], theirs[0])
  assert abs(ours[2] - theirs[2]) <= SIGMAS * np.hypot(ours[3], theirs[3])
  n = 2 * len(sequences)  # short of budget: binomial, and at least 3 in n (zero seen in n)
  short_tolerance = max(SIGMAS * np.sqrt(theirs[4] * (1 - theirs[4]) / n), 3 / n)
  assert ours[4] <= theirs[4] + short_tolerance


def test_sentence_order_statistics_match_google(prose) -> None:
  """Label 1 (swapped, or B from another document) and instances under 32 tokens, against
  Google's rules; the "split" option's labels are balanced."""
  docs, google_docs = prose
  passes = 10
  ours = our_instances(docs, passes)
  rng = random.Random(0)
  theirs = [
    x
    for _ in range(passes)
    for i in range(len(google_docs))
    for x in google.instances(google_docs, i, MAX_SEQ_LENGTH, 0.1, rng)
  ]
  split = our_instances(docs, passes, one_sentence_chunks="split")
  shares = {
    "ours": ([i.sentence_order_label for i in ours], [len(i.input_ids) < 32 for i in ours]),
    "google": ([label for _, label in theirs], [len(tokens) < 32 for tokens, _ in theirs]),
    "split": ([i.sentence_order_label for i in split], [len(i.input_ids) < 32 for i in split]),
  }
  stats = {name: (np.mean(a), np.mean(b), len(a)) for name, (a, b) in shares.items()}
  for name, (label_1, short, n) in stats.items():
    print(f"{name}: label 1 {100 * label_1:.1f}%, < 32 tokens {100 * short:.1f}% of {n}")

  def error(p: float, n: int) -> float:
    return np.sqrt(p * (1 - p) / n)

  for k in (0, 1):
    (p, _, n), (q, _, m) = [(stats[s][k], 0, stats[s][2]) for s in ("ours", "google")]
    assert abs(p - q) <= SIGMAS * np.hypot(error(p, n), error(q, m)), (k, p, q)
  label_1, _, n = stats["split"]
  assert abs(label_1 - 0.5) <= SIGMAS * error(0.5, n)
  assert stats["google"][0] > 0.5 + SIGMAS * error(0.5, stats["google"][2])  # not balanced


# ---------------------------------------------------------------------------------------------
# Structure of generated data.


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
  assert {int(e["next_sentence_labels"][0]) for e in examples} == {0, 1}


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
  for name, expected in (("mask", 0.8), ("kept", 0.1), ("random", 0.1)):
    # the random draw can hit the original id: 1 in 29,995, far below the tolerance
    assert abs(shares[name] - expected) <= SIGMAS * np.sqrt(expected * (1 - expected) / total)


def test_masks_cover_whole_words_and_fill_the_budget(examples: list[dict]) -> None:
  for example in examples:
    ids, pieces = restored_pieces(example)
    masked = example["masked_lm_positions"][example["masked_lm_weights"] > 0].tolist()
    assert len(masked) == google.budget(len(ids))  # none short on this corpus
    assert not {0, len(pieces) - 1} & set(masked)
    masked_runs(pieces, masked)  # asserts that no word is masked in part


def is_sublist(part: list[int], whole: list[int]) -> bool:
  return any(whole[k : k + len(part)] == part for k in range(len(whole) - len(part) + 1))


@pytest.mark.parametrize("mode", ["random_next", "split"])
def test_every_sentence_used_and_labels(mode: str) -> None:
  """No chunk is dropped: putting each pass's segments back in order rebuilds every document
  (documents of < 509 tokens at max_seq_length 512, so nothing is truncated). Label 0: A B in
  order; label 1: B A swapped or, for a one-sentence chunk ("random_next"), A followed by a B
  that is a run of another document's sentences."""
  config = PretrainingDataConfig(
    max_seq_length=512, masked_lm_prob=0.0, short_seq_prob=1.0, one_sentence_chunks=mode
  )
  docs = [tokenize_document(sentences, TOKENIZER) for sentences in make_documents(40, seed=5)]
  rng = np.random.default_rng(7)
  kinds = collections.Counter()
  for index, doc in enumerate(docs):
    assert len(doc.ids) < 509
    for _ in range(3):  # three passes, each with its own targets and split points
      rebuilt: list[int] = []
      for instance in create_instances_from_document(docs, index, config, rng, vocab_size=30000):
        ids = instance.input_ids.tolist()
        first, second = (
          ids[1 : instance.num_first_segment - 1],
          ids[instance.num_first_segment : -1],
        )
        assert first and second
        rest = doc.ids.tolist()[len(rebuilt) :]
        if instance.sentence_order_label == 0:
          kind, part = "in order", first + second
        elif rest[: len(second) + len(first)] == second + first:
          kind, part = "swapped", second + first
        else:
          kind, part = "random next", first
          others = [d.ids.tolist() for k, d in enumerate(docs) if k != index]
          assert any(is_sublist(second, other) for other in others)
        assert rest[: len(part)] == part, kind
        rebuilt += part
        kinds[kind] += 1
      assert rebuilt == doc.ids.tolist()
  print(mode, dict(kinds))
  assert kinds["in order"] > 50 and kinds["swapped"] > 50
  assert (kinds["random next"] > 0) == (mode == "random_next")


def test_one_sentence_chunk_takes_b_from_another_document() -> None:
  """Google's rule: A = the sentence; B = another document from a random sentence on, whole
  sentences until B reaches target - len(A) tokens or the document ends; label 1, the label of
  a swapped pair."""
  docs = [
    tokenize_document(sentences, TOKENIZER)
    for sentences in [["Anna crossed the unprecedented archipelago quickly."]]
    + make_documents(3, seed=1)
  ]
  config = PretrainingDataConfig(max_seq_length=64, masked_lm_prob=0.0, short_seq_prob=0.0)
  sentence = docs[0].ids.tolist()
  target_b = config.max_num_tokens - len(sentence)
  for seed in range(20):
    (instance,) = create_instances_from_document(
      docs, 0, config, np.random.default_rng(seed), vocab_size=30000
    )
    assert instance.sentence_order_label == 1
    ids = instance.input_ids.tolist()
    first, second = ids[1 : instance.num_first_segment - 1], ids[instance.num_first_segment : -1]
    assert first == sentence
    matches = []
    keep = config.max_num_tokens - len(sentence)  # B, the longer, is cut to this (front/back)
    for other in docs[1:]:
      starts = other.sentence_starts.tolist()
      for s in range(len(starts) - 1):  # B starts at a sentence and takes whole sentences
        end = next((e for e in range(s + 1, len(starts)) if starts[e] - starts[s] >= target_b), -1)
        b = other.ids.tolist()[starts[s] : starts[end]]
        if len(second) == min(len(b), keep) and is_sublist(second, b):
          matches.append((s, end))
    assert matches, seed


def test_split_option_splits_the_sentence_and_skips_tiny_documents(tmp_path) -> None:
  config = PretrainingDataConfig(max_seq_length=64, masked_lm_prob=0.0, one_sentence_chunks="split")
  docs = [tokenize_document(["Anna crossed the unprecedented archipelago quickly."], TOKENIZER)]
  labels = []
  for seed in range(20):
    (instance,) = create_instances_from_document(
      docs, 0, config, np.random.default_rng(seed), vocab_size=30000
    )
    ids = instance.input_ids.tolist()
    first, second = ids[1 : instance.num_first_segment - 1], ids[instance.num_first_segment : -1]
    assert first and second and sorted(first + second) == sorted(docs[0].ids.tolist())
    later = first if instance.sentence_order_label else second
    assert to_pieces(later[:1])[0].startswith("▁")  # split at a word boundary
    labels.append(instance.sentence_order_label)
  assert set(labels) == {0, 1}
  path = write_corpus(str(tmp_path / "c.txt"), [["Hello"], ["Anna found it.", "It rained."]])
  for mode, skipped, instances in (("split", 1, 2), ("random_next", 0, 4)):
    manifest = create_pretraining_data(
      path,
      str(tmp_path / mode),
      PretrainingDataConfig(max_seq_length=64, dupe_factor=2, one_sentence_chunks=mode),
      tokenizer_factory=make_tokenizer,
      show_progress=False,
    )
    assert manifest["stats"]["skipped_documents"] == skipped
    assert manifest["stats"]["documents"] == 2 and manifest["num_instances"] == instances


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


def test_data_tokenizer_keeps_googles_quotes(tmp_path) -> None:
  """Data creation tokenizes as Google's tokenization.py (`` -> <unk>) unless told HF's."""
  sentences = ["He said ``hello'' to Anna.", "She left."]
  google_ids = tokenize_document(sentences, pretraining.default_tokenizer()).ids.tolist()
  hf_ids = tokenize_document(sentences, pretraining.TOKENIZERS["hf"]()).ids.tolist()
  assert 1 in google_ids and 1 not in hf_ids  # <unk>
  assert 7 in hf_ids and 7 not in google_ids  # '"'
  path = write_corpus(str(tmp_path / "c.txt"), [sentences])
  manifest = create_pretraining_data(
    path, str(tmp_path / "out"), PretrainingDataConfig(max_seq_length=32), show_progress=False
  )
  assert manifest["vocab"]["text_preprocessing"] == "google"


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
  (tmp_path / "tiny.txt").write_text("[SEP]\n\n[CLS] [MASK]\n")  # control tokens only
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
  from albert_jax.data.pretraining import corpus, writer

  monkeypatch.setattr(writer, "TFDS_DOCS_PER_UNIT", 8)
  monkeypatch.setattr(corpus, "tfds_documents", lambda source: iter(documents))
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
    "one_sentence_chunks": "random_next",
  }
  assert manifest["vocab"]["vocab_size"] == 30000
  assert manifest["vocab"]["text_preprocessing"] == "google"
  assert len(manifest["files"]) == 3
  assert f"wrote {manifest['num_instances']} examples" in result.stdout
  examples = list(read_pretraining_dataset(output))
  assert len(examples) == manifest["num_instances"] > 50
  assert examples[0]["masked_lm_ids"].shape == (10,)
  again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert again.returncode == 2 and "--overwrite" in again.stderr
  assert again.stderr.strip().splitlines()[-1].startswith("error: ")


def test_cli_options_and_user_errors(corpus_dir: str, tmp_path) -> None:
  output = str(tmp_path / "cli")
  command = [
    sys.executable,
    "-m",
    "albert_jax.create_pretraining_data",
    f"--input={os.path.join(corpus_dir, 'part-1.txt')}",
    f"--output={output}",
    "--max_seq_length=64",
    "--dupe_factor=1",
    "--one_sentence_chunks=split",
    "--text_preprocessing=hf",
  ]
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  manifest = json.load(open(os.path.join(output, "manifest.json")))
  assert manifest["config"]["one_sentence_chunks"] == "split"
  assert manifest["vocab"]["text_preprocessing"] == "hf"
  for bad, message in (
    (["--one_sentence_chunks=sometimes"], "one_sentence_chunks"),
    (["--output=x"], "give exactly one of --input and --tfds_name"),
    ([f"--input={corpus_dir}/none-*.txt", "--output=x"], "matches no file"),
  ):
    result = subprocess.run(
      [*command[:3], *bad], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
