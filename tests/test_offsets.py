"""Piece offsets (`albert_jax.offsets`) where normalization changes the text's length: Hangul
(NFKD splits a syllable into 2-3 jamo, SentencePiece's NFKC joins them again), ligatures,
full-width forms, Roman numerals, compatibility letters and ideographs, combining marks, ß,
emoji sequences, special tokens glued to words.

Two references: each piece's characters, normalized, are the piece (ground truth); and
transformers' fast `AlbertTokenizer` (the vocabulary converted as HF's `AlbertConverter` does,
as in tests/test_tokenizer.py) `offset_mapping`, equal to ours but for these conventions (the
last row: e + U+0301, whose mark is dropped, or joined into é when accents are kept):

| case | ours | HF's |
|---|---|---|
| a `▁` alone (no characters of its own) | (-1, -1) | the next character's |
| `` or '' (one `"`) | both characters | the second only |
| a character normalization drops after a piece's last or joins to it | the piece's | none |
"""

from __future__ import annotations

import types
import unicodedata

import jax
import numpy as np
import pytest

from albert_jax import AlbertConfig, pipeline
from albert_jax.heads import create_module, init_params
from albert_jax.offsets import SPIECE_UNDERLINE
from albert_jax.tokenizer import AlbertTokenizer, bundled_model_path
from albert_jax.weights import converted
from tests.runs import TINY

# Texts whose every piece HF's fast tokenizer cuts where we do (its lone `▁` aside).
TEXTS = [
  "한국어 텍스트",
  "한국어 텍스트 한국어",  # the same word twice: each piece where it is
  "a한국어 b 서울은 한국의 수도",
  "\u1112\u1161\u11ab 한",  # conjoining jamo in the text: SentencePiece composes them to 한
  "ﬁne ﬂowers, ﬀ and ﬃ",
  "ＦＵＬＬＷＩＤＴＨ ｌｅｔｔｅｒｓ １２３ Ａ１",
  "x\u0301\u0327y combining marks inside a word",
  "straße STRASSE ß",
  "Ångström \u212b Ω \u2126 K \u212a",  # ANGSTROM SIGN, OHM SIGN, KELVIN SIGN
  "Ⅻ ⅻ Ⅳ roman, ² ① superscripts",
  "豈 更 車 \uf900\uf901 가 compatibility ideographs",
  "emoji 👨\u200d👩\u200d👧 family 👍🏽 end",
  "ΟΔΟΣ ΣΙΣΥΦΟΣ and aΣ b",
  "a [CLS] b glued[MASK]mask <unk>x",
]


@pytest.fixture(scope="module")
def tok():
  return AlbertTokenizer()


@pytest.fixture(scope="module")
def hf_keep():
  """{keep_accents: HF's fast tokenizer}."""
  transformers = pytest.importorskip("transformers")
  from transformers.convert_slow_tokenizer import AlbertConverter

  converter = AlbertConverter(types.SimpleNamespace(vocab_file=str(bundled_model_path())))
  out = {
    keep: transformers.AlbertTokenizer(
      vocab=converter.vocab(converter.proto),
      _spm_precompiled_charsmap=converter.proto.normalizer_spec.precompiled_charsmap,
      keep_accents=keep,
    )
    for keep in (False, True)
  }
  assert all(fast.is_fast for fast in out.values())
  return out


@pytest.fixture(scope="module")
def hf(hf_keep):
  return hf_keep[False]


def hf_offsets(hf, text: str) -> tuple[list[int], list[tuple[int, int]]]:
  enc = hf(text, add_special_tokens=False, return_offsets_mapping=True)
  return enc["input_ids"], [tuple(span) for span in enc["offset_mapping"]]


def test_hangul_words_where_they_are(tok):
  """The reported bug: the first word's piece was put on the second word (4-7)."""
  pieces, offsets = tok.tokenize_with_offsets("한국어 텍스트")
  assert pieces == ["▁", "한국어", "▁", "텍스트"]
  assert offsets.tolist() == [[-1, -1], [0, 3], [-1, -1], [4, 7]]


@pytest.mark.parametrize("text", TEXTS)
def test_each_piece_is_its_characters_normalized(tok, text):
  """Pieces cut out of one character (ﬃ -> `▁f` `fi`) share its span and are checked together;
  lowercasing is compared case-folded (a word-final Σ is ς in the text, σ alone)."""
  pieces, offsets = tok.tokenize_with_offsets(text)
  assert pieces == tok.tokenize(text)
  spans: dict[tuple[int, int], str] = {}
  for piece, (start, end) in zip(pieces, offsets.tolist(), strict=True):
    if piece == SPIECE_UNDERLINE:
      assert start == end == -1
    else:
      spans[start, end] = spans.get((start, end), "") + piece.lstrip(SPIECE_UNDERLINE)
  starts, ends = np.array(list(spans)).T
  assert (starts[1:] >= ends[:-1]).all() and (starts < ends).all()  # in order, apart
  for (start, end), joined in spans.items():
    written = text[start:end]
    if written in tok.all_special_tokens:
      assert joined == written
      continue
    # our preprocessing, then SentencePiece's NFKC (Hangul jamo -> syllables, ﬁ -> fi...)
    got = unicodedata.normalize("NFKC", tok._preprocess(written)).casefold()
    assert got == unicodedata.normalize("NFKC", joined).casefold(), (joined, written)


@pytest.mark.parametrize("keep_accents", [False, True])
@pytest.mark.parametrize("text", TEXTS)
def test_offsets_match_hf_fast_tokenizer(hf_keep, text, keep_accents):
  tok = AlbertTokenizer(keep_accents=keep_accents)
  pieces, offsets = tok.tokenize_with_offsets(text)
  ids, want = hf_offsets(hf_keep[keep_accents], text)
  assert tok.convert_tokens_to_ids(pieces) == ids
  got = [tuple(span) for span in offsets.tolist()]
  assert len(got) == len(want)
  for piece, g, w in zip(pieces, got, want, strict=True):
    if piece == SPIECE_UNDERLINE:  # HF: the next character's (w); ours: none
      assert g == (-1, -1) and w[1] == w[0] + 1
    else:
      assert g == w, (piece, text[g[0] : g[1]], text[w[0] : w[1]])


def test_where_hf_offsets_differ_as_documented(tok, hf, hf_keep):
  """The module docstring's table, one case each."""
  text = "``a'' ｶﾞ e\u0301"
  pieces, offsets = tok.tokenize_with_offsets(text)
  ids, want = hf_offsets(hf, text)
  assert tok.convert_tokens_to_ids(pieces) == ids
  got = [tuple(span) for span in offsets.tolist()]
  assert pieces == ["▁", '"', "a", '"', "▁", "カ", "▁", "e"]
  assert got[0] == (-1, -1) and want[0] == (1, 2)  # ▁ alone: HF gives the next character
  assert (got[1], want[1]) == ((0, 2), (1, 2))  # ``: HF's is the second backtick only
  assert (got[3], want[3]) == ((3, 5), (4, 5))  # ''
  # ｶﾞ: NFKD gives カ + U+3099 (a combining mark, dropped); e + U+0301 likewise
  assert (got[5], want[5]) == ((6, 8), (6, 7))
  assert (got[7], want[7]) == ((9, 11), (9, 10))
  # keeping accents, SentencePiece's NFKC joins e + U+0301 into é: HF's span is the e
  pieces, offsets = AlbertTokenizer(keep_accents=True).tokenize_with_offsets("e\u0301")
  assert (pieces, offsets.tolist()) == (["▁", "é"], [[-1, -1], [0, 2]])
  assert hf_offsets(hf_keep[True], "e\u0301")[1][1] == (0, 1)


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
  """A random-weight tiny question-answering model, converted."""
  path = tmp_path_factory.mktemp("qa")
  config = AlbertConfig(**TINY)
  params = init_params(create_module(config, "question_answering"), jax.random.key(3))
  meta = {"head": "question_answering", "num_labels": None, "id2label": None}
  converted.write_converted(
    path, converted.Converted(config, params, "question_answering", AlbertTokenizer(), meta)
  )
  return pipeline("question-answering", model=path)


@pytest.mark.parametrize(
  "context",
  ["한국어 텍스트", "서울은 한국의 수도 입니다", "ﬁne Ｔｏｋｙｏ Ⅻ 豈 👨\u200d👩\u200d👧 x"],
)
def test_question_answering_answers_are_whole_words(reader, context):
  """Every answer the model can give (top_k past their number): each a run of the context's
  words, each run once; with the old alignment a Hangul word's answer was the next word."""
  words = context.split()
  runs = {" ".join(words[a:b]) for a in range(len(words)) for b in range(a + 1, len(words) + 1)}
  answers = reader(question="what?", context=context, top_k=100)
  for a in answers:
    assert context[a["start"] : a["end"]] == a["answer"]
  assert sorted(a["answer"] for a in answers) == sorted(runs)
