"""Batches of examples -> rows of ids: HF tokenizers' input forms, truncation and padding.

`AlbertTokenizer.__call__` encodes each example's texts; this module reads the call's input
(a text, a pair, a batch of either), truncates the ids to a budget and pads the rows, with
HF's rules and error messages.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# What each accepted `padding` / `truncation` value means (None: do not pad / truncate).
PADDING = {
  False: None,
  None: None,
  "do_not_pad": None,
  True: "longest",
  "longest": "longest",
  "max_length": "max_length",
}
TRUNCATION = {
  False: None,
  None: None,
  "do_not_truncate": None,
  True: "longest_first",
  "longest_first": "longest_first",
  "only_first": "only_first",
  "only_second": "only_second",
}

Example = tuple[str, str | None]


def check_text(text: object) -> None:
  if not isinstance(text, str):
    raise TypeError(f"expected a str, got {type(text).__name__}: {text!r:.80}")


def strategy(kind: str, value: object, table: dict[object, str | None]) -> str | None:
  if isinstance(value, (bool, str, type(None))) and value in table:
    return table[value]
  choices = ", ".join(repr(key) for key in table)
  raise ValueError(f"unknown {kind} strategy {value!r}; use one of {choices}")


def examples(text: Any, text_pair: Any) -> tuple[list[Example], bool]:
  """The (text, pair) examples of a call's input, and whether it was a batch."""
  if isinstance(text, str):
    if text_pair is not None:
      check_text(text_pair)
    return [(text, text_pair)], False
  if not isinstance(text, (list, tuple)):
    raise TypeError(f"text must be a str or a list of them, got {type(text).__name__}")
  if text_pair is None:
    return [_example(item) for item in text], True
  if isinstance(text_pair, str) or len(text_pair) != len(text):
    raise ValueError(
      f"a batch of {len(text)} texts needs text_pair as a list of {len(text)} strings, got "
      f"{text_pair!r:.80}"
    )
  return [_example((a, b)) for a, b in zip(text, text_pair, strict=True)], True


def _example(item: Any) -> Example:
  if isinstance(item, str):
    return item, None
  if isinstance(item, (list, tuple)) and len(item) == 2:
    check_text(item[0])
    check_text(item[1])
    return item[0], item[1]
  raise TypeError(f"a batch item must be a str or a (text, pair) tuple, got {item!r:.80}")


def longest_first(n_a: int, n_b: int, budget: int) -> tuple[int, int]:
  """Lengths that fit `budget`, cutting the longer sequence first (HF tokenizers' rule).

  If cutting the longer one down to the shorter is not enough, both get budget // 2 and the
  one that was longer (the second, if they were equal) keeps the odd token.
  """
  short, long = sorted((n_a, n_b))
  long = short if short > budget else max(short, budget - short)
  if short + long > budget:
    short, long = budget // 2, budget // 2 + budget % 2
  return (long, short) if n_a > n_b else (short, long)


def truncate(
  ids_a: list[int], ids_b: list[int] | None, budget: int, mode: str
) -> tuple[list[int], list[int] | None]:
  """Cuts tokens off the right so that the content fits `budget` tokens."""
  if ids_b is None:
    return ids_a[:budget], None
  excess = len(ids_a) + len(ids_b) - budget
  if excess <= 0:
    return ids_a, ids_b
  if budget == 0:  # as HF: nothing of either sequence is left, whatever the strategy
    return [], []
  if mode == "longest_first":
    n_a, n_b = longest_first(len(ids_a), len(ids_b), budget)
    return ids_a[:n_a], ids_b[:n_b]
  target = ids_a if mode == "only_first" else ids_b
  if len(target) <= excess:
    which = "first" if mode == "only_first" else "second"
    raise ValueError(
      f"truncation={mode!r} cannot fit the pair into {budget} content tokens: the {which} "
      f"sequence has {len(target)} tokens, {excess} would have to go; use a larger max_length "
      "or truncation='longest_first'"
    )
  kept = target[: len(target) - excess]
  return (kept, ids_b) if mode == "only_first" else (ids_a, kept)


def pad(
  rows: list[tuple[list[int], list[int]]], mode: str | None, max_length: int, pad_id: int
) -> dict[str, list[list[int]]]:
  """The output columns, each row padded on the right as `mode` says."""
  longest = max((len(ids) for ids, _ in rows), default=0)
  target = {"longest": longest, "max_length": max_length}.get(mode or "", 0)
  columns: dict[str, list[list[int]]] = {
    "input_ids": [],
    "token_type_ids": [],
    "attention_mask": [],
  }
  for ids, types in rows:
    extra = max(target - len(ids), 0)
    columns["input_ids"].append(ids + [pad_id] * extra)
    columns["token_type_ids"].append(types + [0] * extra)
    columns["attention_mask"].append([1] * len(ids) + [0] * extra)
  return columns


def to_numpy(columns: dict[str, list[list[int]]]) -> dict[str, np.ndarray]:
  lengths = sorted({len(row) for row in columns["input_ids"]})
  if len(lengths) > 1:
    raise ValueError(
      f"return_tensors='np' needs rows of one length, got lengths {lengths}; pass padding=True "
      "or padding='max_length'"
    )
  width = lengths[0] if lengths else 0
  return {
    name: np.array(rows, dtype=np.int32).reshape(len(rows), width) for name, rows in columns.items()
  }
