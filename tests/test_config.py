"""AlbertConfig: presets, HF config.json both ways, validation."""

import dataclasses
import json

import pytest
import transformers

from albert_jax import AlbertConfig

# Published values (google-research/albert model cards; ../shared/REFERENCE.md).
SIZES = {
  "base": (768, 12, 12, 3072),
  "large": (1024, 24, 16, 4096),
  "xlarge": (2048, 24, 16, 8192),
  "xxlarge": (4096, 12, 64, 16384),
}


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("version", [1, 2])
def test_presets_have_the_published_values(size, version):
  c = AlbertConfig.from_name(f"albert-{size}-v{version}")
  assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == SIZES[
    size
  ]
  assert (c.vocab_size, c.embedding_size, c.max_position_embeddings) == (30000, 128, 512)
  assert (c.num_hidden_groups, c.inner_group_num, c.type_vocab_size) == (1, 1, 2)
  assert c.hidden_act == "gelu_new" and c.layer_norm_eps == 1e-12
  dropout = 0.1 if version == 1 else 0.0
  assert c.hidden_dropout_prob == c.attention_probs_dropout_prob == dropout
  assert AlbertConfig.from_name(f"albert/albert-{size}-v{version}") == c


def test_unknown_preset_names_the_value():
  with pytest.raises(ValueError, match="'albert-huge-v3'.*albert-base-v1"):
    AlbertConfig.from_name("albert-huge-v3")


def test_hf_config_json_round_trip(tmp_path):
  ours = AlbertConfig.from_name("albert-base-v2", num_hidden_groups=2, inner_group_num=3)
  ours.to_json_file(tmp_path / "config.json")
  theirs = transformers.AlbertConfig.from_pretrained(tmp_path)
  for field in dataclasses.fields(AlbertConfig):
    assert getattr(theirs, field.name) == getattr(ours, field.name), field.name
  theirs.save_pretrained(tmp_path / "hf")
  assert AlbertConfig.from_json_file(tmp_path / "hf" / "config.json") == ours


def test_google_albert_config_gelu_means_tanh(tmp_path):
  # Google's albert_config.json (no model_type) says "gelu" for the tanh approximation.
  google = {
    "attention_probs_dropout_prob": 0,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0,
    "embedding_size": 128,
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 4096,
    "max_position_embeddings": 512,
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "num_hidden_groups": 1,
    "net_structure_type": 0,
    "gap_size": 0,
    "num_memory_blocks": 0,
    "inner_group_num": 1,
    "down_scale_factor": 1,
    "type_vocab_size": 2,
    "vocab_size": 30000,
  }
  (tmp_path / "albert_config.json").write_text(json.dumps(google))
  c = AlbertConfig.from_json_file(tmp_path / "albert_config.json")
  assert c.hidden_act == "gelu_new"
  assert dataclasses.replace(c, hidden_act="gelu_new") == AlbertConfig.from_name(
    "albert-large-v2", classifier_dropout_prob=c.classifier_dropout_prob
  )


@pytest.mark.parametrize(
  "kwargs,match",
  [
    (dict(hidden_size=100, num_attention_heads=16), "hidden_size=100.*num_attention_heads=16"),
    (dict(num_hidden_layers=5, num_hidden_groups=2), "num_hidden_layers=5.*num_hidden_groups=2"),
    (dict(hidden_act="gelu_old"), "hidden_act='gelu_old'"),
    (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob=1.5"),
    (dict(vocab_size=0), "vocab_size=0"),
  ],
)
def test_invalid_values_are_named(kwargs, match):
  with pytest.raises(ValueError, match=match):
    AlbertConfig(**kwargs)


def test_bad_json_file_is_named(tmp_path):
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(ValueError, match="config.json"):
    AlbertConfig.from_json_file(tmp_path / "config.json")
