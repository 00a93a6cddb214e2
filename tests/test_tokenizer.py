"""AlbertTokenizer against HF transformers' AlbertTokenizer and the checked vocabulary facts.

Two HF references, both `transformers.AlbertTokenizer`:
- `bare`: `from_pretrained(d)` with `d` holding only the model as `spiece.model`.
- `converted`: given the vocabulary as HF's slow-to-fast `AlbertConverter` scores it (pieces
  ending in a digit and a comma made 100 nats less likely, HF's stand-in for the slow
  tokenizer's re-split) and the model's normalization table.

Why two: loading a bare `spiece.model`, transformers 5.x makes the model's user-defined pieces
( ) " - . – £ € added tokens, so the text is cut at them and the word after one gets a new `▁`
("well-known" -> ▁well - ▁known, where SentencePiece gives ▁well - known), and it has no
digit+comma rule ("in 1990," -> the single piece ▁1990,). Neither is how the released models
were fed. Text without those cases is compared with both; text with them with `converted`, with
SentencePiece itself and with literal pieces.
"""

from __future__ import annotations

import pickle
import random
import shutil
import types

import numpy as np
import pytest
import sentencepiece as spm

from albert_jax.tokenizer import AlbertTokenizer, bundled_model_path

FIELDS = ("input_ids", "token_type_ids", "attention_mask")

# Text on which SentencePiece, HF's converted tokenizer and HF's bare-spiece loading agree.
COMMON = [
  "this is a test",
  "Hello I'm a [MASK] model.",
  "i was born in 92000, and this is falsé.",
  "The price was 1,000,000 dollars and 92000, not more.",
  "Crème brûlée, naïve café, Ångström, Zürich and São Paulo!",
  "He said ``hello'' and left; she said ''goodbye``.",
  "Punctuation: commas, semicolons; colons: questions? Yes! Wait...",
  "tabs\tand\nnewlines   and    spaces\r\n  everywhere  ",
  "   leading and trailing spaces   ",
  "Unicode: Ελληνικά κείμενο, русский текст, 日本語のテキスト, emoji 😀!",
  "ﬁne ligatures ① ② and superscripts x² y³ straße",
  "[MASK] at the start, in the [MASK] middle and at the end [MASK]",
  "glued[MASK]mask and [CLS] [SEP] <pad> <unk> written in the text",
  "UPPER CASE and MiXeD cAsE words",
  "",
]
COMMON_PAIRS = [
  ("What is ALBERT?", "A lite BERT for self supervised learning of language representations."),
  ("Is it raining?", "No."),
  ("Crème brûlée [MASK] good.", "tabs\tand  spaces"),
]
# Text where HF's bare-spiece loading differs from SentencePiece (see the module docstring).
GLUED = [
  "well-known state-of-the-art (SOTA) models",
  "The U.S. economy grew 2.5% in 2019, 2020, and 2021.",
  "In 1990, 1991, 2000, 2010, he moved.",
  'I paid £5 and €3 for "cheap" items (really).',
  "e.g. x–y and example.com/page-1",
]
PARAGRAPH = (
  "ALBERT uses a factorized embedding parameterization and cross layer parameter sharing, "
  "which cut its parameters to a fraction of BERT's; a sentence order prediction loss "
  "replaces next sentence prediction. In its year, it set new results on GLUE, RACE and SQuAD. "
)
LONG = PARAGRAPH * 20


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("hf_albert")
  shutil.copy(bundled_model_path(), d / "spiece.model")
  return d


@pytest.fixture(scope="module")
def ours():
  return {keep: AlbertTokenizer(keep_accents=keep) for keep in (False, True)}


@pytest.fixture(scope="module")
def refs(model_dir):
  transformers = pytest.importorskip("transformers")
  from transformers.convert_slow_tokenizer import AlbertConverter

  converter = AlbertConverter(types.SimpleNamespace(vocab_file=str(model_dir / "spiece.model")))
  vocab = converter.vocab(converter.proto)
  charsmap = converter.proto.normalizer_spec.precompiled_charsmap
  out = {}
  for keep in (False, True):
    out["bare", keep] = transformers.AlbertTokenizer.from_pretrained(model_dir, keep_accents=keep)
    out["converted", keep] = transformers.AlbertTokenizer(
      vocab=vocab, _spm_precompiled_charsmap=charsmap, keep_accents=keep
    )
  return out


def hf_call(ref, *args, **kwargs):
  out = ref(*args, return_token_type_ids=True, return_attention_mask=True, **kwargs)
  return {name: out[name] for name in FIELDS}


def assert_same(ours_out, hf_out):
  assert set(ours_out) == set(FIELDS)
  for name in FIELDS:
    if isinstance(ours_out[name], np.ndarray):
      np.testing.assert_array_equal(ours_out[name], hf_out[name], err_msg=name)
    else:
      assert ours_out[name] == hf_out[name], name


# --- facts ---------------------------------------------------------------------------------------


def test_bundled_model_and_special_tokens():
  tok = AlbertTokenizer()
  assert bundled_model_path().is_file()
  assert tok.vocab_size == len(tok) == len(tok.get_vocab()) == 30000
  ids = (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id)
  assert ids == (0, 1, 2, 3, 4)
  tokens = (tok.pad_token, tok.unk_token, tok.cls_token, tok.sep_token, tok.mask_token)
  assert tokens == ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")
  assert sorted(tok.all_special_ids) == [0, 1, 2, 3, 4]
  assert tok.convert_ids_to_tokens(tok.all_special_ids) == tok.all_special_tokens


def test_checked_facts_from_the_vocab_readme(ours):
  tok, keep = ours[False], ours[True]
  assert tok.encode("this is a test", add_special_tokens=False) == [48, 25, 21, 1289]
  falsé = "i was born in 92000, and this is falsé."
  expected = [31, 23, 386, 19, 561, 3050, 15, 17, 48, 25, 8256, 18, 1, 9]
  assert keep.encode(falsé, add_special_tokens=False) == expected
  assert keep.tokenize(falsé)[4:7] == ["▁9", "2000", ","]
  assert keep.tokenize(falsé)[-4:] == ["▁fal", "s", "é", "."]
  assert tok.encode("Hello I'm a [MASK] model.") == [2, 10975, 31, 22, 79, 21, 4, 1061, 9, 3]
  pieces = {
    "▁model": 1061,
    "▁modeling": 12807,
    "▁modelling": 23089,
    "▁runway": 8014,
    "▁lawyer": 3672,
    "▁waitress": 13678,
    "▁janitor": 29477,
  }
  assert tok.convert_tokens_to_ids(list(pieces)) == list(pieces.values())
  assert tok.convert_ids_to_tokens(list(pieces.values())) == list(pieces)
  assert tok.convert_tokens_to_ids("▁model") == 1061
  assert tok.convert_tokens_to_ids("no such piece") == tok.unk_token_id


# --- against HF ----------------------------------------------------------------------------------


@pytest.mark.parametrize("keep_accents", [False, True])
@pytest.mark.parametrize("ref_name", ["bare", "converted"])
def test_texts_match_hf(ours, refs, ref_name, keep_accents):
  tok, ref = ours[keep_accents], refs[ref_name, keep_accents]
  for text in COMMON:
    assert tok.tokenize(text) == ref.tokenize(text), text
    assert_same(tok(text), hf_call(ref, text))
  for a, b in COMMON_PAIRS:
    assert_same(tok(a, b), hf_call(ref, a, b))
    assert tok.encode(a, b, add_special_tokens=False) == ref.encode(a, b, add_special_tokens=False)
    assert_same(tok(a, b, add_special_tokens=False), hf_call(ref, a, b, add_special_tokens=False))


@pytest.mark.parametrize("keep_accents", [False, True])
def test_glued_punctuation_and_number_commas_match_converted_hf(ours, refs, keep_accents):
  tok, ref = ours[keep_accents], refs["converted", keep_accents]
  for text in GLUED:
    assert tok.tokenize(text) == ref.tokenize(text), text
    assert_same(tok(text), hf_call(ref, text))
  assert_same(tok(GLUED[0], GLUED[1]), hf_call(ref, GLUED[0], GLUED[1]))


def test_glued_punctuation_and_number_commas_as_sentencepiece(ours):
  tok = ours[False]
  sp = spm.SentencePieceProcessor(model_file=str(bundled_model_path()))
  for text in ("well-known state-of-the-art (sota) models", 'i paid £5 for "cheap" items.'):
    assert tok.tokenize(text) == sp.encode(text, out_type=str)
  assert tok.tokenize("well-known (SOTA)") == ["▁well", "-", "known", "▁", "(", "s", "ota", ")"]
  assert sp.encode("dates: 1990, 2000,", out_type=str) == ["▁dates", ":", "▁1990,", "▁2000,"]
  assert tok.tokenize("Dates: 1990, 2000,") == ["▁dates", ":", "▁1990", ",", "▁2000", ","]


@pytest.mark.parametrize("keep_accents", [False, True])
def test_random_text_matches_converted_hf(ours, refs, keep_accents):
  # Words and separators, not random characters: on a tie between two segmentations (runs of
  # one letter, "xfff") tokenizers' unigram and SentencePiece pick differently, and a few
  # normalization corner cases differ (see the report); neither is what this checks.
  words = COMMON[0].split() + GLUED[0].split() + ["1,000", "92000,", "1990,", "[MASK]", "<pad>"]
  words += ["(", ")", "-", "–", '"', "''", "``", "£5", "Ω", "日本語", "😀", "ﬁne", "①", "x²"]
  words += ["café", "ÅNGSTRÖM", "straße", "U.S.", "e.g.", "...", "?", ",", "\u00a0", "\u3000"]
  seps = [" ", " ", "", "\t", "\n", "   "]
  rng = random.Random(0)
  tok, ref = ours[keep_accents], refs["converted", keep_accents]
  for _ in range(150):
    text = "".join(rng.choice(words) + rng.choice(seps) for _ in range(rng.randint(0, 12)))
    assert tok.encode(text) == ref.encode(text), repr(text)


def test_long_text_truncation(ours, refs):
  tok, ref = ours[False], refs["bare", False]
  assert len(tok.tokenize(LONG)) > 512
  out = tok(LONG, truncation=True, max_length=512)
  assert len(out["input_ids"]) == 512 and out["input_ids"][-1] == tok.sep_token_id
  assert_same(out, hf_call(ref, LONG, truncation=True, max_length=512))
  assert_same(tok(LONG, truncation=True), out)  # model_max_length is 512
  question = "What does ALBERT share across layers?"
  for strategy in ("longest_first", "only_first"):
    kwargs = {"truncation": strategy, "max_length": 384}
    assert_same(tok(LONG, question, **kwargs), hf_call(ref, LONG, question, **kwargs))
  kwargs = {"truncation": "only_second", "max_length": 384}
  assert_same(tok(question, LONG, **kwargs), hf_call(ref, question, LONG, **kwargs))
  kwargs = {"truncation": True, "max_length": 512}
  assert_same(tok(LONG, LONG, **kwargs), hf_call(ref, LONG, LONG, **kwargs))
  assert len(tok(LONG)["input_ids"]) > 512  # no truncation unless asked


@pytest.mark.parametrize("strategy", ["longest_first", "only_first", "only_second"])
def test_pair_truncation_strategies_match_hf(ours, refs, strategy):
  tok, ref = ours[False], refs["bare", False]
  a, b = "one two three four five six seven", "eight nine ten"
  for first, second in ((a, b), (b, a), (b, b)):
    total = len(tok.encode(first, second))
    for max_length in range(3, total + 2):
      kwargs = {"truncation": strategy, "max_length": max_length}
      try:
        expected = hf_call(ref, first, second, **kwargs)
      except Exception:  # HF: "Sequence to truncate too short to respect the provided max_length"
        with pytest.raises(ValueError, match=f"truncation='{strategy}' cannot fit"):
          tok(first, second, **kwargs)
        continue
      assert_same(tok(first, second, **kwargs), expected)
      assert len(expected["input_ids"]) == min(total, max_length)


@pytest.mark.parametrize("strategy", [True, "longest_first", "only_first"])
def test_single_truncation_matches_hf(ours, refs, strategy):
  tok, ref = ours[False], refs["bare", False]
  text = "one two three four five six seven"
  for max_length in range(2, 12):
    kwargs = {"truncation": strategy, "max_length": max_length}
    assert_same(tok(text, **kwargs), hf_call(ref, text, **kwargs))


def test_batch_padding_matches_hf(ours, refs):
  tok, ref = ours[False], refs["bare", False]
  batch = ["short", "a somewhat longer sentence, with a comma.", "", "Hello I'm a [MASK] model."]
  for kwargs in (
    {"padding": True},
    {"padding": "longest"},
    {"padding": "max_length", "max_length": 24},
    {"padding": "max_length", "truncation": True, "max_length": 8},
    {"padding": "longest", "truncation": "longest_first", "max_length": 6},
    {},
  ):
    assert_same(tok(batch, **kwargs), hf_call(ref, batch, **kwargs))
  out = tok(batch, padding=True)
  assert out["input_ids"][0][-1] == tok.pad_token_id and out["attention_mask"][0][-1] == 0
  firsts, seconds = [a for a, _ in COMMON_PAIRS], [b for _, b in COMMON_PAIRS]
  expected = hf_call(ref, firsts, seconds, padding=True)
  assert_same(tok(firsts, seconds, padding=True), expected)
  assert_same(tok(COMMON_PAIRS, padding=True), expected)
  with_empty = [("Is it raining?", ""), ("", "")]
  assert_same(tok(with_empty, padding=True), hf_call(ref, with_empty, padding=True))
  kwargs = {"padding": "max_length", "truncation": "only_second", "max_length": 12}
  assert_same(tok(COMMON_PAIRS[:1], **kwargs), hf_call(ref, COMMON_PAIRS[:1], **kwargs))


def test_single_text_padding_matches_hf(ours, refs):
  tok, ref = ours[False], refs["bare", False]
  assert_same(tok("one two", padding=True), hf_call(ref, "one two", padding=True))
  kwargs = {"padding": "max_length", "max_length": 10}
  assert_same(tok("one two", "three", **kwargs), hf_call(ref, "one two", "three", **kwargs))


def test_numpy_tensors(ours, refs):
  tok, ref = ours[False], refs["bare", False]
  batch = ["short", "a somewhat longer sentence here."]
  out = tok(batch, padding=True, return_tensors="np")
  assert all(out[name].dtype == np.int32 and out[name].shape == (2, 8) for name in FIELDS)
  assert_same(out, hf_call(ref, batch, padding=True, return_tensors="np"))
  single = tok("one two", return_tensors="np")
  assert single["input_ids"].shape == (1, 4)
  assert_same(single, hf_call(ref, "one two", return_tensors="np"))


def test_decode_matches_hf(ours, refs):
  tok = ours[False]
  for ref_name, texts in (("bare", COMMON), ("converted", GLUED)):
    ref = refs[ref_name, False]
    for text in texts:
      ids = tok.encode(text)
      for skip in (False, True):
        assert tok.decode(ids, skip_special_tokens=skip) == ref.decode(
          ids, skip_special_tokens=skip
        )
    ids = tok.encode(*COMMON_PAIRS[0])
    assert tok.decode(ids) == ref.decode(ids)
  ids = tok.encode("Hello I'm a [MASK] model.")
  assert tok.decode(ids) == "[CLS] hello i'm a[MASK] model.[SEP]"
  assert tok.decode(ids, skip_special_tokens=True) == "hello i'm a model."


def test_decode_round_trip(ours):
  tok = ours[False]
  text = "hello world, this is a test of 1,000 words (or so) in 2019."
  ids = tok.encode(text)
  assert tok.decode(ids, skip_special_tokens=True) == text
  assert tok.decode(np.asarray(ids), skip_special_tokens=True) == text
  assert tok.batch_decode([ids, ids[:3]], skip_special_tokens=True) == [text, "hello world"]
  assert tok.decode(1061) == "model"
  assert tok.convert_tokens_to_string(tok.tokenize(text)) == text


# --- files ----------------------------------------------------------------------------------------


def test_save_pretrained_loads_here_and_in_hf(ours, tmp_path):
  transformers = pytest.importorskip("transformers")
  text = "Crème brûlée, 1990, [MASK] well-known."
  paths = ours[True].save_pretrained(tmp_path / "saved")
  assert sorted(p.rsplit("/", 1)[-1] for p in paths) == ["spiece.model", "tokenizer_config.json"]
  assert (tmp_path / "saved" / "spiece.model").read_bytes() == bundled_model_path().read_bytes()
  mine = AlbertTokenizer.from_pretrained(tmp_path / "saved")
  assert mine.keep_accents and mine.encode(text) == ours[True].encode(text)
  hf = transformers.AlbertTokenizer.from_pretrained(tmp_path / "saved")
  assert hf.keep_accents
  assert hf.encode("Crème brûlée [MASK] model.") == mine.encode("Crème brûlée [MASK] model.")


def test_from_pretrained_file_and_google_name(ours, tmp_path):
  text = "Hello I'm a [MASK] model."
  shutil.copy(bundled_model_path(), tmp_path / "30k-clean.model")
  assert AlbertTokenizer.from_pretrained(tmp_path).encode(text) == ours[False].encode(text)
  from_file = AlbertTokenizer.from_pretrained(tmp_path / "30k-clean.model", keep_accents=True)
  assert from_file.keep_accents and from_file.encode(text) == ours[False].encode(text)
  (path,) = ours[False].save_vocabulary(tmp_path, filename_prefix="x")
  assert path.endswith("x-spiece.model")


def test_pickle_round_trip(ours):
  tok = pickle.loads(pickle.dumps(ours[True]))
  assert tok.keep_accents and tok.encode(COMMON[2]) == ours[True].encode(COMMON[2])


def google_preprocess(text: str) -> str:
  """Google's `tokenization.preprocess_text` (lower=True), transcribed: whitespace collapsed,
  NFKD with combining marks dropped, lowercased; no quote replacement."""
  import unicodedata

  text = " ".join(text.strip().split())
  text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
  return text.lower()


def test_quote_preprocessing_google_and_hf(ours, refs):
  """`` and '': HF's rule (the default) makes them ", Google's data tokenizer keeps them, and
  SentencePiece makes `` the unknown piece."""
  text = "He said ``hello'' and left; she said ''goodbye``."
  google = AlbertTokenizer(replace_quotes=False)
  assert ours[False].encode(text) == refs["converted", False].encode(text)  # HF, the default
  assert ours[False].tokenize("``hi''") == ["▁", '"', "hi", '"']
  assert google.tokenize("``hi''") == ["▁", "``", "hi", "'", "'"]
  assert google.convert_tokens_to_ids(google.tokenize("``hi''"))[1] == google.unk_token_id
  sp = spm.SentencePieceProcessor(model_file=str(bundled_model_path()))
  for line in [*COMMON[:-1], PARAGRAPH]:  # no digit+comma pieces: SentencePiece alone decides
    if not any(c.isdigit() for c in line) and "[" not in line and "<" not in line:
      assert google.tokenize(line) == sp.encode(google_preprocess(line), out_type=str), line
  assert AlbertTokenizer().replace_quotes and not pickle.loads(pickle.dumps(google)).replace_quotes


# --- bad input ------------------------------------------------------------------------------------


def test_bad_model_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.model does not exist"):
    AlbertTokenizer(tmp_path / "missing.model")
  with pytest.raises(FileNotFoundError, match="missing.model does not exist"):
    AlbertTokenizer.from_pretrained(tmp_path / "missing.model")
  (tmp_path / "junk.model").write_bytes(b"not a model")
  with pytest.raises(ValueError, match="junk.model is not a SentencePiece model"):
    AlbertTokenizer(tmp_path / "junk.model")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no SentencePiece model in directory .*empty"):
    AlbertTokenizer.from_pretrained(tmp_path / "empty")
  with pytest.raises(ValueError, match="is a directory; use AlbertTokenizer.from_pretrained"):
    AlbertTokenizer(tmp_path / "empty")


def test_bad_arguments(ours):
  tok = ours[False]
  with pytest.raises(ValueError, match="max_length=1 is too small: a single text takes 2"):
    tok("one two", truncation=True, max_length=1)
  with pytest.raises(ValueError, match="max_length=2 is too small: a text pair takes 3"):
    tok("one", "two", truncation="longest_first", max_length=2)
  with pytest.raises(ValueError, match="truncation='only_second' needs a text pair"):
    tok("one two", truncation="only_second", max_length=8)
  with pytest.raises(ValueError, match="unknown padding strategy 'bogus'"):
    tok("one", padding="bogus")
  with pytest.raises(ValueError, match="unknown truncation strategy 'longest'"):
    tok("one", truncation="longest")
  with pytest.raises(ValueError, match="max_length=-1 must not be negative"):
    tok("one", truncation=True, max_length=-1)
  with pytest.raises(ValueError, match="return_tensors='pt' is not supported"):
    tok("one", return_tensors="pt")
  with pytest.raises(ValueError, match=r"lengths \[3, 5\]; pass padding=True"):
    tok(["one", "one two three"], return_tensors="np")
  with pytest.raises(ValueError, match="a batch of 2 texts needs text_pair as a list of 2"):
    tok(["one", "two"], ["three"])
  with pytest.raises(ValueError, match="token id 30000 is outside the vocabulary"):
    tok.decode([2, 30000])
  with pytest.raises(TypeError, match="expected a str, got int"):
    tok.tokenize(5)
