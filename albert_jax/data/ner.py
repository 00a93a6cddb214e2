"""Token classification: named entities (CoNLL-2003, WikiANN), part-of-speech tags, chunks.

Rows: tensorflow-datasets records (`tokens` and a tag column of class ids: `TASKS[name].column`)
or the sentences of a local CoNLL file (`albert_jax.data.conll`: `tokens` and `tags` as names).

Examples: `{"id": int, "tokens": [str], "tags": [int]}` (label ids; -1 where unknown).

Features. Each word is tokenized on its own; the pieces of a sentence are cut into windows of
at most `max_seq_length - 2` pieces, each starting `doc_stride` pieces after the one before (as
SQuAD's contexts), each one row `[CLS] window [SEP]`. `labels` [N, L] holds a word's tag on its
first piece and -1 (ignored by the loss) on its other pieces, on `[CLS]`, `[SEP]` and padding;
with `label_all_tokens=True` the other pieces carry the tag too, in its I- form (B-PER -> I-PER,
when the label set has it). A word is predicted once: from the window where its first piece has
the most context on its shorter side (SQuAD's `token_is_max_context`; ties go to the earlier
window). A word that tokenizes to no pieces (a lone combining mark, a zero-width space) gets no
label and no prediction; it is predicted "O", counted in the metrics as the gold says, and the
number of such words is logged and reported as the metric `words_without_pieces`.

Metrics: token `accuracy` (every word); for IOB-style label sets (NER, chunks) also entity-level
`precision`, `recall`, `f1` and `f1_<TYPE>` per type, as seqeval's default mode
(`albert_jax.metrics.entities`). Fractions, like GLUE's.
"""

from __future__ import annotations

import logging
import re
from typing import Any, NamedTuple

import numpy as np

from albert_jax import metrics as metrics_lib
from albert_jax.errors import UserError

# Label names as the tensorflow-datasets builders' ClassLabel features list them (tfds 4.9,
# `core/dataset_builders/conll/conll_dataset_builder_utils.py` and `text/wikiann/wikiann.py`).
CONLL2003_NER_TAGS = (
  "O",
  *("B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"),
)
CONLL2003_POS_TAGS = (
  *('"', "''", "#", "$", "(", ")", ",", ".", ":", "``", "CC", "CD", "DT", "EX", "FW", "IN"),
  *("JJ", "JJR", "JJS", "LS", "MD", "NN", "NNP", "NNPS", "NNS", "NN|SYM", "PDT", "POS", "PRP"),
  *("PRP$", "RB", "RBR", "RBS", "RP", "SYM", "TO", "UH", "VB", "VBD", "VBG", "VBN", "VBP"),
  *("VBZ", "WDT", "WP", "WP$", "WRB"),
)
CONLL2003_CHUNK_TAGS = (
  "O",
  *(
    f"{prefix}-{kind}" for kind in ("ADJP", "ADVP", "CONJP", "INTJ", "LST", "NP") for prefix in "BI"
  ),
  *(f"{prefix}-{kind}" for kind in ("PP", "PRT", "SBAR", "UCP", "VP") for prefix in "BI"),
)
WIKIANN_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")


class TaggingTask(NamedTuple):
  label_names: tuple[str, ...]
  builder: str  # the tensorflow-datasets builder
  column: str  # its feature holding the tags
  eval_splits: tuple[str, ...]


TASKS: dict[str, TaggingTask] = {
  "conll2003": TaggingTask(CONLL2003_NER_TAGS, "conll2003", "ner", ("dev", "test")),
  "conll2003_pos": TaggingTask(CONLL2003_POS_TAGS, "conll2003", "pos", ("dev", "test")),
  "conll2003_chunk": TaggingTask(CONLL2003_CHUNK_TAGS, "conll2003", "chunks", ("dev", "test")),
  "wikiann_en": TaggingTask(WIKIANN_TAGS, "wikiann/en", "tags", ("validation", "test")),
}
OUTSIDE = "O"  # the tag predicted for a word without pieces
IGNORED = -1  # a label the loss skips; an unknown tag in examples
_IOB_TAG = re.compile(r"^(O|[BIES]-.+)$")


def is_entity_scheme(label_names: tuple[str, ...]) -> bool:
  """True when every label is O or <B|I|E|S>-TYPE, so entity-level scores apply."""
  return all(_IOB_TAG.match(name) for name in label_names)


# ---- examples ---------------------------------------------------------------------------------


def examples_from_rows(task, rows: list[tuple[str, dict[str, Any]]], split: str) -> list[dict]:
  """Checked examples: tags as label ids; raises UserError naming the file and line (local) or
  record (tfds) of a tag outside the label set or of tokens and tags of unequal length."""
  tfds_column = TASKS[task.name].column
  label_ids = {name: i for i, name in enumerate(task.label_names)}
  examples = []
  for position, (where, row) in enumerate(rows):
    column_here = "tags" if "file" in row else tfds_column  # a local file's row, or tfds'
    if "tokens" not in row or column_here not in row:
      raise UserError(
        f"{where}: a {task.name} row needs 'tokens' and {column_here!r}; found {', '.join(row)}"
      )
    tokens, tags = row["tokens"], row[column_here]
    if len(tokens) != len(tags):
      raise UserError(
        f"{where}: {len(tokens)} tokens but {len(tags)} {column_here!r} tags; every word needs "
        "one tag"
      )
    if not all(isinstance(token, str) for token in tokens):
      raise UserError(f"{where}: tokens {tokens!r:.200} must all be text")
    ids = [
      label_ids.get(tag, IGNORED) if isinstance(tag, str) else _tag_id(task, tag) for tag in tags
    ]
    if IGNORED in ids:
      k = ids.index(IGNORED)
      at = f"{row['file']} line {row['line'] + k}" if "file" in row else f"{where} token {k}"
      raise UserError(
        f"{at}: tag {tags[k]!r} is not in {task.name}'s label set ({' '.join(task.label_names)}); "
        "fix the tag, or give the file's own tag set as label_names"
      )
    examples.append({"id": position, "tokens": list(tokens), "tags": ids})
  return examples


def _tag_id(task, tag: Any) -> int:
  """A tfds class id as it is, when it is one of the task's; else IGNORED."""
  valid = isinstance(tag, int) and not isinstance(tag, bool) and 0 <= tag < task.num_labels
  return tag if valid else IGNORED


# ---- features ---------------------------------------------------------------------------------


def featurize(
  task,
  examples: list[dict],
  tokenizer,
  max_seq_length: int,
  *,
  doc_stride: int | None = None,
  label_all_tokens: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Arrays [N, max_seq_length] (see the module docstring) and meta `scored_word` [N, L]: the
  word (index in its example) predicted at each position, -1 elsewhere.

  doc_stride: pieces between the starts of a sentence's windows; None for half a window.
  """
  width = max_seq_length - 2  # pieces per window
  stride = max(1, width // 2) if doc_stride is None else doc_stride
  if isinstance(stride, bool) or not 1 <= stride <= width:
    raise UserError(
      f"doc_stride={doc_stride} must be in 1..{width} (max_seq_length - 2) so that the windows "
      "cover every word"
    )
  inside = _inside_labels(task.label_names)
  cache: dict[str, list[int]] = {}
  rows: list[tuple[int, list[int], list[int], list[int]]] = []  # example, ids, labels, scored
  without_pieces = 0
  for e, example in enumerate(examples):
    ids, word_of, first = [], [], []
    for w, word in enumerate(example["tokens"]):
      if word not in cache:
        cache[word] = list(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word)))
      without_pieces += not cache[word]
      for k, piece in enumerate(cache[word]):
        ids.append(piece)
        word_of.append(w)
        first.append(k == 0)
    starts = window_starts(len(ids), width, stride)
    home = max_context_window(starts, len(ids), width)
    for window, start in enumerate(starts):
      span = range(start, min(start + width, len(ids)))
      labels, scored = [], []
      for j in span:
        tag = example["tags"][word_of[j]]
        if first[j]:
          labels.append(tag)
        else:
          labels.append(inside[tag] if label_all_tokens and tag >= 0 else IGNORED)
        scored.append(word_of[j] if first[j] and home[j] == window else IGNORED)
      rows.append((e, [ids[j] for j in span], labels, scored))
  if without_pieces:
    logging.warning(
      "%d word(s) tokenize to no pieces (e.g. a lone combining mark); they are predicted %r and "
      "scored against their gold tags.",
      without_pieces,
      OUTSIDE,
    )
  shape = (len(rows), max_seq_length)
  arrays = {
    "input_ids": np.full(shape, tokenizer.pad_token_id, np.int32),
    "attention_mask": np.zeros(shape, np.int32),
    "token_type_ids": np.zeros(shape, np.int32),
    "labels": np.full(shape, IGNORED, np.int32),
    "example_index": np.array([row[0] for row in rows], np.int32),
  }
  scored_word = np.full(shape, IGNORED, np.int32)
  for n, (_, ids, labels, scored) in enumerate(rows):
    end = len(ids) + 2
    arrays["input_ids"][n, :end] = [tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]
    arrays["attention_mask"][n, :end] = 1
    arrays["labels"][n, 1 : end - 1] = labels
    scored_word[n, 1 : end - 1] = scored
  return arrays, {"scored_word": scored_word}


def window_starts(num_pieces: int, width: int, stride: int) -> list[int]:
  """The first piece of each window: 0, stride, 2 stride, ... until a window reaches the end."""
  starts = [0]
  while starts[-1] + width < num_pieces:
    starts.append(starts[-1] + stride)
  return starts


def max_context_window(starts: list[int], num_pieces: int, width: int) -> list[int]:
  """For each piece, the window (index into `starts`) where it has the most context: the
  larger of its distances to the window's ends, the shorter of them counted, plus 0.01 x the
  window's length (SQuAD's rule); the earlier window on ties."""
  best = [-1] * num_pieces
  best_score = [float("-inf")] * num_pieces
  for window, start in enumerate(starts):
    end = min(start + width, num_pieces)
    for j in range(start, end):
      score = min(j - start, end - 1 - j) + 0.01 * (end - start)
      if score > best_score[j]:
        best[j], best_score[j] = window, score
  return best


def _inside_labels(label_names: tuple[str, ...]) -> list[int]:
  """For each label, the label of a word's later pieces: I-X for B-X when present, else itself."""
  ids = {name: i for i, name in enumerate(label_names)}
  return [
    ids.get("I-" + name[2:], i) if name.startswith("B-") else i
    for i, name in enumerate(label_names)
  ]


# ---- predictions ------------------------------------------------------------------------------


def postprocess(task, examples: list[dict], features, outputs: dict[str, np.ndarray]):
  """Per sentence id its (word, gold tag, predicted tag) triples, and the metrics (module doc)."""
  logits = outputs["logits"]
  scored = features.meta["scored_word"]
  if logits.ndim != 3 or logits.shape[1:] != (scored.shape[1], task.num_labels):
    raise UserError(
      f"{task.name} logits must have shape [N, {scored.shape[1]}, {task.num_labels}], "
      f"got {logits.shape}"
    )
  chosen_NL = np.argmax(logits, axis=-1)
  example_index = features.arrays["example_index"]
  predicted = {int(e): np.full(len(examples[e]["tokens"]), IGNORED) for e in set(example_index)}
  for n, e in enumerate(example_index):
    mask = scored[n] >= 0
    target = predicted[int(e)]
    if np.any(target[scored[n][mask]] != IGNORED):
      raise AssertionError(f"a word of example {e} is scored in two windows")
    target[scored[n][mask]] = chosen_NL[n][mask]
  values, gold_tags, predicted_tags = {}, [], []
  unpredicted = 0
  for e in sorted(predicted):
    example = examples[e]
    names = [task.label_names[i] if i >= 0 else OUTSIDE for i in predicted[e]]
    unpredicted += int(np.sum(predicted[e] == IGNORED))
    gold = [task.label_names[i] if i >= 0 else None for i in example["tags"]]
    values[example["id"]] = list(zip(example["tokens"], gold, names, strict=True))
    gold_tags.append(gold)
    predicted_tags.append(names)
  if any(tag is None for tags in gold_tags for tag in tags):
    return values, None, {}
  scores = {"accuracy": metrics_lib.token_accuracy(gold_tags, predicted_tags)}
  if is_entity_scheme(task.label_names):
    entities = metrics_lib.entity_scores(gold_tags, predicted_tags)
    scores.update({k: entities["micro"][k] for k in ("precision", "recall", "f1")})
    scores.update({f"f1_{kind}": s["f1"] for kind, s in entities.items() if kind != "micro"})
  scores["words_without_pieces"] = float(unpredicted)
  return values, None, scores


def prediction_files(task, predictions, split: str) -> dict[str, str]:
  """`<split>.conll`: `word gold predicted` per line, a blank line after each sentence (what
  conlleval reads). Whitespace inside a word is written as '_' (and an empty word as '_') so that
  every line keeps three fields; an unknown gold tag is written as '-'."""
  lines = []
  for triples in predictions.values.values():
    for word, gold, tag in triples:
      lines.append(f"{_conll_word(word)} {gold or '-'} {tag}")
    lines.append("")
  return {f"{split}.conll": "\n".join(lines) + "\n"}


def _conll_word(word: str) -> str:
  return re.sub(r"\s+", "_", word) or "_"
