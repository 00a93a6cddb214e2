"""fill-mask and features against HF PyTorch ALBERT on a converted random model (tiny widths,
the real 30000-piece vocabulary so the bundled tokenizer's ids are valid)."""

import json
import types

import numpy as np
import pytest
import torch

from albert_jax import AlbertConfig, AlbertTokenizer, convert, fill_mask, from_pretrained, pipeline
from albert_jax.config import PRESETS
from albert_jax.data import batching, packing
from albert_jax.errors import UserError
from albert_jax.features import main as features_main
from albert_jax.pipelines import base
from albert_jax.pipelines.features import extract_features, load_features
from albert_jax.pipelines.fill_mask import FillMask
from albert_jax.weights.converted import save_params
from tests.reference import hf_model
from tests.test_model import SMALL, TOL

TINY = dict(SMALL, vocab_size=30000, num_hidden_layers=2, num_hidden_groups=1)
TEXTS = [
  "Hello I'm a [MASK] model.",
  "The capital of France is [MASK], and it is a very large city in Europe.",
  "[MASK] went up the [MASK] to fetch a pail of water.",
  "Paris is [MASK].",
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """A random AlbertForPreTraining (MLM, SOP and pooler), converted by the CLI."""
  root = tmp_path_factory.mktemp("pipelines")
  ref = hf_model("pretraining", seed=2, **TINY)
  with torch.no_grad():  # a peaked output distribution, so scores are far from uniform
    ref.predictions.bias.normal_(0.0, 3.0)
  ref.save_pretrained(root / "hf")
  convert.main(["c", "--model", str(root / "hf"), "--output", str(root / "out")])
  return ref, root / "out"


@pytest.fixture(scope="module")
def fill(converted):
  return FillMask(
    from_pretrained(converted[1], head="masked_lm", scan_layers=False), top_k=5, batch_size=4
  )


def hf_top_k(ref, ids, k):
  """HF's logits on the same ids, unpadded, one text at a time: softmax, top k per mask."""
  with torch.no_grad():
    logits = ref(torch.tensor([ids])).prediction_logits[0]
  masks = [p for p, i in enumerate(ids) if i == 4]
  probs = torch.softmax(logits[masks], dim=-1)
  scores, tokens = probs.topk(k, dim=-1)
  return scores.numpy(), tokens.numpy()


def test_fill_mask_matches_hf_logits(converted, fill):
  ref, _ = converted
  results = fill(TEXTS)  # one batched call: padded to the batch's length bucket
  worst, top = 0.0, 0.0
  for text, result in zip(TEXTS, results, strict=True):
    ids = fill.model.tokenizer(text)["input_ids"]
    scores, tokens = hf_top_k(ref, ids, 5)
    per_mask = result if len(scores) > 1 else [result]
    assert len(per_mask) == len(scores)
    for candidates, want_scores, want_tokens in zip(per_mask, scores, tokens, strict=True):
      assert [c["token"] for c in candidates] == want_tokens.tolist(), text
      got = np.array([c["score"] for c in candidates])
      np.testing.assert_allclose(got, want_scores, rtol=1e-4, atol=1e-6)
      worst = max(worst, float(np.abs(got - want_scores).max()))
      top = max(top, float(want_scores[0]))
  print(f"fill-mask: top score up to {top:.3f}, max abs score diff vs HF {worst:.2e}")
  assert worst <= TOL and top > 0.01  # the check is not on a flat distribution


def test_fill_mask_fields_follow_hf(fill):
  tokenizer = fill.model.tokenizer
  one = fill(TEXTS[0])
  assert len(one) == 5 and set(one[0]) == {"score", "token", "token_str", "sequence"}
  assert [c["score"] for c in one] == sorted((c["score"] for c in one), reverse=True)
  for c in one:
    assert c["token_str"] == tokenizer.decode([c["token"]])
    ids = tokenizer(TEXTS[0])["input_ids"]
    ids[ids.index(tokenizer.mask_token_id)] = c["token"]
    assert c["sequence"] == tokenizer.decode(ids, skip_special_tokens=True)
    assert "[CLS]" not in c["sequence"] and "[MASK]" not in c["sequence"]
  two = fill(TEXTS[2], top_k=3)  # several masks: a list per mask, the other mask kept
  assert len(two) == 2 and all(len(row) == 3 for row in two)
  for row in two:
    for c in row:
      assert c["sequence"].startswith("[CLS]") and c["sequence"].count("[MASK]") == 1
  # A text alone equals the same text in a padded batch.
  alone = fill(TEXTS[3])
  batched = fill(TEXTS)[3]
  assert [c["token"] for c in alone] == [c["token"] for c in batched]
  np.testing.assert_allclose([c["score"] for c in alone], [c["score"] for c in batched], rtol=1e-5)


def test_fill_mask_compiles_once_per_length_bucket(fill):
  first = ["A [MASK] b c d e f.", "A longer [MASK] text here, with more words in it."]
  second = ["Another [MASK] one is here now.", "And [MASK] more words than that, yes."]
  lengths = [len(fill.model.tokenizer(t)["input_ids"]) for t in first + second]
  assert len(set(lengths)) == 4 and batching.choose_buckets(lengths, max_length=512) == (16,)
  before = fill._top_k._cache_size()
  fill(first)
  after_first = fill._top_k._cache_size()
  fill(second)
  assert fill._top_k._cache_size() == after_first <= before + 1


def test_fill_mask_errors(fill, converted, tmp_path):
  with pytest.raises(ValueError, match=r"No \[MASK\] in text 'no mask here'"):
    fill([TEXTS[0], "no mask here"])
  base = tmp_path / "base"
  model = from_pretrained(converted[1], head="base")
  save_params(base, model.params, model.config, "base")
  with pytest.raises(ValueError, match="predictions/.*for head 'masked_lm'"):
    fill_mask.main(["f", "--model", str(base), "Hello [MASK]."])


def test_fill_mask_cli_json(converted, fill, capsys):
  assert (
    fill_mask.main(
      ["f", "--model", str(converted[1]), "--top_k", "3", "--json", TEXTS[0], TEXTS[2]]
    )
    == 0
  )
  printed = json.loads(capsys.readouterr().out)
  api = fill([TEXTS[0], TEXTS[2]], top_k=3)
  assert [[c["token"] for c in r] for r in printed[0:1]] == [[c["token"] for c in api[0]]]
  assert [[c["token"] for c in row] for row in printed[1]] == [
    [c["token"] for c in row] for row in api[1]
  ]
  fill_mask.main(["f", "--model", str(converted[1]), TEXTS[0]])
  assert TEXTS[0] in capsys.readouterr().out


def test_features_match_hf_and_are_written_atomically(converted, tmp_path, capsys):
  ref, out = converted
  texts = [
    "hello world",
    "",
    "a somewhat longer sentence about the weather in paris today",
    "short one",
  ]
  (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
  feats = tmp_path / "feats.npz"
  argv = [
    "x",
    "--model",
    str(out),
    "--input",
    str(tmp_path / "texts.txt"),
    "--output",
    str(feats),
    "--batch_size",
    "3",
    "--pooled",
  ]
  assert features_main(argv) == 0
  assert "4 texts" in capsys.readouterr().out
  got = load_features(feats)
  with np.load(feats) as data:
    assert sorted(data) == ["input_ids", "last_hidden_state", "offsets", "pooler_output"]
    assert data["offsets"][-1] == data["last_hidden_state"].shape[0] == data["input_ids"].size
  worst = 0.0
  tokenizer = from_pretrained(out, head="base").tokenizer
  for i, text in enumerate(texts):
    ids = tokenizer(text)["input_ids"]
    assert got.input_ids[i].tolist() == ids
    with torch.no_grad():
      theirs = ref.albert(torch.tensor([ids]))
    worst = max(
      worst,
      float(np.abs(got.last_hidden_state[i] - theirs.last_hidden_state[0].numpy()).max()),
      float(np.abs(got.pooler_output[i] - theirs.pooler_output[0].numpy()).max()),
    )
  print(f"features: max abs diff vs HF {worst:.2e}")
  assert worst <= TOL

  before = feats.read_bytes()
  with pytest.raises(UserError, match="already exists; pass --overwrite"):
    features_main(argv)
  assert feats.read_bytes() == before
  assert features_main([*argv[:-1], "--max_seq_length", "4", "--overwrite"]) == 0  # not pooled
  short = load_features(feats)
  assert short.pooler_output is None and max(len(ids) for ids in short.input_ids) == 4
  assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.npz", "texts.txt"]


def test_features_need_a_pooler_for_pooled_output(tmp_path):
  # HF's AlbertForMaskedLM has no pooler; 30000 words take every id of the bundled tokenizer
  ref = hf_model("masked_lm", **{**SMALL, "vocab_size": 30000})
  ref.save_pretrained(tmp_path / "hf")
  (tmp_path / "t.txt").write_text("hello\n")
  out = tmp_path / "f.npz"
  with pytest.raises(ValueError, match=r"no \['pooler/bias', 'pooler/kernel'\] for head 'base'"):
    features_main(
      [
        "x",
        "--model",
        str(tmp_path / "hf"),
        "--input",
        str(tmp_path / "t.txt"),
        "--output",
        str(out),
        "--pooled",
      ]
    )
  assert not out.exists()
  model = from_pretrained(tmp_path / "hf", head="base", add_pooling_layer=False, strict=True)
  feats = extract_features(model, ["hello"], progress=False)
  assert feats.last_hidden_state[0].shape == (3, SMALL["hidden_size"])


# ---- task pipelines (albert_jax.pipelines) against transformers ----------------------------------

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
F32 = 1e-5  # probabilities from float32 logits of two implementations
TRICKY_TEXTS = [
  "Café  Müller’s “quoted” text, naïve résumé — 1,000,000 digits.",
  "ΟΔΟΣ  straße\tﬁne cafe\u0301 ``old'' quotes, 3,5 and 12,",
  "  leading and trailing spaces  ",
]


def _convert_and_export(root, head, seed, **config):
  """A random HF model of `head` -> save_pretrained -> convert CLI -> export CLI."""
  from albert_jax import export

  ref = hf_model(head, seed=seed, **TINY, **config)
  with torch.no_grad():  # peaked outputs, so labels are far from ties
    for name, p in ref.named_parameters():
      if name.startswith(("classifier", "qa_outputs")):
        p.mul_(20.0)
    if head == "token_classification":  # centred on the mean hidden state: varied tags
      ids = torch.randint(
        5, TINY["vocab_size"], (4, 32), generator=torch.Generator().manual_seed(0)
      )
      mean_H = ref.albert(ids).last_hidden_state.mean((0, 1))
      ref.classifier.bias.copy_(-ref.classifier.weight @ mean_H)
  ref.save_pretrained(root / "hf")
  convert.main(["c", "--model", str(root / "hf"), "--output", str(root / "ours")])
  export.main(["e", "--model", str(root / "ours"), "--output", str(root / "hfx")])
  return ref, root / "ours", root / "hfx"


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
  return _convert_and_export(
    tmp_path_factory.mktemp("tc"),
    "token_classification",
    seed=3,
    num_labels=len(TAGS),
    id2label=dict(enumerate(TAGS)),
    label2id={t: i for i, t in enumerate(TAGS)},
  )


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_token_classification_matches_transformers(tagger, strategy):
  import transformers

  _, ours_dir, hf_dir = tagger
  texts = [
    "My name is Wolfgang and I live in Berlin, near 1,000 trees.",
    "Charles Babbage lived in London with his friend.",
  ]
  hf = transformers.pipeline(
    "token-classification", model=str(hf_dir), aggregation_strategy=strategy, device="cpu"
  )
  ours = pipeline("token-classification", model=ours_dir, aggregation_strategy=strategy)
  tok = ours.model.tokenizer
  for text in texts:  # texts on which the two tokenizers agree
    assert tok.tokenize(text) == hf.tokenizer.tokenize(text)
  got, want = ours(texts), hf(texts)
  assert sum(map(len, want)) > 2  # a few entities, not an empty comparison
  for a, b in zip(got, want, strict=True):
    assert [{k: v for k, v in e.items() if k != "score"} for e in a] == [
      {k: (int(v) if k == "index" else v) for k, v in e.items() if k != "score"} for e in b
    ]
    np.testing.assert_allclose([e["score"] for e in a], [e["score"] for e in b], atol=F32)


def test_offsets_are_the_original_spans(tagger):
  tok = AlbertTokenizer()
  tag = pipeline("token-classification", model=tagger[1], ignore_labels=[])
  seen_unknown = False
  for text in TRICKY_TEXTS:
    pieces, offsets = tok.tokenize_with_offsets(text)
    assert pieces == tok.tokenize(text)
    entities = tag(text)
    unknown = [tok.convert_tokens_to_ids(p) == tok.unk_token_id for p in pieces]
    seen_unknown |= any(unknown)  # an unknown piece shows its original text, as in HF
    assert [e["word"] for e in entities] == [
      text[s:e] if unk else p for p, (s, e), unk in zip(pieces, offsets, unknown, strict=True)
    ]
    for piece, (start, end), e in zip(pieces, offsets, entities, strict=True):
      if piece == "▁":  # no characters of its own: an empty span where the next piece starts
        assert start == -1 and e["start"] == e["end"]
        continue
      assert (e["start"], e["end"]) == (start, end)
      assert tok._preprocess(text[start:end]) == piece.lstrip("▁"), (piece, text[start:end])
      assert not text[start].isspace() and not text[end - 1].isspace()
  assert seen_unknown


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
  return _convert_and_export(tmp_path_factory.mktemp("qa"), "question_answering", seed=4)


def _hf_answer(ref, tokenizer, question, context, max_answer_len=15):
  """transformers' model and tokenizer: the best single span by p(start) p(end) over the context
  pieces ([CLS] in the softmax, not an answer), widened to the tokenizer's words. Our ranking
  also merges spans of one text (tests/test_pipelines_hf.py); test_predict's fine-tuned model
  answers where no merge overtakes the best span."""
  enc = tokenizer(question, context, return_offsets_mapping=True, return_token_type_ids=True)
  with torch.no_grad():
    out = ref(
      torch.tensor([enc["input_ids"]]), token_type_ids=torch.tensor([enc["token_type_ids"]])
    )
  seq = enc.sequence_ids()
  allowed = np.array([s == 1 for s in seq])
  allowed[0] = True
  probs = []
  for logits in (out.start_logits[0].numpy(), out.end_logits[0].numpy()):
    x = np.where(allowed, logits.astype(np.float64), -10000.0)
    e = np.exp(x - x.max())
    probs.append(e / e.sum())
  best = max(
    (probs[0][s] * probs[1][e], s, e)
    for s in range(len(seq))
    for e in range(s, min(s + max_answer_len, len(seq)))
    if seq[s] == 1 and seq[e] == 1
  )
  score, s, e = best
  start = enc.word_to_chars(enc.token_to_word(s), sequence_index=1)[0]
  end = enc.word_to_chars(enc.token_to_word(e), sequence_index=1)[1]
  return {"score": float(score), "start": start, "end": end, "answer": context[start:end]}


QUESTIONS = [
  {
    "question": "Where did Charles Babbage live?",
    "context": "Charles Babbage lived in London with his friend, near 1,000 old trees.",
  },
  {"question": "What is my name?", "context": "My name is Wolfgang and I live in Berlin."},
]


def test_question_answering_call_forms(reader):
  """Every call form of transformers' question-answering pipeline gives what the dict form
  gives (the same rows, so exactly); a list of inputs gives a list of results, even of one.
  (Ranking against transformers 4.57 itself: tests/test_pipelines_hf.py.)"""
  answer = pipeline("question-answering", model=reader[1], top_k=2)
  q, c = QUESTIONS[0]["question"], QUESTIONS[0]["context"]
  one = answer(QUESTIONS[0])
  assert len(one) == 2
  assert [a["score"] for a in one] == sorted((a["score"] for a in one), reverse=True)
  assert answer(question=q, context=c) == one
  assert answer(q, c) == one
  assert answer([QUESTIONS[0]]) == [one]
  assert answer(question=[q], context=c) == [one]
  both = answer(QUESTIONS)
  assert answer(*QUESTIONS) == both
  questions, contexts = [x["question"] for x in QUESTIONS], [x["context"] for x in QUESTIONS]
  assert answer(question=questions, context=contexts) == both
  several = answer(question=[q, "Who had a friend?"], context=c)
  assert several == answer([QUESTIONS[0], {"question": "Who had a friend?", "context": c}])
  assert several[0] == one
  assert answer(question=q, context=c, top_k=1) == one[0]  # one answer: a dict
  for a in one:
    assert c[a["start"] : a["end"]] == a["answer"] == a["answer"].strip()
  with pytest.raises(UserError, match="2 questions and 1 contexts"):
    answer(question=[q, q], context=[c])
  with pytest.raises(UserError, match="a list of questions with one context"):
    answer(question=q, context=[c])
  with pytest.raises(UserError, match="not both"):
    answer(QUESTIONS[0], question=q)
  with pytest.raises(UserError, match="Give question= and context="):
    answer(question=q)
  with pytest.raises(UserError, match="has no 'context' text"):
    answer(question=q, context="  ")
  with pytest.raises(UserError, match=r"Unknown question-answering options \['topk'\]"):
    answer(QUESTIONS[0], topk=3)


def test_question_answering_length_aliases(reader):
  """max_seq_length / max_query_length (this project's names) are max_seq_len /
  max_question_len (transformers'), in the constructor and in a call; two values disagree."""
  context = " ".join(f"Sentence {i} says that Berlin is near tree {i}." for i in range(12))
  question = {"question": "Where is the tree near Berlin today?", "context": context}
  hf = pipeline("question-answering", model=reader[1], max_seq_len=32, max_question_len=4)
  ours = pipeline("question-answering", model=reader[1], max_seq_length=32, max_query_length=4)
  assert ours.resolved() == hf.resolved()
  assert ours.resolved()["max_seq_len"] == 32 and ours.resolved()["max_question_len"] == 4
  want = hf(question, top_k=3)
  assert ours(question, top_k=3) == want
  plain = pipeline("question-answering", model=reader[1])
  assert plain(question, top_k=3, max_seq_length=32, max_query_length=4) == want
  assert plain(question, top_k=3, max_seq_len=32, max_seq_length=32, max_query_length=4) == want
  with pytest.raises(UserError, match="max_seq_len=32 and its alias max_seq_length=64 disagree"):
    pipeline("question-answering", model=reader[1], max_seq_len=32, max_seq_length=64)
  with pytest.raises(UserError, match="max_question_len=4 and its alias max_query_length=5"):
    hf(question, max_question_len=4, max_query_length=5)
  assert hf(question, top_k=3, max_query_length=5) == hf(question, top_k=3, max_question_len=5)


def test_question_answering_long_context_in_windows(reader):
  context = " ".join(
    f"Sentence {i} says that Berlin, Café Müller, is near tree {i}." for i in range(40)
  )
  answer = pipeline("question-answering", model=reader[1], max_seq_len=64, doc_stride=16)
  item = {"question": "Where is the tree?", "context": context}
  example = answer.encode(0, item, answer.resolved())
  assert len(example.rows) > 5 and all(len(r["input_ids"]) <= 64 for r in example.rows)
  # windows of 64 - 3 - 5 question pieces, consecutive ones overlapping by doc_stride pieces
  assert [a for a, _ in example.windows] == list(range(0, 40 * 20, 56 - 16))[: len(example.windows)]
  results = answer(item, top_k=5)
  assert len(results) == 5
  for r in results:
    assert context[r["start"] : r["end"]] == r["answer"] and r["answer"].strip()
  with pytest.raises(UserError, match="leaves no room for the context"):
    answer({"question": "why " * 80, "context": context})
  with pytest.raises(UserError, match="doc_stride=40 must be less than the 40 context pieces"):
    answer({"question": "why " * 21, "context": context}, doc_stride=40)


def _record_shapes(pipe) -> list[tuple[int, ...]]:
  """The input_ids shape of every batch `pipe`'s runner runs from now on (packed or not)."""
  shapes = []
  for name in ("_run", "_run_packed"):
    run = getattr(pipe.runner, name)

    def recording(params, ids, *rest, run=run):
      shapes.append(ids.shape)
      return run(params, ids, *rest)

    setattr(pipe.runner, name, recording)
  return shapes


QA_CONTEXTS = [
  " ".join(f"Sentence {i} says Berlin is near tree {i}." for i in range(k)) for k in (1, 3, 9)
]
TAGGED_TEXTS = [*TRICKY_TEXTS, "short", "Berlin and Paris are cities in Europe"]


def _same_results(got: list, want: list, fields: tuple[str, ...]) -> None:
  """Equal `fields` and scores within float32 rounding (F32: a row computed in another batch
  shape, or beside other rows it does not see, only reorders float32 sums)."""
  for g, w in zip(sum(got, []), sum(want, []), strict=True):
    assert [g[f] for f in fields] == [w[f] for f in fields]
    assert g["score"] == pytest.approx(w["score"], abs=F32)


def test_a_token_budget_changes_the_batches_not_the_results(reader, tagger):
  """`max_tokens` (padded positions a batch) against no budget (`batch_size` rows), rows in
  batches of their own bucket (`pack=False`): the same answers and entities."""
  questions = [{"question": "Where is the tree?", "context": c} for c in QA_CONTEXTS]
  options = dict(max_seq_len=64, doc_stride=16, top_k=2, pack=False)
  budget = pipeline("question-answering", model=reader[1], max_tokens=128, **options)
  shapes = _record_shapes(budget)
  got = budget(questions)
  want = pipeline("question-answering", model=reader[1], max_tokens=None, **options)(questions)
  assert max(b * n for b, n in shapes) <= 128 and len(shapes) > 2
  _same_results(got, want, ("start", "end", "answer"))
  texts = TAGGED_TEXTS
  budget = pipeline("token-classification", model=tagger[1], max_tokens=16, pack=False)
  shapes = _record_shapes(budget)
  got = budget(texts)
  want = pipeline("token-classification", model=tagger[1], max_tokens=None, pack=False)(texts)
  assert all(b == 1 or b * n <= 16 for b, n in shapes)
  for g, w in zip(sum(got, []), sum(want, []), strict=True):
    assert {k: v for k, v in g.items() if k != "score"} == {
      k: v for k, v in w.items() if k != "score"
    }
    assert g["score"] == pytest.approx(w["score"], abs=F32)
  with pytest.raises(UserError, match="max_tokens=0"):
    pipeline("token-classification", model=tagger[1], max_tokens=0)


@pytest.mark.parametrize(("max_tokens", "batch_size"), [(128, 32), (None, 4)])
def test_packing_changes_the_batches_not_the_results(
  reader, tagger, max_tokens, batch_size, monkeypatch
):
  """Inputs packed several to a row against each in a row of its own: the same answers and
  entities; the packed batches have one length, at most two shapes, at most `max_tokens`
  (else `batch_size` rows) a batch, and fewer positions in all. The plan's cost counts
  positions only here: in these tiny models attention is most of the compute and packing
  would not be chosen (`test_packing_is_chosen_where_it_computes_less`)."""
  monkeypatch.setattr(base.Runner, "row_cost", lambda self, length: float(length))
  questions = [{"question": "Where is the tree?", "context": c} for c in QA_CONTEXTS]
  questions += [{"question": "Where?", "context": f"Tree {i} is in Berlin."} for i in range(6)]
  budget = dict(max_tokens=max_tokens, batch_size=batch_size)
  options = dict(max_seq_len=64, doc_stride=16, top_k=2, **budget)
  packed = pipeline("question-answering", model=reader[1], **options)
  shapes = _record_shapes(packed)
  got = packed(questions)
  alone = pipeline("question-answering", model=reader[1], pack=False, **options)
  unpacked_shapes = _record_shapes(alone)
  want = alone(questions)
  _same_results(got, want, ("start", "end", "answer"))
  assert len({n for _, n in shapes}) == 1 and len(set(shapes)) <= 2
  assert max(b * n for b, n in shapes) <= (max_tokens or batch_size * 64)
  assert sum(b * n for b, n in shapes) < sum(b * n for b, n in unpacked_shapes)
  texts = [*TAGGED_TEXTS, *(f"Ada {i} lives in Berlin." for i in range(12))]
  tag = pipeline("token-classification", model=tagger[1], **budget)
  shapes = _record_shapes(tag)
  got = tag(texts)
  want = pipeline("token-classification", model=tagger[1], pack=False)(texts)
  _same_results(got, want, ("entity", "index", "word", "start", "end"))
  assert len({n for _, n in shapes}) == 1 and sum(b for b, _ in shapes) < len(texts)


def test_packing_is_chosen_where_it_computes_less(monkeypatch):
  """Where timing both plans would not pay (the cost model's choice): at albert-base
  dimensions, question-answering windows of mixed lengths (many well below the 384 maximum)
  are packed: fewer multiply-adds than buckets. Rows all near the longest, or a tiny model
  (attention, growing with the packed length, dominates), stay bucketed."""
  monkeypatch.setattr(base, "CALIBRATE_BATCHES_PER_SHAPE", 10**9)  # never timed here
  rng = np.random.default_rng(0)
  windows = np.clip(rng.lognormal(5.0, 0.5, 200).astype(int), 20, 384)
  model = types.SimpleNamespace(config=PRESETS["albert-base-v2"], module=None, params=None)
  runner = base.Runner(model, lambda out: {}, max_tokens=1024, pack=True)
  plan = runner.plan(windows)
  assert all(isinstance(b, packing.PackedBatch) for b in plan)
  unpacked = base.Runner(model, lambda out: {}, max_tokens=1024, pack=False).plan(windows)
  assert runner.cost(plan) < 0.97 * runner.cost(unpacked)  # 3.9% less here
  assert sorted(np.concatenate([b.indices for b in plan]).tolist()) == list(range(200))
  assert all(b.rows * b.length <= 1024 for b in plan)
  near_full = np.full(50, 380)
  assert all(isinstance(b, batching.Batch) for b in runner.plan(near_full))
  tiny = types.SimpleNamespace(config=AlbertConfig(**TINY), module=None, params=None)
  tiny_runner = base.Runner(tiny, lambda out: {}, max_tokens=128, pack=True)
  assert all(isinstance(b, batching.Batch) for b in tiny_runner.plan(np.array([11] * 6 + [64])))
  # multiple choice ([C, L] rows) is never packed
  assert all(isinstance(b, batching.Batch) for b in runner.plan(windows[:20], choices=4))


def test_multiple_choice_matches_transformers_logits(tmp_path, tagger):
  import transformers

  ref, ours_dir, hf_dir = _convert_and_export(tmp_path, "multiple_choice", seed=5)
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
  items = [
    {"question": "The sky is", "choices": ["blue.", "a large green fish in the sea.", "red"]},
    {"context": "Paris is in France.", "question": "Paris is in", "choices": ["France", "Peru"]},
  ]
  choose = pipeline("multiple-choice", model=ours_dir)
  got = choose(items)
  for item, result in zip(items, got, strict=True):
    first = " ".join(t for t in (item.get("context"), item["question"]) if t)
    enc = tokenizer(
      [first] * len(item["choices"]),
      item["choices"],
      padding=True,
      return_tensors="pt",
      return_token_type_ids=True,
    )
    with torch.no_grad():
      logits = ref(**{k: v[None] for k, v in enc.items()}).logits[0].numpy()
    want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(result["scores"], want, atol=F32)
    assert result["label"] == int(want.argmax())
  with pytest.raises(UserError, match="needs a model with head 'multiple_choice'"):
    pipeline("multiple-choice", model=tagger[1])


def test_predict_token_classification_file(tagger, tmp_path):
  from albert_jax import predict

  texts = ["My name is Wolfgang and I live in Berlin.", "Charles Babbage lived in London."]
  (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
  args = [
    "p",
    "--model",
    str(tagger[1]),
    "--task",
    "token-classification",
    "--input",
    str(tmp_path / "in.jsonl"),
    "--output",
    str(tmp_path / "out.jsonl"),
    "--aggregation_strategy",
    "simple",
    "--noprogress",
  ]
  assert predict.main(args) == 0
  got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
  want = pipeline("token-classification", model=tagger[1], aggregation_strategy="simple")(texts)
  assert [[{k: v for k, v in e.items() if k != "score"} for e in r] for r in got] == [
    [{k: v for k, v in e.items() if k != "score"} for e in r] for r in want
  ]
  with pytest.raises(UserError, match="--top_k does not apply to task token-classification"):
    predict.main([*args, "--top_k", "3"])
  # --nopack: each text in a row of its own, the same entities
  assert predict.main([*args, "--nopack", "--output", str(tmp_path / "alone.jsonl")]) == 0
  alone = [json.loads(line) for line in (tmp_path / "alone.jsonl").read_text().splitlines()]
  _same_results(alone, got, ("entity_group", "word", "start", "end"))
  classify = [*args[:3], "--task", "text-classification", *args[5:9], "--nopack"]
  with pytest.raises(UserError, match="--pack does not apply to task text-classification"):
    predict.main(classify)


def test_regression_head_returns_the_raw_score_as_transformers(tmp_path):
  import transformers

  ref, ours_dir, hf_dir = _convert_and_export(
    tmp_path, "sequence_classification", seed=6, num_labels=1
  )
  texts = ["a gripping film", "dull and far too long"]
  got = pipeline("text-classification", model=ours_dir)(texts)
  want = transformers.pipeline("text-classification", model=str(hf_dir), device="cpu")(texts)
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
  with torch.no_grad():
    logits = ref(**tokenizer(texts, padding=True, return_tensors="pt")).logits[:, 0].numpy()
  assert [g["label"] for g in got] == [w["label"] for w in want] == ["LABEL_0"] * 2
  np.testing.assert_allclose([g["score"] for g in got], logits, atol=TOL)
  np.testing.assert_allclose([w["score"] for w in want], logits, atol=TOL)
  # sentence pairs: text_pair= (transformers' keyword) is the {"text", "text_pair"} form
  classify = pipeline("text-classification", model=ours_dir)
  pair = classify(texts[0], text_pair=texts[1])
  assert pair == classify({"text": texts[0], "text_pair": texts[1]})
  assert classify(texts, text_pair="x") == classify([{"text": t, "text_pair": "x"} for t in texts])
  assert classify([texts[0]], text_pair=texts[1]) == [pair]
  # (transformers 5's own pipeline gives ALBERT no token_type_ids: the model's, with them)
  ids = classify.model.tokenizer(texts[0], texts[1])
  assert 0 in ids["token_type_ids"] and 1 in ids["token_type_ids"]
  with torch.no_grad():
    want = ref(**{k: torch.tensor([ids[k]]) for k in ("input_ids", "token_type_ids")}).logits
  np.testing.assert_allclose(pair["score"], want[0, 0].numpy(), atol=TOL)
  with pytest.raises(UserError, match="text_pair=\\['x'\\]: give one text"):
    classify(texts, text_pair=["x"])
  with pytest.raises(UserError, match="Unknown text-classification options \\['topk'\\]"):
    classify(texts, topk=2)


def test_one_text_or_a_list_as_transformers(converted, tagger):
  """token-classification, fill-mask and feature-extraction take a text or a list of texts,
  positionally or as `inputs=`; a list of one gives a list of that text's result."""
  for task, model, text in (
    ("token-classification", tagger[1], "My name is Wolfgang and I live in Berlin."),
    ("fill-mask", converted[1], TEXTS[0]),
    ("feature-extraction", converted[1], "hello world"),
  ):
    run = pipeline(task, model=model)
    one = run(text)
    assert run(inputs=text) == one, task
    assert run([text]) == [one], task
