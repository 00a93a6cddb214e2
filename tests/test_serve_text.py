"""The SavedModel's in-graph tokenizer (`albert_jax.serve.text`) against `AlbertTokenizer`:
the same ids for every serving test text and pair, truncated alike, and the documented
exceptions (docs/serving.md) exactly as documented."""

import unicodedata

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from albert_jax.serve.text import GraphTokenizer  # noqa: E402
from albert_jax.tokenizer import AlbertTokenizer  # noqa: E402
from tests.serve_texts import PAIRS, TEXTS  # noqa: E402

# Unicode 16's OUTLINED LATIN CAPITAL LETTER A..Z: TF's ICU decomposes them (NFKD) to A..Z,
# a Python whose unicodedata is older does not know them (AlbertTokenizer: <unk>).
OUTLINED = range(0x1CCD6, 0x1CCF0)


@pytest.fixture(scope="module")
def tokenizers():
  tokenizer = AlbertTokenizer()
  return tokenizer, GraphTokenizer(tokenizer, max_length=512)


def ids(tokenizer, text):
  return tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))


def test_graph_ids_equal_the_tokenizer_on_every_serving_text(tokenizers):
  tokenizer, graph = tokenizers
  got = graph.tokenize(tf.constant(TEXTS)).to_list()
  for text, row in zip(TEXTS, got, strict=True):
    assert row == ids(tokenizer, text), repr(text)
  assert len(TEXTS) >= 30 and any(len(row) > 512 for row in got)  # one is cut in `encode`


@pytest.mark.parametrize("max_length", [64, 512])
def test_model_inputs_equal_the_tokenizer_for_texts_and_pairs(tokenizers, max_length):
  tokenizer, _ = tokenizers
  graph = GraphTokenizer(tokenizer, max_length=max_length)
  cases = [(TEXTS, None), ([a for a, _ in PAIRS], [b for _, b in PAIRS])]
  for texts, pairs in cases:
    got = graph.encode(tf.constant(texts), None if pairs is None else tf.constant(pairs))
    want = tokenizer(
      texts, pairs, truncation=True, max_length=max_length, padding=True, return_tensors="np"
    )
    for name in want:
      np.testing.assert_array_equal(got[name].numpy(), want[name], err_msg=name)


def test_every_character_up_to_u3000_is_tokenized_alike(tokenizers):
  """Each character between two letters (`a?b`: within a word, where lowercasing, accents and
  spaces act) for Latin, Greek, Cyrillic, the combining marks, punctuation and the spaces."""
  tokenizer, graph = tokenizers
  texts = [f"A{chr(c)}b" for c in range(0x3000) if not 0xD800 <= c < 0xE000]
  got = graph.tokenize(tf.constant(texts)).to_list()
  differ = [t for t, row in zip(texts, got, strict=True) if row != ids(tokenizer, t)]
  assert differ == []


def test_nul_characters_are_kept(tokenizers):
  """`tf.strings.lower` ends a string at U+0000; the graph lowercases around it."""
  tokenizer, graph = tokenizers
  texts = ["A\x00B c", "\x00", "x\x00\x00Y\x00", "[CLS]\x00[SEP]", "a\x01\x03b\x01\x02"]
  assert graph.tokenize(tf.constant(texts)).to_list() == [ids(tokenizer, t) for t in texts]


def test_outlined_letters_are_the_documented_exception(tokenizers):
  """The one difference: characters whose NFKD TF's ICU knows and this Python does not."""
  tokenizer, graph = tokenizers
  texts = [f"x{chr(c)}y" for c in OUTLINED]
  letters = [f"x{chr(ord('a') + k)}y" for k in range(len(OUTLINED))]
  got = graph.tokenize(tf.constant(texts)).to_list()
  assert got == [ids(tokenizer, t) for t in letters]  # as the newer Unicode decomposes them
  if tuple(map(int, unicodedata.unidata_version.split("."))) < (16,):
    assert all(ids(tokenizer, t) != row for t, row in zip(texts, got, strict=True))
