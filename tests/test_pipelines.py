"""fill-mask and features against HF PyTorch ALBERT on a converted random model (tiny widths,
the real 30000-piece vocabulary so the bundled tokenizer's ids are valid)."""

import json

import numpy as np
import pytest
import torch

from albert_jax import convert, fill_mask, from_pretrained
from albert_jax.data import batching
from albert_jax.errors import UserError
from albert_jax.features import extract_features, load_features
from albert_jax.features import main as features_main
from albert_jax.fill_mask import FillMask
from albert_jax.weights.converted import save_params
from tests.reference import hf_model
from tests.test_model import SMALL, TOL

TINY = dict(SMALL, vocab_size=30000, num_hidden_layers=2, num_hidden_groups=1)
TEXTS = [
  "Hello I'm a [MASK] model.",
  "The capital of France is [MASK], and it is a very large city in Europe.",
  "[MASK] went up the [MASK] to fetch a pail of water.",
  "Paris is [MASK].",
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """A random AlbertForPreTraining (MLM, SOP and pooler), converted by the CLI."""
  root = tmp_path_factory.mktemp("pipelines")
  ref = hf_model("pretraining", seed=2, **TINY)
  with torch.no_grad():  # a peaked output distribution, so scores are far from uniform
    ref.predictions.bias.normal_(0.0, 3.0)
  ref.save_pretrained(root / "hf")
  convert.main(["c", "--source", str(root / "hf"), "--output", str(root / "out")])
  return ref, root / "out"


@pytest.fixture(scope="module")
def fill(converted):
  return FillMask(
    from_pretrained(converted[1], head="masked_lm", scan_layers=False), top_k=5, batch_size=4
  )


def hf_top_k(ref, ids, k):
  """HF's logits on the same ids, unpadded, one text at a time: softmax, top k per mask."""
  with torch.no_grad():
    logits = ref(torch.tensor([ids])).prediction_logits[0]
  masks = [p for p, i in enumerate(ids) if i == 4]
  probs = torch.softmax(logits[masks], dim=-1)
  scores, tokens = probs.topk(k, dim=-1)
  return scores.numpy(), tokens.numpy()


def test_fill_mask_matches_hf_logits(converted, fill):
  ref, _ = converted
  results = fill(TEXTS)  # one batched call: padded to the batch's length bucket
  worst, top = 0.0, 0.0
  for text, result in zip(TEXTS, results, strict=True):
    ids = fill.model.tokenizer(text)["input_ids"]
    scores, tokens = hf_top_k(ref, ids, 5)
    per_mask = result if len(scores) > 1 else [result]
    assert len(per_mask) == len(scores)
    for candidates, want_scores, want_tokens in zip(per_mask, scores, tokens, strict=True):
      assert [c["token"] for c in candidates] == want_tokens.tolist(), text
      got = np.array([c["score"] for c in candidates])
      np.testing.assert_allclose(got, want_scores, rtol=1e-4, atol=1e-6)
      worst = max(worst, float(np.abs(got - want_scores).max()))
      top = max(top, float(want_scores[0]))
  print(f"fill-mask: top score up to {top:.3f}, max abs score diff vs HF {worst:.2e}")
  assert worst <= TOL and top > 0.01  # the check is not on a flat distribution


def test_fill_mask_fields_follow_hf(fill):
  tokenizer = fill.model.tokenizer
  one = fill(TEXTS[0])
  assert len(one) == 5 and set(one[0]) == {"score", "token", "token_str", "sequence"}
  assert [c["score"] for c in one] == sorted((c["score"] for c in one), reverse=True)
  for c in one:
    assert c["token_str"] == tokenizer.decode([c["token"]])
    ids = tokenizer(TEXTS[0])["input_ids"]
    ids[ids.index(tokenizer.mask_token_id)] = c["token"]
    assert c["sequence"] == tokenizer.decode(ids, skip_special_tokens=True)
    assert "[CLS]" not in c["sequence"] and "[MASK]" not in c["sequence"]
  two = fill(TEXTS[2], top_k=3)  # several masks: a list per mask, the other mask kept
  assert len(two) == 2 and all(len(row) == 3 for row in two)
  for row in two:
    for c in row:
      assert c["sequence"].startswith("[CLS]") and c["sequence"].count("[MASK]") == 1
  # A text alone equals the same text in a padded batch.
  alone = fill(TEXTS[3])
  batched = fill(TEXTS)[3]
  assert [c["token"] for c in alone] == [c["token"] for c in batched]
  np.testing.assert_allclose([c["score"] for c in alone], [c["score"] for c in batched], rtol=1e-5)


def test_fill_mask_compiles_once_per_length_bucket(fill):
  first = ["A [MASK] b c d e f.", "A longer [MASK] text here, with more words in it."]
  second = ["Another [MASK] one is here now.", "And [MASK] more words than that, yes."]
  lengths = [len(fill.model.tokenizer(t)["input_ids"]) for t in first + second]
  assert len(set(lengths)) == 4 and batching.choose_buckets(lengths, max_length=512) == (16,)
  before = fill._top_k._cache_size()
  fill(first)
  after_first = fill._top_k._cache_size()
  fill(second)
  assert fill._top_k._cache_size() == after_first <= before + 1


def test_fill_mask_errors(fill, converted, tmp_path):
  with pytest.raises(ValueError, match=r"No \[MASK\] in text 'no mask here'"):
    fill([TEXTS[0], "no mask here"])
  base = tmp_path / "base"
  model = from_pretrained(converted[1], head="base")
  save_params(base, model.params, model.config, "base")
  with pytest.raises(ValueError, match="predictions/.*for head 'masked_lm'"):
    fill_mask.main(["f", "--model", str(base), "Hello [MASK]."])


def test_fill_mask_cli_json(converted, fill, capsys):
  assert (
    fill_mask.main(
      ["f", "--model", str(converted[1]), "--top_k", "3", "--json", TEXTS[0], TEXTS[2]]
    )
    == 0
  )
  printed = json.loads(capsys.readouterr().out)
  api = fill([TEXTS[0], TEXTS[2]], top_k=3)
  assert [[c["token"] for c in r] for r in printed[0:1]] == [[c["token"] for c in api[0]]]
  assert [[c["token"] for c in row] for row in printed[1]] == [
    [c["token"] for c in row] for row in api[1]
  ]
  fill_mask.main(["f", "--model", str(converted[1]), TEXTS[0]])
  assert TEXTS[0] in capsys.readouterr().out


def test_features_match_hf_and_are_written_atomically(converted, tmp_path, capsys):
  ref, out = converted
  texts = [
    "hello world",
    "",
    "a somewhat longer sentence about the weather in paris today",
    "short one",
  ]
  (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
  feats = tmp_path / "feats.npz"
  argv = [
    "x",
    "--model",
    str(out),
    "--input",
    str(tmp_path / "texts.txt"),
    "--output",
    str(feats),
    "--batch_size",
    "3",
    "--pooled",
  ]
  assert features_main(argv) == 0
  assert "4 texts" in capsys.readouterr().out
  got = load_features(feats)
  with np.load(feats) as data:
    assert sorted(data) == ["input_ids", "last_hidden_state", "offsets", "pooler_output"]
    assert data["offsets"][-1] == data["last_hidden_state"].shape[0] == data["input_ids"].size
  worst = 0.0
  tokenizer = from_pretrained(out, head="base").tokenizer
  for i, text in enumerate(texts):
    ids = tokenizer(text)["input_ids"]
    assert got.input_ids[i].tolist() == ids
    with torch.no_grad():
      theirs = ref.albert(torch.tensor([ids]))
    worst = max(
      worst,
      float(np.abs(got.last_hidden_state[i] - theirs.last_hidden_state[0].numpy()).max()),
      float(np.abs(got.pooler_output[i] - theirs.pooler_output[0].numpy()).max()),
    )
  print(f"features: max abs diff vs HF {worst:.2e}")
  assert worst <= TOL

  before = feats.read_bytes()
  with pytest.raises(UserError, match="already exists; pass --overwrite"):
    features_main(argv)
  assert feats.read_bytes() == before
  assert features_main([*argv[:-1], "--max_length", "4", "--overwrite"]) == 0  # not pooled
  short = load_features(feats)
  assert short.pooler_output is None and max(len(ids) for ids in short.input_ids) == 4
  assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.npz", "texts.txt"]


def test_features_need_a_pooler_for_pooled_output(tmp_path):
  ref = hf_model("masked_lm", **SMALL)  # HF's AlbertForMaskedLM has no pooler
  ref.save_pretrained(tmp_path / "hf")
  (tmp_path / "t.txt").write_text("hello\n")
  out = tmp_path / "f.npz"
  with pytest.raises(ValueError, match=r"no \['pooler/bias', 'pooler/kernel'\] for head 'base'"):
    features_main(
      [
        "x",
        "--model",
        str(tmp_path / "hf"),
        "--input",
        str(tmp_path / "t.txt"),
        "--output",
        str(out),
        "--pooled",
      ]
    )
  assert not out.exists()
  model = from_pretrained(tmp_path / "hf", head="base", add_pooling_layer=False, strict=True)
  feats = extract_features(model, ["hello"], progress=False)
  assert feats.last_hidden_state[0].shape == (3, SMALL["hidden_size"])
