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
and 1 after it. Truncation follows HF (tokenizers' rules, see `albert_jax.encoding`), padding
is on the right with `<pad>` (id 0), token type 0 and attention mask 0. `decode` joins the
pieces as HF's Metaspace decoder does. `tokenize_with_offsets` also gives each piece's
characters in the original text (`albert_jax.offsets`: for answer spans and entities cut out of
the text as written).
"""

from __future__ import annotations

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

from albert_jax import encoding, offsets
from albert_jax.config import MAX_POSITIONS
from albert_jax.errors import UserError

SPIECE_UNDERLINE = "▁"
PAD, UNK, CLS, SEP, MASK = "<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
MODEL_FILE_NAMES = ("spiece.model", "30k-clean.model")  # HF's name, then Google's
CONFIG_FILE_NAME = "tokenizer_config.json"
CONFIG_KEYS = ("do_lower_case", "keep_accents", "model_max_length")


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
    model_max_length: int = MAX_POSITIONS,
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
  def user_defined_symbols(self) -> frozenset[str]:
    """The SentencePiece model's user-defined symbols (score 0, not control, unknown or unused;
    `( ) " - . – £ €` in the bundled model): pieces HF's fast tokenizer splits out as words."""
    sp = self._sp
    return frozenset(
      sp.id_to_piece(i)
      for i in range(sp.get_piece_size())
      if sp.get_score(i) == 0 and not (sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i))
    )

  @property
  def serialized_model(self) -> bytes:
    """The SentencePiece model's bytes (what `save_vocabulary` writes)."""
    return self._proto

  def split_pieces(self) -> dict[int, list[int]]:
    """The vocabulary's pieces that step 4 splits (`▁1990,` -> `▁1990` `,`), each with the ids
    it becomes: what a tokenizer built from the ids alone (the SavedModel's) needs."""
    return {
      i: self.convert_tokens_to_ids(self._split_number_comma(piece))
      for i, piece in enumerate(self.convert_ids_to_tokens(range(self.vocab_size)))
      if len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit()
    }

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
    encoding.check_text(text)
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
    function `albert_jax.offsets.tokenize_with_offsets`."""
    return offsets.tokenize_with_offsets(self, text)

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
    encoding.check_text(text)
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
    padding_mode = encoding.strategy("padding", padding, encoding.PADDING)
    truncation_mode = encoding.strategy("truncation", truncation, encoding.TRUNCATION)
    if return_tensors not in (None, "np"):
      raise ValueError(f"return_tensors={return_tensors!r} is not supported; use None or 'np'")
    examples, batched = encoding.examples(text, text_pair)
    length = self._max_length(max_length)
    self._check_truncation(truncation_mode, length, examples, add_special_tokens)
    rows = [
      self._encode_example(a, b, add_special_tokens, truncation_mode, length) for a, b in examples
    ]
    columns = encoding.pad(rows, padding_mode, length, self.pad_token_id)
    if return_tensors == "np":
      return encoding.to_numpy(columns)
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
    self, mode: str | None, length: int, examples: list[encoding.Example], add_special_tokens: bool
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
      ids_a, ids_b = encoding.truncate(ids_a, ids_b, budget, truncation)
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


def _id_list(ids: Any) -> list[int]:
  array = np.asarray(ids)
  if array.ndim > 1:
    raise ValueError(f"decode takes one sequence of ids, got shape {array.shape}; use batch_decode")
  if array.size and not np.issubdtype(array.dtype, np.integer):
    raise ValueError(f"token ids must be integers, got dtype {array.dtype}")
  return [int(i) for i in array.reshape(-1)]
