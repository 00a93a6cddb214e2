"""`pipeline("question-answering", model=DIR)`: answer spans cut out of the context, with HF
transformers' arguments and output fields.

    answer = albert_jax.pipeline("question-answering", model="WORKDIR/export")
    answer({"question": "Who wrote it?", "context": "It was written by Ada in 1843."})
    # {"score": 0.93, "start": 18, "end": 21, "answer": "Ada"}

A context too long for one window is cut into windows as SQuAD features are
(`albert_jax.data.squad.featurize`: `[CLS] question [SEP] window [SEP]`, pieces mapped to the
original characters); consecutive windows overlap by `doc_stride` pieces. Per window, as HF
does, the start and end logits over the context pieces and `[CLS]` are turned into
probabilities (softmax); a span's score is p(start) * p(end), over spans of at most
`max_answer_len` pieces whose start piece has its most context in that window. The answers of
all windows are merged and ranked; `start`/`end` are character offsets into the context as
given, widened to whole whitespace-separated words (HF's `align_to_words`).
`handle_impossible_answer` adds the no-answer `{"answer": "", "start": 0, "end": 0}` with the
lowest p([CLS])^2 over the windows. `top_k` 1 gives one dict, more a list.
`max_question_len` cuts questions to that many pieces (None: as HF, no cut; a question that
leaves no room for the context in `max_seq_len` is an error).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from albert_jax.data import squad
from albert_jax.errors import UserError
from albert_jax.pipelines import base


class QuestionAnsweringPipeline:
  task = "question-answering"
  head = "question_answering"

  def __init__(
    self,
    model,
    *,
    top_k: int = 1,
    doc_stride: int = 128,
    max_answer_len: int = 15,
    max_seq_len: int = 384,
    max_question_len: int | None = None,
    handle_impossible_answer: bool = False,
    batch_size: int = 32,
    max_tokens: int | str | None = "auto",
    pack: bool = True,
    dtype: str | None = None,
    progress: bool = False,
  ):
    self.model = base.load(model, self.head, self.task, dtype)
    self.options = dict(
      top_k=top_k,
      doc_stride=doc_stride,
      max_answer_len=max_answer_len,
      max_seq_len=min(max_seq_len, self.model.config.max_position_embeddings),
      max_question_len=max_question_len,
      handle_impossible_answer=handle_impossible_answer,
    )
    self.runner = base.Runner(
      self.model,
      lambda out: {"start": out.start_logits, "end": out.end_logits},
      batch_size=batch_size,
      max_tokens=max_tokens,
      pack=pack,
      progress=progress,
    )

  def __call__(self, inputs: Any, **options: Any) -> Any:
    unknown = set(options) - set(self.options)
    if unknown:
      raise UserError(f"Unknown question-answering options {sorted(unknown)}.")
    o = {**self.options, **options}
    items, single = base.as_list(inputs, lambda x: isinstance(x, dict))
    if not items:
      return []
    examples = [_example(i, item) for i, item in enumerate(items)]
    arrays, meta = self.featurize(examples, o)
    lengths = arrays["attention_mask"].sum(-1)
    rows = [
      {"input_ids": arrays["input_ids"][r, :n], "token_type_ids": arrays["token_type_ids"][r, :n]}
      for r, n in enumerate(lengths)
    ]
    outputs = self.runner(rows)
    windows: list[list[int]] = [[] for _ in examples]
    for r, index in enumerate(arrays["example_index"]):
      windows[int(index)].append(r)
    results = [
      _answers(ex["context"], [(outputs[r], _window(meta, r, int(lengths[r]))) for r in rs], o)
      for ex, rs in zip(examples, windows, strict=True)
    ]
    return results[0] if single else results

  def featurize(self, examples: list[dict], o: dict[str, Any]):
    tokenizer, max_seq_len = self.model.tokenizer, o["max_seq_len"]
    longest = 0
    for ex in examples:
      n = len(tokenizer.tokenize(ex["question"]))
      if o["max_question_len"] is not None:
        n = min(n, o["max_question_len"])
      if n + 4 > max_seq_len:
        raise UserError(
          f"Question {ex['id']} ({ex['question'][:60]!r}) is {n} pieces long; with max_seq_len="
          f"{max_seq_len} that leaves no room for the context. Shorten it or raise max_seq_len."
        )
      longest = max(longest, n)
    max_query = o["max_question_len"] or max(longest, 1)
    # HF's doc_stride is the overlap of consecutive windows; SQuAD features step by a stride.
    room = max_seq_len - longest - 3
    stride = max(1, room - min(o["doc_stride"], max_seq_len // 2))
    return squad.featurize(
      None,
      examples,
      tokenizer,
      max_seq_len,
      doc_stride=stride,
      max_query_length=min(max_query, max_seq_len - 4),
    )


def _example(i: int, item: dict) -> dict[str, Any]:
  for key in ("question", "context"):
    if not isinstance(item.get(key), str) or not item[key].strip():
      raise UserError(f"Input {i} has no {key!r} text: {str(item)[:80]!r}.")
  return {**item, "id": str(i), "answers": [], "is_impossible": False}


def _window(meta: dict[str, Any], r: int, length: int) -> dict[str, Any]:
  return {
    "offsets": meta["offsets"][r],
    "max_context": meta["token_is_max_context"][r],
    "context_start": int(meta["context_start"][r]),
    "length": length,
  }


def _softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - x.max())
  return e / e.sum()


def _answers(context: str, windows: list, o: dict[str, Any]) -> Any:
  """The ranked answers of one question from its windows' logits."""
  found, null = [], 1.0
  for out, w in windows:
    n, first, offsets = w["length"], w["context_start"], w["offsets"]
    allowed = np.zeros(n, bool)
    allowed[0] = True
    allowed[first : first + len(offsets)] = True
    start_p = _softmax(np.where(allowed, out["start"][:n].astype(np.float64), -10000.0))
    end_p = _softmax(np.where(allowed, out["end"][:n].astype(np.float64), -10000.0))
    null = min(null, float(start_p[0] * end_p[0]))
    k = np.arange(len(offsets))
    ok = offsets[:, 0] >= 0
    starts = k[ok & w["max_context"]]
    ends = k[ok]
    score = start_p[first + starts][:, None] * end_p[first + ends][None, :]
    span = ends[None, :] - starts[:, None]
    score = np.where((span >= 0) & (span < o["max_answer_len"]), score, -1.0)
    for i in np.argsort(-score, axis=None, kind="stable")[: o["top_k"]]:
      a, b = np.unravel_index(i, score.shape)
      if score[a, b] < 0:
        break
      start, end = _word_span(context, offsets[starts[a], 0], offsets[ends[b], 1])
      found.append(
        {"score": float(score[a, b]), "start": start, "end": end, "answer": context[start:end]}
      )
  if o["handle_impossible_answer"]:
    found.append({"score": null, "start": 0, "end": 0, "answer": ""})
  found.sort(key=lambda a: -a["score"])
  found = found[: o["top_k"]]
  return found[0] if o["top_k"] == 1 and found else found


def _word_span(context: str, start: int, end: int) -> tuple[int, int]:
  """[start, end) widened to the whitespace-separated words it touches."""
  while start > 0 and not context[start - 1].isspace():
    start -= 1
  while end < len(context) and not context[end].isspace():
    end += 1
  return int(start), int(end)
