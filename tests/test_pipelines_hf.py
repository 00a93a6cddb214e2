"""The question-answering pipeline beside transformers 4.57.1's own (`tests/hf457.py`: a side
install, run in one child process for all cases) on one random-weight AlbertForQuestionAnswering:
the same answers (ours trimmed of whitespace) in the same order, scores within 1e-5.

The side install needs PyPI once: it goes to $ALBERT_JAX_HF457_DIR if set, else to pytest's
cache (.pytest_cache/d/hf457), and is reused from there; without it these tests fail."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from albert_jax import AlbertTokenizer, pipeline
from albert_jax.tokenizer import bundled_model_path
from tests import hf457
from tests.reference import hf_model
from tests.test_pipelines import TINY

# Answer scores: |ours - transformers'| at most TOL. An answer's score is a sum of span scores
# p_start * p_end, each p a float32 softmax of logits that the two models compute with errors
# of at most `delta` (measured on each case). d log p_i = dx_i - sum_j p_j dx_j, so
# |d log p| <= 2 delta and a span's score moves by a factor of at most exp(4 delta) ~ 1 + 4 delta;
# so does a sum of them. Float32 rounding adds RHO relative: per softmax value one rounding
# for exp, ~log2(L) for the pairwise sum and one for the division, two softmaxes and a
# product per span, in each of the two pipelines. So |d score| <= (4 delta + RHO) score;
# `test_the_bound_holds` checks that this is within TOL for every answer of every case.
RHO = 2 * (2 * (np.log2(384) + 2) + 1) * 2.0**-24
TOL = 1e-5
SEED = 0
LOGIT_SCALE = 60.0  # qa_outputs' weights times this: logits of standard deviation ~1.6
NULL_BOOST = 3.0  # [CLS] logits raised by about this, so that no answer competes with spans

QUESTIONS = ("Who did what?", "Where does it happen, and when?", "What is the answer?")
# Texts that our tokenizer splits as transformers' fast tokenizer does (checked): punctuation
# after a word or before a space, not a symbol right before a word ("(see", "e.g.").
CONTEXTS = (
  "The door closes slowly. When it closes, the room is dark; nobody closes it twice.",
  "It was built by Ada Lovelace in 1843, near London, and the engine was built again later.",
  "Charles Babbage lived in London with his friend, near 1,000 old trees!",
  "My name is Wolfgang and I live in Berlin. Berlin is big, and I like it.",
  "Paris is the capital of France. PARIS has many museums, and paris is old.",
  "Water boils at 100 degrees. It freezes at zero degrees; ice melts when warm.",
  "Who knows? Maybe the train leaves at 9:45, or maybe it doesn't leave at all.",
  "She said: bring bread, milk, eggs and butter - and don't forget the cheese!",
  "The river's source is high in the mountains; its mouth opens into the sea.",
  "In 1969, Apollo 11 landed on the Moon. Neil Armstrong walked there first.",
  "Prices rose by 3% in May, 5% in June, and nearly 7% in July.",
  "Dogs bark, cats meow, and birds sing; every animal has its own voice.",
  "The committee met on Monday. On Tuesday, the committee voted; on Friday, it resigned.",
  "Mount Everest is 8,849 metres tall. K2 is the second highest mountain on Earth.",
  "Light travels fast: about 300,000 kilometres each second, in a vacuum.",
  "Shakespeare wrote Hamlet, Macbeth and Othello. Hamlet is his longest play.",
  "Tea or coffee? Most people here drink tea, but the office drinks coffee.",
  "The café's owner, Zoë, serves crêpes every morning at eight o'clock.",
  "Rain, rain, go away; come again another day, little Johnny wants to play.",
  "The Nile flows north. The Amazon flows east, and it carries more water.",
  "Ice is cold. ICE is hard. ice is slippery. Ice, ice, ice!",
  "Alice met Bob; Bob met Carol; Carol met Alice again, at noon.",
  "Numbers like 12, 345 and 6,789 are easy; words are harder.",
  "  Spaces  before,   between and\tafter words\nare   whitespace, all of them.",
)
LONG_CONTEXTS = (
  " ".join(
    f"Sentence {i} says that Berlin is near tree {i}, and the door closes." for i in range(12)
  ),
  "Once upon a time, in a small village by the sea, there lived an old fisherman. Every "
  "morning he rowed out before dawn; every evening he came back with fish, or with stories. "
  "The children loved him: he told them about storms, whales and distant islands. One day, "
  "a stranger arrived. He asked about the islands - were they real? The fisherman smiled. "
  "Tomorrow, he said, we will row there together, and you will see them yourself!",
  "Item 1 costs 12 euros. Item 2 costs 7 euros; item 3 costs 19 euros. Item 4 is free, but "
  "item 5 costs 1,250 euros. Which item is cheapest? Item 4, of course. Which is dearest? "
  "Item 5, by far. Items 1, 2 and 3 cost 38 euros together.",
  *(" ".join(CONTEXTS[i : i + 8]) for i in (0, 8, 16)),
)
SHORT_OPTIONS = (
  {},
  {"top_k": 5},
  {"handle_impossible_answer": True},
  {"top_k": 5, "handle_impossible_answer": True},
  {"top_k": 3, "align_to_words": False},
)
LONG_OPTIONS = (
  {"max_seq_len": 48, "doc_stride": 16},
  {"max_seq_len": 48, "doc_stride": 16, "top_k": 5, "handle_impossible_answer": True},
  {"max_seq_len": 40, "top_k": 5, "max_answer_len": 6},  # doc_stride: its default, 20
  {"max_seq_len": 64, "doc_stride": 8, "top_k": 1, "handle_impossible_answer": True},
)


def _cases() -> list[dict]:
  cases = []
  for i, context in enumerate(CONTEXTS):
    for options in SHORT_OPTIONS:
      cases.append({"question": QUESTIONS[i % 3], "context": context, "options": options})
  for i, context in enumerate(LONG_CONTEXTS):
    for options in LONG_OPTIONS:
      cases.append({"question": QUESTIONS[i % 3], "context": context, "options": options})
  return cases


CASES = _cases()


@pytest.fixture(scope="session")
def hf457_dir(request, tmp_path_factory) -> Path:
  """transformers 4.57.1 installed beside our stack: in $ALBERT_JAX_HF457_DIR if set, else in
  pytest's cache directory (made once, reused by later sessions)."""
  if os.environ.get("ALBERT_JAX_HF457_DIR"):
    directory = Path(os.environ["ALBERT_JAX_HF457_DIR"])
  elif getattr(request.config, "cache", None) is not None:
    directory = Path(request.config.cache.mkdir("hf457")) / "site-packages"
  else:  # -p no:cacheprovider
    directory = tmp_path_factory.mktemp("hf457") / "site-packages"
  try:
    return hf457.install(directory)
  except RuntimeError as e:
    pytest.fail(
      f"Could not install the transformers 4.57.1 reference into {directory}; it needs PyPI "
      f"(or ALBERT_JAX_HF457_DIR naming a directory that holds that install).\n{e}",
      pytrace=False,
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
  """A random AlbertForQuestionAnswering saved by save_pretrained, with the bundled
  SentencePiece model as spiece.model (and no other tokenizer file)."""
  root = tmp_path_factory.mktemp("qa457") / "model"
  ref = hf_model("question_answering", seed=SEED, **dict(TINY, max_position_embeddings=384))
  tokenizer = AlbertTokenizer()
  batch = [
    tokenizer(q, c, return_tensors="np") for q, c in zip(QUESTIONS, CONTEXTS[:3], strict=True)
  ]
  with torch.no_grad():
    ref.qa_outputs.weight.mul_(LOGIT_SCALE)
    # along the mean [CLS] hidden state minus the mean context one: [CLS] logits up by
    # NULL_BOOST, the context's mean logit unchanged
    hidden = [ref.albert(**{k: torch.as_tensor(v) for k, v in b.items()}) for b in batch]
    cls_H = torch.stack([h.last_hidden_state[0, 0] for h in hidden]).mean(0)
    context_H = torch.cat(
      [
        h.last_hidden_state[0][torch.as_tensor(b["token_type_ids"][0]) == 1]
        for h, b in zip(hidden, batch, strict=True)
      ]
    ).mean(0)
    direction_H = (cls_H - context_H) / (cls_H - context_H).square().sum()
    ref.qa_outputs.weight.add_(NULL_BOOST * direction_H)
    ref.qa_outputs.bias.sub_(NULL_BOOST * direction_H @ context_H)
  ref.save_pretrained(root)
  shutil.copy(bundled_model_path(), root / "spiece.model")
  return root


@pytest.fixture(scope="module")
def reference(hf457_dir, model_dir, tmp_path_factory) -> list[dict]:
  """transformers 4.57's answers (and what led to them) for every case, in one child process."""
  return hf457.question_answering(hf457_dir, model_dir, CASES, tmp_path_factory.mktemp("hf457run"))


@pytest.fixture(scope="module")
def ours(model_dir):
  return pipeline("question-answering", model=model_dir)


def _as_list(result) -> list[dict]:
  return [result] if isinstance(result, dict) else list(result)


def _trimmed(context: str, answer: dict) -> dict:
  """transformers' answer as ours gives it: without the whitespace around it."""
  text = context[answer["start"] : answer["end"]]
  assert text == answer["answer"]
  if not text.strip():
    return answer
  start = answer["start"] + len(text) - len(text.lstrip())
  end = answer["end"] - len(text) + len(text.rstrip())
  return {"score": answer["score"], "start": start, "end": end, "answer": context[start:end]}


def test_same_tokens_and_windows(ours, reference):
  """The premise: on every case both tokenizers give the same pieces, and the two pipelines
  run the model on the same windows."""
  tok = ours.model.tokenizer
  for case, ref in zip(CASES, reference, strict=True):
    assert tok.tokenize(case["context"]) == ref["context_tokens"], case["context"]
    assert tok.tokenize(case["question"]) == ref["question_tokens"], case["question"]
    example = ours.encode(0, case, ours.resolved(**case["options"]))
    assert [r["input_ids"] for r in example.rows] == [w["input_ids"] for w in ref["windows"]]
  assert max(len(ref["windows"]) for ref in reference) >= 5  # contexts in several windows


def _deltas(ours, reference) -> list[float]:
  """Per case, the largest difference between our logits and transformers' on its windows."""
  examples = [ours.encode(0, c, ours.resolved(**c["options"])) for c in CASES]
  outputs = iter(ours.runner([row for ex in examples for row in ex.rows]))
  deltas = []
  for ex, ref in zip(examples, reference, strict=True):
    worst = 0.0
    for window, out in zip(ref["windows"], [next(outputs) for _ in ex.rows], strict=True):
      n = len(window["input_ids"])
      for key in ("start", "end"):
        worst = max(worst, float(np.abs(out[key][:n] - np.array(window[key])).max()))
    deltas.append(worst)
  return deltas


def test_the_bound_holds(ours, reference):
  """TOL's derivation (top of the module) holds on every case: (4 delta + RHO) score <= TOL
  for every answer, and in each window the last span kept by the cut to `top_k * 2 + 10` and
  the next one are further apart than their scores can move, so that both pipelines keep the
  same spans."""
  worst = 0.0
  for case, ref, delta in zip(CASES, reference, _deltas(ours, reference), strict=True):
    relative = 4 * delta + RHO
    worst = max(worst, relative * max(a["score"] for a in ref["ranked"]))
    for cut in ref["cuts"]:
      assert cut is None or cut[0] - cut[1] > relative * (cut[0] + cut[1]), (case, cut)
  print(f"qa vs transformers 4.57: score error bound {worst:.2e}")
  assert worst <= TOL


def _check(context: str, got: list[dict], want: list[dict], ranked: list[dict]) -> int:
  """`got` (ours) against `want` (transformers', trimmed) position by position; where
  transformers' score at a position is within 2 TOL of another candidate's (`ranked`: all
  its candidates, trimmed), either may stand there. Returns how many positions had such a
  near-tie."""
  assert len(got) == len(want), (context, got, want)
  ties = 0
  for g, w in zip(got, want, strict=True):
    assert context[g["start"] : g["end"]] == g["answer"]
    near = [r for r in ranked if abs(r["score"] - w["score"]) <= 2 * TOL]
    ties += len(near) > 1
    match = [
      r
      for r in near
      if {k: r[k] for k in ("start", "end", "answer")}
      == {k: g[k] for k in ("start", "end", "answer")}
    ]
    assert match, (context, g, w)
    assert g["score"] == pytest.approx(match[0]["score"], abs=TOL), (context, g, match[0])
  return ties


@pytest.mark.parametrize("options", [*SHORT_OPTIONS, *LONG_OPTIONS], ids=str)
def test_answers_match_transformers_457(ours, reference, options):
  cases = [(c, r) for c, r in zip(CASES, reference, strict=True) if c["options"] == options]
  results = ours(
    [{"question": c["question"], "context": c["context"]} for c, _ in cases], **options
  )
  ties = positions = 0
  for (case, ref), result in zip(cases, results, strict=True):
    context = case["context"]
    want = [_trimmed(context, a) for a in _as_list(ref["result"])]
    ranked = [_trimmed(context, a) for a in ref["ranked"]]
    assert all(a["score"] > 0 for a in want)  # no zero-score filler (module docstring)
    assert type(result) is type(ref["result"])  # one answer: a dict; several: a list
    ties += _check(context, _as_list(result), want, ranked)
    positions += len(want)
  print(f"{options}: {positions} answers, {ties} of them near-tied")
  assert ties <= positions // 10


def test_the_cases_exercise_merging_and_no_answer(reference):
  """What the comparison above covers: transformers merged several spans (of one text, in any
  case) into the best answer of some cases, and the no-answer candidate is the best answer of
  some cases that ask for it."""
  best = [_as_list(ref["result"])[0]["answer"] for ref in reference]
  assert sum(b.lower() in ref["merged"] for b, ref in zip(best, reference, strict=True)) >= 10
  assert best.count("") >= 3


def test_a_failed_install_is_an_error(tmp_path, monkeypatch):
  """pip failing (no PyPI, a wrong pin) is an error with pip's output, and leaves nothing that
  a later session would take for an install."""
  monkeypatch.setattr(hf457, "REQUIREMENTS", (str(tmp_path / "missing-1.0-py3-none-any.whl"),))
  with pytest.raises(RuntimeError, match="failed:\n.*missing-1.0-py3-none-any.whl"):
    hf457.install(tmp_path / "site")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["site.lock"]
