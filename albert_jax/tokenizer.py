"""ALBERT's SentencePiece tokenizer: the ids of the released models, with HF's calling API.

`AlbertTokenizer()` loads the bundled 30k-clean model (the vocabulary of every released English
ALBERT). Text becomes pieces the way Google's ALBERT code and HF's slow (SentencePiece)
`AlbertTokenizer` make them:

1. the special tokens `<pad> <unk> [CLS] [SEP] [MASK]` are cut out of the raw text (exact,
   case-sensitive match) and each piece of text between them is tokenized on its own, so the
   spaces around a special token never matter;
2. each piece of text is preprocessed: whitespace collapsed (`" ".join(text.split())`),
   `` and '' turned into " (HF's rule; unless `replace_quotes=False`), NFKD with combining
   marks dropped (unless `keep_accents`), lowercased (if `do_lower_case`);
3. SentencePiece encodes it (its own `nmt_nfkc` normalization, unigram model);
4. a piece ending in a digit and a comma (`▁1990,`) is encoded again without the comma and the
   comma becomes its own piece (`▁1990` `,`).

Sequences are `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`, token types 0 up to the first `[SEP]`
and 1 after it. Truncation follows HF (tokenizers' rules, see `_longest_first`), padding is on
the right with `<pad>` (id 0), token type 0 and attention mask 0. `decode` joins the pieces as
HF's Metaspace decoder does. `tokenize_with_offsets` also gives each piece's characters in the
original text (for answer spans and entities cut out of the text as written).
"""

from __future__ import annotations

import difflib
import importlib.resources
import json
import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

from albert_jax.errors import UserError

SPIECE_UNDERLINE = "▁"
PAD, UNK, CLS, SEP, MASK = "<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
MODEL_FILE_NAMES = ("spiece.model", "30k-clean.model")  # HF's name, then Google's
CONFIG_FILE_NAME = "tokenizer_config.json"
CONFIG_KEYS = ("do_lower_case", "keep_accents", "model_max_length")

# What each accepted `padding` / `truncation` value means (None: do not pad / truncate).
_PADDING = {
  False: None,
  None: None,
  "do_not_pad": None,
  True: "longest",
  "longest": "longest",
  "max_length": "max_length",
}
_TRUNCATION = {
  False: None,
  None: None,
  "do_not_truncate": None,
  True: "longest_first",
  "longest_first": "longest_first",
  "only_first": "only_first",
  "only_second": "only_second",
}

Example = tuple[str, str | None]


def bundled_model_path() -> Path:
  """Where the packaged 30k-clean SentencePiece model is."""
  return Path(str(importlib.resources.files("albert_jax") / "assets" / "30k-clean.model"))


class AlbertTokenizer:
  """The ALBERT SentencePiece tokenizer (30k-clean by default); see the module docstring.

  Args:
    model_file: a SentencePiece `.model` file; None for the bundled 30k-clean model.
    do_lower_case: lowercase the text before SentencePiece (all released models: True).
    keep_accents: keep accents and other combining marks (released models: False).
    model_max_length: the `max_length` used when truncating or padding to `max_length`
      without one (ALBERT's position embeddings: 512).
    replace_quotes: turn `` and '' into " before SentencePiece, as HF's tokenizer does (the
      default, for the model). False is Google's `tokenization.py`, which made the
      pretraining data: `` stays and becomes `<unk>` (`create_pretraining_data` uses it).
  """

  pad_token, unk_token, cls_token, sep_token, mask_token = SPECIAL_TOKENS
  model_input_names = ("input_ids", "token_type_ids", "attention_mask")

  def __init__(
    self,
    model_file: str | os.PathLike[str] | None = None,
    *,
    do_lower_case: bool = True,
    keep_accents: bool = False,
    model_max_length: int = 512,
    replace_quotes: bool = True,
  ) -> None:
    self.model_file = str(bundled_model_path() if model_file is None else model_file)
    self.do_lower_case = do_lower_case
    self.keep_accents = keep_accents
    self.model_max_length = model_max_length
    self.replace_quotes = replace_quotes
    self._load(_read_model_file(self.model_file))

  def _load(self, proto: bytes) -> None:
    self._proto = proto
    self._sp = spm.SentencePieceProcessor()
    try:
      self._sp.LoadFromSerializedProto(proto)
    except RuntimeError as e:
      raise ValueError(
        f"{self.model_file} is not a SentencePiece model ({e}); pass an ALBERT .model file such "
        "as 30k-clean.model, or no file for the bundled one"
      ) from None
    self._special_ids = {token: self._special_id(token) for token in SPECIAL_TOKENS}
    self._special_re = re.compile("(" + "|".join(map(re.escape, SPECIAL_TOKENS)) + ")")

  def _special_id(self, token: str) -> int:
    token_id = self._sp.piece_to_id(token)
    if token_id == self._sp.unk_id() and token != UNK:
      raise ValueError(
        f"{self.model_file} has no piece {token!r}; an ALBERT model needs all of "
        f"{' '.join(SPECIAL_TOKENS)}"
      )
    return token_id

  @classmethod
  def from_pretrained(cls, path: str | os.PathLike[str], **kwargs: Any) -> AlbertTokenizer:
    """Loads a `.model` file, or a directory holding `spiece.model` or `30k-clean.model`.

    A directory's `tokenizer_config.json` (HF's, or ours from `save_pretrained`) supplies
    `do_lower_case`, `keep_accents` and `model_max_length`; `kwargs` override them.
    """
    path = Path(path)
    if not path.is_dir():
      return cls(path, **kwargs)
    found = [path / name for name in MODEL_FILE_NAMES if (path / name).is_file()]
    if not found:
      raise FileNotFoundError(
        f"no SentencePiece model in directory {path}: expected one of "
        f"{', '.join(MODEL_FILE_NAMES)}; pass the .model file's path instead if it is named "
        "otherwise"
      )
    return cls(found[0], **{**_read_config(path / CONFIG_FILE_NAME), **kwargs})

  def save_vocabulary(
    self, directory: str | os.PathLike[str], filename_prefix: str | None = None
  ) -> tuple[str]:
    """Writes the SentencePiece model as `spiece.model` (HF's name) into `directory`."""
    name = (f"{filename_prefix}-" if filename_prefix else "") + MODEL_FILE_NAMES[0]
    path = Path(directory) / name
    path.write_bytes(self._proto)
    return (str(path),)

  def save_pretrained(self, directory: str | os.PathLike[str]) -> tuple[str, ...]:
    """Writes `spiece.model` and `tokenizer_config.json`, loadable here and by HF."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"tokenizer_class": "AlbertTokenizer", **self._config()}
    config_path = directory / CONFIG_FILE_NAME
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return (*self.save_vocabulary(directory), str(config_path))

  def _config(self) -> dict[str, Any]:
    return {key: getattr(self, key) for key in CONFIG_KEYS}

  # --- vocabulary ------------------------------------------------------------------------------

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def __len__(self) -> int:
    return self.vocab_size

  def get_vocab(self) -> dict[str, int]:
    return {self._sp.id_to_piece(i): i for i in range(self.vocab_size)}

  @property
  def pad_token_id(self) -> int:
    return self._special_ids[PAD]

  @property
  def unk_token_id(self) -> int:
    return self._special_ids[UNK]

  @property
  def cls_token_id(self) -> int:
    return self._special_ids[CLS]

  @property
  def sep_token_id(self) -> int:
    return self._special_ids[SEP]

  @property
  def mask_token_id(self) -> int:
    return self._special_ids[MASK]

  @property
  def all_special_tokens(self) -> list[str]:
    return list(SPECIAL_TOKENS)

  @property
  def all_special_ids(self) -> list[int]:
    return [self._special_ids[token] for token in SPECIAL_TOKENS]

  def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
    """Piece(s) to id(s); a string that is no piece gives the `<unk>` id."""
    if isinstance(tokens, str):
      return self._sp.piece_to_id(tokens)
    return [self._sp.piece_to_id(token) for token in tokens]

  def convert_ids_to_tokens(
    self, ids: int | Sequence[int], skip_special_tokens: bool = False
  ) -> str | list[str]:
    """Id(s) to piece(s); raises ValueError for an id outside the vocabulary."""
    if isinstance(ids, (int, np.integer)):
      return self._sp.id_to_piece(self._checked_id(ids))
    skip = set(self.all_special_ids) if skip_special_tokens else set()
    return [self._sp.id_to_piece(self._checked_id(i)) for i in ids if i not in skip]

  def _checked_id(self, token_id: int) -> int:
    if not 0 <= token_id < self.vocab_size:
      raise ValueError(f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})")
    return int(token_id)

  # --- text to pieces --------------------------------------------------------------------------

  def tokenize(self, text: str) -> list[str]:
    """The pieces of `text`, without `[CLS]`/`[SEP]` added."""
    _check_text(text)
    tokens: list[str] = []
    for chunk in self._special_re.split(text):
      tokens.extend([chunk] if chunk in self._special_ids else self._pieces(chunk))
    return tokens

  def _preprocess(self, text: str) -> str:
    text = " ".join(text.strip().split())
    if self.replace_quotes:
      text = text.replace("``", '"').replace("''", '"')
    if not self.keep_accents:
      text = unicodedata.normalize("NFKD", text)
      text = "".join(c for c in text if not unicodedata.combining(c))
    return text.lower() if self.do_lower_case else text

  def _pieces(self, text: str) -> list[str]:
    pieces: list[str] = []
    for piece in self._sp.encode(self._preprocess(text), out_type=str):
      ends_in_number_comma = len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit()
      pieces.extend(self._split_number_comma(piece) if ends_in_number_comma else [piece])
    return pieces

  def _split_number_comma(self, piece: str) -> list[str]:
    """`▁1990,` -> `▁1990` `,`: the number encoded again, its word-start mark kept as it was."""
    head = self._sp.encode(piece[:-1].replace(SPIECE_UNDERLINE, ""), out_type=str)
    if not piece.startswith(SPIECE_UNDERLINE) and head[0].startswith(SPIECE_UNDERLINE):
      head = head[1:] if head[0] == SPIECE_UNDERLINE else [head[0][1:], *head[1:]]
    return [*head, ","]

  def tokenize_with_offsets(self, text: str) -> tuple[list[str], np.ndarray]:
    """The pieces of `text` and each one's (start, end) characters in `text` [T, 2]; see the
    module function `tokenize_with_offsets`."""
    return tokenize_with_offsets(self, text)

  def _ids(self, text: str) -> list[int]:
    return self.convert_tokens_to_ids(self.tokenize(text))

  # --- ids to text -----------------------------------------------------------------------------

  def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
    """Joins pieces, `▁` becoming a space; the first piece's leading `▁` is dropped."""
    text = "".join(tokens).replace(SPIECE_UNDERLINE, " ")
    return text[1:] if tokens and tokens[0].startswith(SPIECE_UNDERLINE) else text

  def decode(self, ids: int | Sequence[int] | np.ndarray, skip_special_tokens: bool = False) -> str:
    """The text of one sequence of ids (a list, or a 0-d/1-d array), as HF decodes it."""
    tokens = self.convert_ids_to_tokens(_id_list(ids), skip_special_tokens=skip_special_tokens)
    return self.convert_tokens_to_string(tokens)

  def batch_decode(self, sequences: Sequence[Any], skip_special_tokens: bool = False) -> list[str]:
    return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in sequences]

  # --- model inputs ----------------------------------------------------------------------------

  def num_special_tokens_to_add(self, pair: bool = False) -> int:
    return 3 if pair else 2

  def build_inputs_with_special_tokens(
    self, ids_a: list[int], ids_b: list[int] | None = None
  ) -> list[int]:
    cls, sep = [self.cls_token_id], [self.sep_token_id]
    return cls + ids_a + sep + ([] if ids_b is None else ids_b + sep)

  def create_token_type_ids_from_sequences(
    self, ids_a: list[int], ids_b: list[int] | None = None
  ) -> list[int]:
    return [0] * (len(ids_a) + 2) + ([] if ids_b is None else [1] * (len(ids_b) + 1))

  def encode(
    self,
    text: str,
    text_pair: str | None = None,
    add_special_tokens: bool = True,
    *,
    truncation: bool | str = False,
    max_length: int | None = None,
    padding: bool | str = False,
  ) -> list[int]:
    """The input ids of one text (or pair); options as in `__call__`."""
    _check_text(text)
    encoded = self(
      text,
      text_pair,
      add_special_tokens=add_special_tokens,
      padding=padding,
      truncation=truncation,
      max_length=max_length,
    )
    return encoded["input_ids"]

  def __call__(
    self,
    text: str | Sequence[str] | Sequence[tuple[str, str]],
    text_pair: str | Sequence[str] | None = None,
    *,
    add_special_tokens: bool = True,
    padding: bool | str = False,
    truncation: bool | str = False,
    max_length: int | None = None,
    return_tensors: str | None = None,
  ) -> dict[str, Any]:
    """`input_ids`, `token_type_ids` and `attention_mask` of a text, a pair or a batch.

    `text` is a string (with `text_pair` a string or None), or a batch: a list of strings
    (with `text_pair` None or a list of strings as long) or a list of (text, pair) tuples.
    padding: False/'do_not_pad', True/'longest' (to the batch's longest), 'max_length'.
    truncation: False/'do_not_truncate', True/'longest_first', 'only_first', 'only_second'.
    max_length: the length to truncate / pad to (default `model_max_length`).
    return_tensors: None for lists (unbatched for a single text), 'np' for int32 arrays of
    shape (batch, length).
    """
    padding_mode = _strategy("padding", padding, _PADDING)
    truncation_mode = _strategy("truncation", truncation, _TRUNCATION)
    if return_tensors not in (None, "np"):
      raise ValueError(f"return_tensors={return_tensors!r} is not supported; use None or 'np'")
    examples, batched = _examples(text, text_pair)
    length = self._max_length(max_length)
    self._check_truncation(truncation_mode, length, examples, add_special_tokens)
    rows = [
      self._encode_example(a, b, add_special_tokens, truncation_mode, length) for a, b in examples
    ]
    columns = _pad(rows, padding_mode, length, self.pad_token_id)
    if return_tensors == "np":
      return _to_numpy(columns)
    return columns if batched else {name: value[0] for name, value in columns.items()}

  def _max_length(self, max_length: int | None) -> int:
    if max_length is None:
      return self.model_max_length
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
      raise ValueError(f"max_length={max_length!r} must be an int")
    if max_length < 0:
      raise ValueError(f"max_length={max_length} must not be negative")
    return int(max_length)

  def _check_truncation(
    self, mode: str | None, length: int, examples: list[Example], add_special_tokens: bool
  ) -> None:
    if mode is None:
      return
    has_pair = any(b is not None for _, b in examples)
    if mode == "only_second" and not all(b is not None for _, b in examples):
      raise ValueError(
        "truncation='only_second' needs a text pair for every text; pass text_pair, or use "
        "truncation='longest_first' or 'only_first'"
      )
    needed = self.num_special_tokens_to_add(has_pair) if add_special_tokens else 0
    if length < needed:
      kind = "a text pair" if has_pair else "a single text"
      raise ValueError(
        f"max_length={length} is too small: {kind} takes {needed} special tokens; "
        f"use max_length >= {needed}"
      )

  def _encode_example(
    self, a: str, b: str | None, add_special_tokens: bool, truncation: str | None, length: int
  ) -> tuple[list[int], list[int]]:
    ids_a, ids_b = self._ids(a), None if b is None else self._ids(b)
    if truncation is not None:
      budget = length - (self.num_special_tokens_to_add(b is not None) if add_special_tokens else 0)
      ids_a, ids_b = _truncate(ids_a, ids_b, budget, truncation)
    if add_special_tokens:
      ids = self.build_inputs_with_special_tokens(ids_a, ids_b)
      return ids, self.create_token_type_ids_from_sequences(ids_a, ids_b)
    ids_b = ids_b or []
    return ids_a + ids_b, [0] * len(ids_a) + [1] * len(ids_b)

  # --- pickling: the SentencePiece processor is rebuilt from the model's bytes -----------------

  def __getstate__(self) -> dict[str, Any]:
    return {
      "model_file": self.model_file,
      "proto": self._proto,
      "replace_quotes": self.replace_quotes,
      **self._config(),
    }

  def __setstate__(self, state: dict[str, Any]) -> None:
    state = dict(state)
    proto = state.pop("proto")
    self.__dict__.update(state)
    self._load(proto)

  def __repr__(self) -> str:
    return (
      f"AlbertTokenizer({self.model_file!r}, vocab_size={self.vocab_size}, "
      f"do_lower_case={self.do_lower_case}, keep_accents={self.keep_accents}, "
      f"replace_quotes={self.replace_quotes})"
    )


def check_token_ids(ids: Any, vocab_size: int, what: str) -> None:
  """Raises a UserError naming the first id of `ids` (any nesting of ints or an array) outside
  [0, vocab_size): the model's embedding would read garbage or NaN for it."""
  rows = [ids] if isinstance(ids, np.ndarray) else list(ids)
  flat = np.concatenate([np.ravel(np.asarray(x, np.int64)) for x in rows] or [np.zeros(0)])
  bad = np.flatnonzero((flat < 0) | (flat >= vocab_size))
  if bad.size:
    raise UserError(
      f"{what}: token id {int(flat[bad[0]])} is outside the model's vocabulary "
      f"(vocab_size {vocab_size}; {bad.size} such ids). The tokenizer does not belong to "
      "this model: use the model's own spiece.model, or a model with a larger vocab_size."
    )


def _read_model_file(path: str) -> bytes:
  hint = "pass the path of an ALBERT SentencePiece .model file, or no path for the bundled one"
  try:
    return Path(path).read_bytes()
  except FileNotFoundError:
    raise FileNotFoundError(f"SentencePiece model {path} does not exist; {hint}") from None
  except IsADirectoryError:
    raise ValueError(
      f"{path} is a directory; use AlbertTokenizer.from_pretrained({path!r})"
    ) from None
  except OSError as e:
    raise ValueError(f"cannot read SentencePiece model {path} ({e.strerror}); {hint}") from None


def _read_config(path: Path) -> dict[str, Any]:
  if not path.is_file():
    return {}
  try:
    config = json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); fix or delete it") from None
  return {key: config[key] for key in CONFIG_KEYS if key in config}


def _check_text(text: object) -> None:
  if not isinstance(text, str):
    raise TypeError(f"expected a str, got {type(text).__name__}: {text!r:.80}")


def _strategy(kind: str, value: object, table: dict[object, str | None]) -> str | None:
  if isinstance(value, (bool, str, type(None))) and value in table:
    return table[value]
  choices = ", ".join(repr(key) for key in table)
  raise ValueError(f"unknown {kind} strategy {value!r}; use one of {choices}")


def _examples(text: Any, text_pair: Any) -> tuple[list[Example], bool]:
  """The (text, pair) examples of a call's input, and whether it was a batch."""
  if isinstance(text, str):
    if text_pair is not None:
      _check_text(text_pair)
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
    _check_text(item[0])
    _check_text(item[1])
    return item[0], item[1]
  raise TypeError(f"a batch item must be a str or a (text, pair) tuple, got {item!r:.80}")


def _longest_first(n_a: int, n_b: int, budget: int) -> tuple[int, int]:
  """Lengths that fit `budget`, cutting the longer sequence first (HF tokenizers' rule).

  If cutting the longer one down to the shorter is not enough, both get budget // 2 and the
  one that was longer (the second, if they were equal) keeps the odd token.
  """
  short, long = sorted((n_a, n_b))
  long = short if short > budget else max(short, budget - short)
  if short + long > budget:
    short, long = budget // 2, budget // 2 + budget % 2
  return (long, short) if n_a > n_b else (short, long)


def _truncate(
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
    n_a, n_b = _longest_first(len(ids_a), len(ids_b), budget)
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


def _pad(
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


def _to_numpy(columns: dict[str, list[list[int]]]) -> dict[str, np.ndarray]:
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


def _id_list(ids: Any) -> list[int]:
  array = np.asarray(ids)
  if array.ndim > 1:
    raise ValueError(f"decode takes one sequence of ids, got shape {array.shape}; use batch_decode")
  if array.size and not np.issubdtype(array.dtype, np.integer):
    raise ValueError(f"token ids must be integers, got dtype {array.dtype}")
  return [int(i) for i in array.reshape(-1)]


# ---- offsets: pieces -> characters of the original text ----------------------------------


def normalize_with_map(
  text: str, *, lower: bool = True, strip_accents: bool = True
) -> tuple[str, list[int]]:
  """ALBERT's text preprocessing of `text`, and for each output character its source index."""
  chars: list[tuple[str, int]] = []
  space_at = None  # where the pending run of whitespace began
  for i, c in enumerate(text):
    if c.isspace():
      space_at = i if space_at is None else space_at
      continue
    if space_at is not None and chars:
      chars.append((" ", space_at))
    space_at = None
    chars.append((c, i))
  for pair in ("``", "''"):  # str.replace order and semantics: left to right, no overlaps
    merged, k = [], 0
    while k < len(chars):
      if k + 1 < len(chars) and chars[k][0] + chars[k + 1][0] == pair:
        merged.append(('"', chars[k][1]))
        k += 2
      else:
        merged.append(chars[k])
        k += 1
    chars = merged
  if strip_accents:
    chars = [
      (d, i)
      for c, i in chars
      for d in unicodedata.normalize("NFKD", c)
      if not unicodedata.combining(d)
    ]
  if lower:
    lowered = [(d, i) for c, i in chars for d in c.lower()]
    whole = "".join(c for c, _ in chars).lower()  # as one string: a word-final Σ becomes ς
    chars = [(d, i) for d, (_, i) in zip(whole, lowered, strict=True)]
  return "".join(c for c, _ in chars), [i for _, i in chars]


def tokenize_with_offsets(tokenizer: Any, context: str) -> tuple[list[str], np.ndarray]:
  """`tokenizer.tokenize(context)` and each piece's (start, end) characters in `context` [T, 2].

  `context[start:end]` is the original text a piece came from, through whitespace collapse,
  quote replacement, accent stripping and lowercasing (`normalize_with_map`) and
  SentencePiece's own normalization (aligned by `_align`); characters normalization dropped
  belong to the piece before them. A piece of only `▁` gets (-1, -1).
  """
  pieces = tokenizer.tokenize(context)
  norm, source = normalize_with_map(
    context,
    lower=getattr(tokenizer, "do_lower_case", True),
    strip_accents=not getattr(tokenizer, "keep_accents", False),
  )
  joined = "".join(pieces).replace(SPIECE_UNDERLINE, " ")
  to_norm = _align(joined, norm)  # joined char -> (start, end) in norm, or None
  covered = np.zeros(len(context) + 1, bool)
  for span in to_norm:
    if span is not None:
      covered[[source[j] for j in range(*span)]] = True
  offsets = np.full((len(pieces), 2), -1, np.int32)
  position = 0
  for k, piece in enumerate(pieces):
    spans = [
      to_norm[position + c]
      for c, char in enumerate(piece.replace(SPIECE_UNDERLINE, " "))
      if char != " " and to_norm[position + c] is not None
    ]
    position += len(piece)
    if not spans:
      continue
    start = source[min(s for s, _ in spans)]
    end = source[max(e for _, e in spans) - 1] + 1
    while end < len(context) and not covered[end] and not context[end].isspace():
      end += 1  # characters that normalization dropped belong to the piece before them
    offsets[k] = start, end
  return pieces, offsets


def _align(joined: str, norm: str) -> list[tuple[int, int] | None]:
  """For each character of `joined`, the span of `norm` it stands for (None: nothing)."""
  lead = len(joined) - len(joined.lstrip(" "))
  if joined[lead:] == norm:  # the common case: only SentencePiece's leading ▁ added
    return [None] * lead + [(j, j + 1) for j in range(len(norm))]
  spans: list[tuple[int, int] | None] = [None] * len(joined)
  matcher = difflib.SequenceMatcher(None, joined, norm, autojunk=False)
  for op, i1, i2, j1, j2 in matcher.get_opcodes():
    for i in range(i1, i2):
      if op == "equal":
        spans[i] = (j1 + i - i1, j1 + i - i1 + 1)
      elif op == "replace":
        spans[i] = (j1, j2)
  return spans
