"""`pipeline("question-answering", model=DIR)`: answer spans cut out of the context, ranked as
transformers' own question-answering pipeline ranked them (4.57, its last version with one).

    answer = albert_jax.pipeline("question-answering", model="WORKDIR/export")
    answer(question="Who wrote it?", context="It was written by Ada in 1843.")
    # {"score": 0.93, "start": 18, "end": 21, "answer": "Ada"}

Call forms, as `transformers.pipeline`'s: `answer(question=Q, context=C)`; `question=` a list
with one `context=` text (each question on that context) or both lists of one length (pairs);
`answer(Q, C)`; a `{"question", "context"}` dict, a list of them, or several dicts. One input
gives one result, a list of inputs (or several dicts) a list of results, one each. Options
(below) are given to `pipeline(...)` or to each call.

Windows: `[CLS] question [SEP] context window [SEP]`, at most `max_seq_len` pieces; a context
too long for one window is cut into windows that overlap by `doc_stride` pieces (default
min(max_seq_len // 2, 128)), as transformers' fast tokenizer cuts it. `max_question_len` cuts the
question to that many pieces (None, the default, keeps it whole, as transformers' fast
tokenizers do; a question that leaves no room for the context is an error).

Ranking, per window: the start and end logits over `[CLS]` and the window's context pieces
become probabilities (float32 softmax); the no-answer score is p([CLS]) p([CLS]), then `[CLS]`
is left out; a span of at most `max_answer_len` pieces scores p(start) p(end). The best
`top_k * 2 + 10` spans of each window (`top_k` with `align_to_words=False`) are widened to whole
words (`align_to_words`: transformers' words, split at whitespace and around the vocabulary's
user-defined symbols `( ) " - . – £ €`, each word's span starting at the whitespace before it,
cut at the window's edge) and spans of all windows whose text is equal, ignoring case, are merged
into one answer whose score is the sum of theirs. Answers are ranked by score and cut to
`top_k`; `handle_impossible_answer` first adds `{"answer": "", "start": 0, "end": 0}` scored by
the lowest no-answer score over the windows. One answer comes as a dict, several as a list.

Differences from transformers 4.57, on inputs our tokenizer splits as its fast tokenizer does:
answers are trimmed of whitespace around them (transformers keeps the whitespace before the
first word: " built by Ada", where our `start` is one later; spans are merged by the untrimmed
text, as there); a list of one input gives a list of one result; and spans scored 0 (which
transformers takes to fill `top_k * 2 + 10` where a window has fewer spans) are not answers.
Where the two tokenizers split a text differently (a symbol right before a word: "(see",
"well-known", "e.g."; whitespace at the end of the context), so do the model's inputs.

`max_seq_len` and `max_question_len` are transformers' spellings; `max_seq_length` and
`max_query_length` (this project's names for them elsewhere) are accepted as aliases.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from albert_jax.data import squad
from albert_jax.errors import UserError
from albert_jax.offsets import SPIECE_UNDERLINE
from albert_jax.pipelines import base

OPTIONS = (
  "top_k",
  "doc_stride",
  "max_answer_len",
  "max_seq_len",
  "max_question_len",
  "handle_impossible_answer",
  "align_to_words",
)
ALIASES = {"max_seq_length": "max_seq_len", "max_query_length": "max_question_len"}
MAX_SEQ_LEN = 384  # transformers' default window, cut to the model's positions
MASKED = np.float32(-10000.0)  # the logit of a piece that cannot be in an answer (as HF)


class QuestionAnsweringPipeline:
  task = "question-answering"
  head = "question_answering"

  def __init__(
    self,
    model,
    *,
    top_k: int = 1,
    doc_stride: int | None = None,
    max_answer_len: int = 15,
    max_seq_len: int | None = None,
    max_question_len: int | None = None,
    handle_impossible_answer: bool = False,
    align_to_words: bool = True,
    max_seq_length: int | None = None,
    max_query_length: int | None = None,
    batch_size: int = 32,
    max_tokens: int | str | None = "auto",
    pack: bool = True,
    dtype: str | None = None,
    progress: bool = False,
  ):
    self.model, self.runner = base.model_and_runner(
      self,
      model,
      dtype,
      lambda out: {"start": out.start_logits, "end": out.end_logits},
      batch_size=batch_size,
      max_tokens=max_tokens,
      pack=pack,
      progress=progress,
    )
    given = dict(
      top_k=top_k,
      doc_stride=doc_stride,
      max_answer_len=max_answer_len,
      max_seq_len=max_seq_len,
      max_question_len=max_question_len,
      handle_impossible_answer=handle_impossible_answer,
      align_to_words=align_to_words,
      max_seq_length=max_seq_length,
      max_query_length=max_query_length,
    )
    self.options = base.with_aliases(given, ALIASES, self.task)
    self.resolved()  # checks them
    self.symbols = _symbols(self.model.tokenizer)

  def __call__(self, *args: Any, question: Any = None, context: Any = None, **options: Any) -> Any:
    o = self.resolved(**options)
    items, single = _inputs(args, question, context)
    examples = [self.encode(i, item, o) for i, item in enumerate(items)]
    outputs = iter(self.runner([row for ex in examples for row in ex.rows]))
    results = [_rank(ex, [next(outputs) for _ in ex.rows], o) for ex in examples]
    return results[0] if single else results

  def resolved(self, **options: Any) -> dict[str, Any]:
    """The options a call given `options` runs with, checked, aliases folded in, and
    max_seq_len and doc_stride resolved (their defaults, the model's positions)."""
    unknown = sorted(set(options) - set(OPTIONS) - set(ALIASES))
    if unknown:
      raise UserError(
        f"Unknown question-answering options {unknown}; the options are {', '.join(OPTIONS)}."
      )
    o = {**self.options, **base.with_aliases(options, ALIASES, self.task)}
    for key in ("top_k", "max_answer_len"):
      if not isinstance(o[key], int) or o[key] < 1:
        raise UserError(f"{key}={o[key]!r}: give a number >= 1.")
    limit = self.model.config.max_position_embeddings
    max_seq_len = min(MAX_SEQ_LEN if o["max_seq_len"] is None else o["max_seq_len"], limit)
    if max_seq_len < 4:
      raise UserError(f"max_seq_len={o['max_seq_len']}: give at least 4 (3 special tokens).")
    stride = min(max_seq_len // 2, 128) if o["doc_stride"] is None else o["doc_stride"]
    if not 0 <= stride <= max_seq_len:
      raise UserError(f"doc_stride={stride}: give a number in 0..max_seq_len ({max_seq_len}).")
    if o["max_question_len"] is not None and o["max_question_len"] < 1:
      raise UserError(f"max_question_len={o['max_question_len']}: give a number >= 1 or None.")
    return {**o, "max_seq_len": max_seq_len, "doc_stride": stride}

  def encode(self, i: int, item: dict[str, str], o: dict[str, Any]) -> _Example:
    """Input `i` (`{"question", "context"}`) as model rows, one per window, and what ranking
    its answers needs; `o`: the options (`resolved`)."""
    question, context = (_text(i, item, key) for key in ("question", "context"))
    tokenizer = self.model.tokenizer
    query = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(question))
    query = query[: o["max_question_len"]]
    pieces, offsets = tokenizer.tokenize_with_offsets(context)
    room = o["max_seq_len"] - len(query) - 3
    if room < 1:
      raise UserError(
        f"Question {i} ({question[:60]!r}) is {len(query)} pieces long; with max_seq_len="
        f"{o['max_seq_len']} that leaves no room for the context. Shorten it (max_question_len) "
        "or raise max_seq_len."
      )
    if len(pieces) > room and o["doc_stride"] >= room:
      raise UserError(
        f"Input {i}: doc_stride={o['doc_stride']} must be less than the {room} context pieces "
        f"a window holds beside this question (max_seq_len={o['max_seq_len']}); lower it."
      )
    windows = squad.doc_windows(len(pieces), room, room - o["doc_stride"])
    ids = tokenizer.convert_tokens_to_ids(pieces)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    head = [cls, *query, sep]
    rows = [
      {
        "input_ids": [*head, *ids[a : a + n], sep],
        "token_type_ids": [0] * len(head) + [1] * (n + 1),
      }
      for a, n in windows
    ]
    spans = _spans(context, pieces, offsets)
    word = _word_ids(context, pieces, offsets, self.symbols)
    first = np.searchsorted(word, word, side="left")  # each piece's word's first piece
    last = np.searchsorted(word, word, side="right") - 1
    return _Example(context, rows, len(head), windows, spans, first, last)


@dataclasses.dataclass
class _Example:
  context: str
  rows: list[dict[str, list[int]]]  # one per window
  first: int  # sequence position of each window's first context piece
  windows: list[tuple[int, int]]  # (first piece, pieces) of each window
  spans: np.ndarray  # [T, 2] each piece's characters as transformers' tokenizer gives them
  word_first: np.ndarray  # [T] the first piece of each piece's word
  word_last: np.ndarray  # [T] its last piece


def _inputs(args: tuple, question: Any, context: Any) -> tuple[list[dict], bool]:
  """(the inputs as `{"question", "context"}` dicts, whether one input was given) from any of
  transformers' call forms (module docstring)."""
  if args and (question is not None or context is not None):
    raise UserError("Give the inputs positionally or as question=/context=, not both.")
  if len(args) == 1:
    return base.as_list(args[0], lambda x: isinstance(x, dict))
  if len(args) == 2 and all(isinstance(a, str) for a in args):
    return [{"question": args[0], "context": args[1]}], True
  if args:
    return list(args), False
  if question is None or context is None:
    raise UserError(
      "Give question= and context= (a text, or a list of questions), or {'question', "
      "'context'} dicts."
    )
  if isinstance(question, str) and isinstance(context, str):
    return [{"question": question, "context": context}], True
  if isinstance(question, (list, tuple)) and isinstance(context, str):
    return [{"question": q, "context": context} for q in question], False
  if isinstance(question, (list, tuple)) and isinstance(context, (list, tuple)):
    if len(question) != len(context):
      raise UserError(
        f"{len(question)} questions and {len(context)} contexts: give one context for all the "
        "questions, or one per question."
      )
    return [{"question": q, "context": c} for q, c in zip(question, context, strict=True)], False
  raise UserError(
    f"question={str(question)[:60]!r} with context={str(context)[:60]!r}: give two texts, a "
    "list of questions with one context, or two lists of one length."
  )


def _text(i: int, item: Any, key: str) -> str:
  if not isinstance(item, dict):
    raise UserError(f"Input {i} {str(item)[:80]!r}: give a {{'question', 'context'}} dict.")
  if not isinstance(item.get(key), str) or not item[key].strip():
    raise UserError(f"Input {i} has no {key!r} text: {str(item)[:80]!r}.")
  return item[key]


def _symbols(tokenizer: Any) -> frozenset[str]:
  """The pieces transformers' fast ALBERT tokenizer splits out of the text before anything else,
  so that each is a word of its own: the special tokens and the SentencePiece model's
  user-defined symbols (score 0, of no other type; `( ) " - . – £ €` in the bundled one)."""
  return tokenizer.user_defined_symbols | set(tokenizer.all_special_tokens)


def _spans(context: str, pieces: list[str], offsets: np.ndarray) -> np.ndarray:
  """[T, 2] each piece's characters as transformers' fast tokenizer gives them: a piece that
  starts a word (`▁...`) also holds the whitespace character just before it (the last one of a
  run), and a `▁` alone is that whitespace character (or the next piece's first character when
  there is none)."""
  spans = np.array(offsets, np.int64).reshape(-1, 2)
  following = len(context)
  for k in range(len(pieces) - 1, -1, -1):
    if spans[k, 0] < 0:
      at = following - 1 if following > 0 and context[following - 1].isspace() else following
      spans[k] = at, at + 1
      continue
    following = int(spans[k, 0])
    if pieces[k].startswith(SPIECE_UNDERLINE) and following and context[following - 1].isspace():
      spans[k, 0] = following - 1
  return spans


def _word_ids(
  context: str, pieces: list[str], offsets: np.ndarray, symbols: frozenset[str]
) -> np.ndarray:
  """[T] each piece's word, as transformers' fast tokenizer numbers words: a word starts at a
  `▁...` piece, and a symbol written as such in the text (`symbols`) is a word of its own."""
  literal = [
    piece in symbols and start >= 0 and context[start:end] == piece
    for piece, (start, end) in zip(pieces, np.asarray(offsets).tolist(), strict=True)
  ]
  starts = [
    k == 0 or piece.startswith(SPIECE_UNDERLINE) or literal[k] or literal[k - 1]
    for k, piece in enumerate(pieces)
  ]
  return np.cumsum(starts) - 1


def _probabilities(logits: np.ndarray, first: int, n: int) -> np.ndarray:
  """Softmax over [CLS] and the context pieces [first, first + n) of one window's logits, in
  float32 as transformers computes it; every other position gets 0."""
  x = np.full(len(logits), MASKED, np.float32)
  x[0] = logits[0]
  x[first : first + n] = logits[first : first + n]
  e = np.exp(x - x.max())
  return e / e.sum()


def _rank(ex: _Example, outputs: list[dict[str, np.ndarray]], o: dict[str, Any]) -> Any:
  """The ranked answers of one input from its windows' logits (module docstring)."""
  picked = o["top_k"] * 2 + 10 if o["align_to_words"] else o["top_k"]
  answers: dict[str, dict[str, Any]] = {}  # by lowercased text, in the order first found
  null = 1e6
  for (a, n), out in zip(ex.windows, outputs, strict=True):
    length = ex.first + n + 1
    p_start, p_end = (_probabilities(out[k][:length], ex.first, n) for k in ("start", "end"))
    null = min(null, float(p_start[0] * p_end[0]))
    score_SE = p_start[ex.first : length - 1, None] * p_end[None, ex.first : length - 1]
    start_SE, end_SE = np.indices(score_SE.shape)
    length_SE = end_SE - start_SE + 1
    flat = np.flatnonzero((length_SE >= 1) & (length_SE <= o["max_answer_len"]) & (score_SE > 0))
    # the best `picked`; ties in transformers' order (its top 1 is the first maximum)
    best = flat[np.argsort(-score_SE.ravel()[flat], kind="stable")[:picked]]
    for i, j in zip(*np.unravel_index(best, score_SE.shape), strict=True):
      score, s, e = float(score_SE[i, j]), a + i, a + j
      if o["align_to_words"]:  # whole words, cut at the window's edges
        s, e = max(a, ex.word_first[s]), min(a + n - 1, ex.word_last[e])
      start, end = int(ex.spans[s, 0]), int(ex.spans[e, 1])
      key = ex.context[start:end].lower()
      if key in answers:
        answers[key]["score"] += score
      else:
        answers[key] = {"score": score, "start": start, "end": end}
  ranked = [_trimmed(ex.context, **answer) for answer in answers.values()]
  if o["handle_impossible_answer"]:
    ranked.append({"score": null, "start": 0, "end": 0, "answer": ""})
  ranked = sorted(ranked, key=lambda answer: answer["score"], reverse=True)[: o["top_k"]]
  return ranked[0] if len(ranked) == 1 else ranked


def _trimmed(context: str, score: float, start: int, end: int) -> dict[str, Any]:
  """An answer without whitespace around it (kept if that is all it is)."""
  text = context[start:end]
  if text.strip():
    start, end = start + len(text) - len(text.lstrip()), end - len(text) + len(text.rstrip())
  return {"score": score, "start": start, "end": end, "answer": context[start:end]}
