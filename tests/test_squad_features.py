"""SQuAD features: character offsets back into the original context, sliding windows, labels,
n-best span search and the v2 null answer, with crafted logits; tfds mock data and local files."""

import json
import unicodedata

import numpy as np
import pytest
import tensorflow_datasets as tfds

from albert_jax import metrics
from albert_jax.data import squad, tasks
from albert_jax.offsets import normalize_with_map
from albert_jax.tokenizer import AlbertTokenizer

TRICKY = (
  "Café  Müller's shop,\topened in 1,990, sold ``fine'' crêpes (and tea)!  The cafe\u0301 "
  "was \u00a0big... “Quoted” text—dashes; naïve résumé: ﬁne ΟΔΟΣ 3.5% U.S. $1,200,000, end."
)


@pytest.fixture(scope="module")
def tok():
  return AlbertTokenizer()


@pytest.fixture(scope="module")
def sample():
  files = tasks.sample_files("squad_v1")
  task = tasks.get_task("squad_v1")
  return {split: tasks.load_examples(task, split, files=files) for split in files}


def _example(context, question, answer=None, qid="q", occurrence=0):
  start = -1
  for _ in range(occurrence + 1):
    start = context.index(answer, start + 1) if answer is not None else -1
  answers = [] if answer is None else [{"text": answer, "answer_start": start}]
  return {
    "id": qid,
    "title": "",
    "context": context,
    "question": question,
    "answers": answers,
    "is_impossible": answer is None,
  }


# ---- offsets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "keep_accents,replace_quotes", [(False, True), (True, True), (False, False)]
)
def test_normalize_with_map_matches_the_tokenizer(keep_accents, replace_quotes):
  tok = AlbertTokenizer(keep_accents=keep_accents, replace_quotes=replace_quotes)
  for text in (TRICKY, "  lead and trail  ", "a ``` b '''' c", "Ǆ İstanbul ﬀ"):
    norm, source = normalize_with_map(
      text, strip_accents=not keep_accents, replace_quotes=replace_quotes
    )
    assert norm == tok._preprocess(text)
    assert len(source) == len(norm) and source == sorted(source)
    for c, i in zip(norm, source, strict=True):  # each character comes from its source
      if c == " ":
        assert text[i].isspace()
      elif c == '"':
        assert text[i] == '"' or text[i : i + 2] in ("``", "''")
      else:  # (lowercasing a whole word turns its last Σ into ς)
        final_sigma = "ς" if text[i] == "Σ" else ""
        assert c in unicodedata.normalize("NFKD", text[i]).lower() + text[i].lower() + final_sigma


def test_offsets_cover_exactly_each_pieces_text(tok):
  """Every piece's span in the original text preprocesses to the piece itself, and the spans
  run left to right without overlap, over accents (composed and combining), runs of spaces,
  tabs, quotes, number commas and other punctuation."""
  pieces = tok.tokenize(TRICKY)
  ids, offsets = squad.context_pieces(tok, TRICKY)
  assert ids == tok.convert_tokens_to_ids(pieces)
  assert offsets.shape == (len(pieces), 2)
  previous_end = 0
  for piece, (start, end) in zip(pieces, offsets, strict=True):
    if piece == squad.SPIECE_UNDERLINE:
      assert (start, end) == (-1, -1)
      continue
    assert previous_end <= start < end
    assert tok._preprocess(TRICKY[start:end]) == piece.lstrip(squad.SPIECE_UNDERLINE), piece
    assert not TRICKY[start].isspace() and not TRICKY[end - 1].isspace()
    previous_end = end
  spans = {TRICKY[s:e] for s, e in offsets if s >= 0}
  assert {"Café", "Müller", "``", "''", "990", "cafe\u0301", "ΟΔΟΣ"} <= spans


def test_offsets_where_sentencepiece_normalizes_further(tok):
  """SentencePiece turns a zero-width space and a BOM into spaces and drops a bell character,
  which the tokenizer's preprocessing keeps: the alignment falls back to matching."""
  text = "Zero\u200bwidth, a bell\x07ring and a BOM\ufeffmark."
  pieces = tok.tokenize(text)
  _, offsets = squad.context_pieces(tok, text)
  previous_end = 0
  for piece, (start, end) in zip(pieces, offsets, strict=True):
    if piece == squad.SPIECE_UNDERLINE:
      continue
    assert previous_end <= start < end, piece
    assert tok._preprocess(text[start:end]).replace("\x07", "") == piece.lstrip("▁"), piece
    previous_end = end
  assert {"Zero", "width", "mark"} <= {text[s:e] for s, e in offsets}


def test_answer_spans_map_back_to_every_sample_answer(tok, sample):
  """For every question of the bundled SQuAD sample: answer_start is right, and the tokens the
  training labels point at cut exactly the answer text out of the context."""
  task = tasks.get_task("squad_v1")
  assert (len(sample["train"]), len(sample["validation"])) == (40, 15)
  for examples in sample.values():
    for example in examples:
      for answer in example["answers"]:
        start = answer["answer_start"]
        assert example["context"][start : start + len(answer["text"])] == answer["text"]
    features = tasks.featurize(task, examples, tok, 96, doc_stride=32, max_query_length=24)
    arrays, meta = features.arrays, features.meta
    labelled = set()
    for row, index in enumerate(arrays["example_index"]):
      s, e = arrays["start_positions"][row], arrays["end_positions"][row]
      if s == 0:
        continue
      offsets, first = meta["offsets"][row], meta["context_start"][row]
      text = examples[index]["context"][offsets[s - first, 0] : offsets[e - first, 1]]
      assert text == examples[index]["answers"][0]["text"]
      labelled.add(int(index))
    assert labelled == set(range(len(examples)))  # every answer lies in some window


# ---- windows ----------------------------------------------------------------------------------


def test_long_context_windows_stride_and_max_context(tok):
  words = [f"word{i % 50} item{i}" for i in range(120)]
  context = " ".join(words) + ". The treasure is buried under the old oak tree."
  example = _example(context, "Where is the treasure buried?", "under the old oak tree")
  query = tok.convert_tokens_to_ids(tok.tokenize(example["question"]))
  doc, _ = squad.context_pieces(tok, context)
  length, stride = 64, 20
  features = tasks.featurize(tasks.get_task("squad_v1"), [example], tok, length, doc_stride=stride)
  arrays, meta = features.arrays, features.meta
  room = length - len(query) - 3
  starts = [k * stride for k in range(1 + -(-(len(doc) - room) // stride))]
  assert len(features) == len(starts) > 3
  first = len(query) + 2
  assert (meta["context_start"] == first).all()
  for row, start in enumerate(starts):
    n = min(room, len(doc) - start)
    ids = [tok.cls_token_id, *query, tok.sep_token_id, *doc[start : start + n], tok.sep_token_id]
    assert arrays["input_ids"][row, : len(ids)].tolist() == ids
    assert (arrays["input_ids"][row, len(ids) :] == tok.pad_token_id).all()
    assert arrays["token_type_ids"][row].tolist() == [0] * first + [1] * (n + 1) + [0] * (
      length - len(ids)
    )
    assert len(meta["offsets"][row]) == len(meta["token_is_max_context"][row]) == n
  # each piece has max context in exactly one window: the one where it is most central
  owner = {}
  for row, start in enumerate(starts):
    for k in np.flatnonzero(meta["token_is_max_context"][row]):
      assert start + k not in owner
      owner[start + k] = row
  assert sorted(owner) == list(range(len(doc)))

  def score(p, s):  # BERT's: the shorter side's context, plus a little for a long window
    n = min(room, len(doc) - s)
    return min(p - s, s + n - 1 - p) + 0.01 * n if s <= p < s + n else -1

  for p in range(len(doc)):
    assert owner[p] == max(range(len(starts)), key=lambda w: score(p, starts[w]))
  p = starts[1] + room // 2  # the middle of window 1, also in windows 0 and 2
  assert score(p, starts[0]) >= 0 and score(p, starts[2]) >= 0 and owner[p] == 1
  # the answer (at the very end) is labelled only in the windows that hold all of it
  s_row = arrays["start_positions"]
  assert s_row[-1] > 0 and (s_row[:-2] == 0).all()
  assert (arrays["end_positions"][s_row == 0] == 0).all()


def test_training_drops_misplaced_answers(tok, caplog):
  good = _example("Paris is the capital of France.", "What is the capital?", "Paris", "good")
  bad = {**good, "id": "bad", "answers": [{"text": "Paris", "answer_start": 5}]}
  task = tasks.get_task("squad_v1")
  features = tasks.featurize(task, [good, bad], tok, 32, max_query_length=8)
  assert features.arrays["example_index"].tolist() == [0, 1]
  assert features.arrays["start_positions"][1] == 0
  features = tasks.featurize(task, [good, bad], tok, 32, max_query_length=8, training=True)
  assert features.arrays["example_index"].tolist() == [0]
  assert "Dropped 1 of 2 training questions" in caplog.text and "bad" in caplog.text
  with pytest.raises(ValueError, match="none of the 1 training questions"):
    tasks.featurize(task, [bad], tok, 32, max_query_length=8, training=True)
  with pytest.raises(ValueError, match="leaves no room for the context"):
    tasks.featurize(task, [good], tok, 32, max_query_length=64)


# ---- predictions --------------------------------------------------------------------------------


def _logits(features, seed=0):
  rng = np.random.default_rng(seed)
  shape = features.arrays["input_ids"].shape
  return rng.normal(0, 0.1, shape).astype(np.float32), rng.normal(0, 0.1, shape).astype(np.float32)


def _position(features, row, text_start, context):
  """The sequence position in `row` of the piece starting at character `text_start`."""
  offsets = features.meta["offsets"][row]
  k = int(np.flatnonzero(offsets[:, 0] == text_start)[0])
  return features.meta["context_start"][row] + k


def test_n_best_picks_the_planted_span(tok, tmp_path):
  context = "The red fox jumped over the lazy brown dog near the river bank at dawn."
  example = _example(context, "What did the fox jump over?", "the lazy brown dog")
  task = tasks.get_task("squad_v1")
  features = tasks.featurize(task, [example], tok, 48, max_query_length=16)
  assert len(features) == 1
  start, end = _logits(features)
  s = _position(features, 0, context.index("the lazy"), context)
  e = _position(features, 0, context.index("dog"), context)
  start[0, s], end[0, e] = 5.0, 5.0
  # higher-scoring but invalid candidates: a question token, an end before its start,
  # a span longer than max_answer_length, positions in the padding
  start[0, 3], end[0, 4] = 9.0, 9.0  # question pieces
  far = _position(features, 0, context.index("dawn"), context)
  start[0, far], end[0, s - 1] = 8.0, 8.0  # "dawn" .. "over": end before start
  end[0, -1] = 20.0  # padding
  predictions, scores = tasks.postprocess(
    task, [example], features, {"start_logits": start, "end_logits": end}, max_answer_length=30
  )
  assert predictions.values == {"q": "the lazy brown dog"}
  assert scores["exact"] == 100.0 and scores["f1"] == 100.0
  # with max_answer_length 3 the 4-piece gold span is out; the best valid one is then chosen
  predictions, _ = tasks.postprocess(
    task, [example], features, {"start_logits": start, "end_logits": end}, max_answer_length=3
  )
  assert predictions.values["q"] != "the lazy brown dog"
  [path] = tasks.write_predictions(task, predictions, tmp_path, "validation")
  assert json.load(open(path)) == predictions.values


def test_span_search_skips_starts_without_max_context(tok):
  words = "apple river stone cloud green paper music table water light".split()
  context = " ".join(words * 6)
  example = _example(context, "Which?", "apple")
  task = tasks.get_task("squad_v1")
  features = tasks.featurize(task, [example], tok, 40, doc_stride=12, max_query_length=8)
  assert len(features) > 2
  meta = features.meta
  start, end = _logits(features, seed=1)
  # window 1: a very high scoring one-piece span at a piece whose max context is elsewhere
  k = int(np.flatnonzero(~meta["token_is_max_context"][1])[0])
  start[1, meta["context_start"][1] + k] = end[1, meta["context_start"][1] + k] = 50.0
  # window 0: a lower scoring span at a piece with max context there: the answer
  z = int(np.flatnonzero(meta["token_is_max_context"][0])[3])
  start[0, meta["context_start"][0] + z] = end[0, meta["context_start"][0] + z] = 3.0
  outputs = {"start_logits": start, "end_logits": end}
  predictions, _ = tasks.postprocess(task, [example], features, outputs)
  expected = context[meta["offsets"][0][z, 0] : meta["offsets"][0][z, 1]]
  not_expected = context[meta["offsets"][1][k, 0] : meta["offsets"][1][k, 1]]
  assert expected != not_expected
  assert predictions.values["q"] == expected


def test_v2_null_answer_logic(tok, tmp_path):
  context = "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911."
  answerable = _example(context, "When did she win the Chemistry prize?", "1911", "has")
  impossible = _example(context, "When did she win the Peace prize?", None, "none")
  task = tasks.get_task("squad_v2")
  examples = [answerable, impossible]
  features = tasks.featurize(task, examples, tok, 48, max_query_length=16)
  assert features.arrays["example_index"].tolist() == [0, 1]
  assert features.arrays["start_positions"][1] == features.arrays["end_positions"][1] == 0
  start, end = _logits(features)
  p = _position(features, 0, context.index("1911"), context)
  start[0, p], end[0, p] = 2.0, 1.5  # best span: 3.5
  start[0, 0], end[0, 0] = 1.0, 1.0  # null: 2.0 -> null_odds -1.5: answer
  q = _position(features, 1, context.index("1903"), context)
  start[1, q], end[1, q] = 1.0, 1.0  # best span: 2.0
  start[1, 0], end[1, 0] = 2.0, 0.5  # null: 2.5 -> null_odds 0.5: no answer
  outputs = {"start_logits": start, "end_logits": end}
  predictions, scores = tasks.postprocess(task, examples, features, outputs)
  assert predictions.values == {"has": "1911", "none": ""}
  assert predictions.null_odds == pytest.approx({"has": -1.5, "none": 0.5}, abs=1e-6)
  assert (scores["exact"], scores["HasAns_exact"], scores["NoAns_exact"]) == (100.0, 100.0, 100.0)
  expected = metrics.squad_evaluate(
    [{"paragraphs": [{"qas": examples}]}], predictions.values, na_probs=predictions.null_odds
  )
  assert scores == expected
  # a threshold above the null odds keeps the span
  predictions, _ = tasks.postprocess(
    task, examples, features, outputs, null_score_diff_threshold=1.0
  )
  assert predictions.values == {"has": "1911", "none": "1903"}
  paths = tasks.write_predictions(task, predictions, tmp_path, "validation")
  assert [p.rsplit("/", 1)[1] for p in paths] == ["predictions.json", "null_odds.json"]
  assert json.load(open(paths[1])) == pytest.approx(predictions.null_odds)


def test_v2_null_score_is_the_lowest_over_windows(tok):
  context = " ".join(f"w{i}" for i in range(60))
  example = _example(context, "Which?", "w5")
  task = tasks.get_task("squad_v2")
  features = tasks.featurize(task, [example], tok, 40, doc_stride=10, max_query_length=8)
  start, end = np.zeros_like(_logits(features)[0]), np.zeros_like(_logits(features)[0])
  start[:, 0] = end[:, 0] = 4.0
  start[-1, 0] = -1.0  # one window's null score: 3.0
  p = _position(features, 0, context.index("w5"), context)
  start[0, p] = end[0, p] = 1.25  # best span 2.5
  predictions, _ = tasks.postprocess(
    task, [example], features, {"start_logits": start, "end_logits": end}
  )
  assert predictions.null_odds["q"] == pytest.approx(0.5)
  assert predictions.values["q"] == ""


# ---- loading ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["squad_v1", "squad_v2"])
def test_squad_from_tfds_mock_data(name, tok, tmp_path):
  task = tasks.get_task(name)
  with tfds.testing.mock_data(num_examples=8):
    examples = tasks.load_examples(task, "validation", data_dir=str(tmp_path))
  assert len(examples) == 8 and len({ex["id"] for ex in examples}) == 8
  features = tasks.featurize(task, examples, tok, 64, max_query_length=16)
  assert sorted(set(features.arrays["example_index"].tolist())) == list(range(8))
  start, end = _logits(features)
  outputs = {"start_logits": start, "end_logits": end}
  predictions, scores = tasks.postprocess(task, examples, features, outputs)
  assert sorted(predictions.values) == sorted(ex["id"] for ex in examples)
  for ex in examples:  # every answer is a piece of its context
    assert predictions.values[ex["id"]] in ex["context"]
  assert scores["total"] == 8 and 0.0 <= scores["f1"] <= 100.0
  paths = tasks.write_predictions(task, predictions, tmp_path / "out", "validation")
  assert len(paths) == (2 if name == "squad_v2" else 1)
  # tfds' random mock answers are not in their contexts: training keeps only the impossible ones
  impossible = {i for i, ex in enumerate(examples) if ex["is_impossible"]}
  if not impossible:
    with pytest.raises(ValueError, match="none of the 8 training questions"):
      tasks.featurize(task, examples, tok, 64, max_query_length=16, training=True)
  else:
    features = tasks.featurize(task, examples, tok, 64, max_query_length=16, training=True)
    assert set(features.arrays["example_index"].tolist()) == impossible
    assert (features.arrays["start_positions"] == 0).all()


def test_squad_local_v2_file_and_errors(tok, tmp_path):
  context = "Ada Lovelace wrote the first published algorithm in 1843."
  data = {
    "version": "v2.0",
    "data": [
      {
        "title": "Ada",
        "paragraphs": [
          {
            "context": context,
            "qas": [
              {
                "id": "a",
                "question": "When?",
                "answers": [{"text": "1843", "answer_start": context.index("1843")}],
              },
              {"id": "b", "question": "Who won?", "answers": [], "is_impossible": True},
            ],
          }
        ],
      }
    ],
  }
  path = tmp_path / "v2.json"
  path.write_text(json.dumps(data))
  examples = tasks.load_examples(tasks.get_task("squad_v2"), "train", files={"train": str(path)})
  assert [(ex["id"], ex["is_impossible"]) for ex in examples] == [("a", False), ("b", True)]
  features = tasks.featurize(
    tasks.get_task("squad_v2"), examples, tok, 32, max_query_length=8, training=True
  )
  s, e = features.arrays["start_positions"], features.arrays["end_positions"]
  offsets, first = features.meta["offsets"][0], features.meta["context_start"][0]
  assert context[offsets[s[0] - first, 0] : offsets[e[0] - first, 1]] == "1843"
  assert (s[1], e[1]) == (0, 0)

  with pytest.raises(ValueError, match=r"v2\.json.*question 'b' is marked is_impossible.*squad_v2"):
    tasks.load_examples(tasks.get_task("squad_v1"), "train", files={"train": str(path)})
  del data["data"][0]["paragraphs"][0]["context"]
  path.write_text(json.dumps(data))
  with pytest.raises(ValueError, match=r"v2\.json data\[0\]\.paragraphs\[0\] has no 'context'"):
    tasks.load_examples(tasks.get_task("squad_v2"), "train", files={"train": str(path)})
  path.write_text(json.dumps({"version": "1.1", "data": []}))
  with pytest.raises(ValueError, match=r"v2\.json holds no examples"):
    tasks.load_examples(tasks.get_task("squad_v1"), "train", files={"train": str(path)})
