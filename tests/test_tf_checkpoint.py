"""Google's TF1 checkpoints (plain, TF-Hub `module/`, `.tar.gz`) convert to the parameters the
HF route gives for the same values, SOP head included; damaged checkpoints are clear errors."""

import json
import shutil
import tarfile

import jax
import numpy as np
import pytest

from albert_jax import AlbertConfig, convert, from_pretrained
from albert_jax.tokenizer import bundled_model_path
from albert_jax.weights.hf import params_from_hf_state_dict
from albert_jax.weights.sources import load_source
from tests.reference import hf_model
from tests.test_model import SMALL as _SMALL

# A release ships 30k-clean.model, so its model takes the tokenizer's 30000 ids (a smaller
# vocabulary is refused at conversion: test_robust.py).
SMALL = {**_SMALL, "vocab_size": 30000}

# HF name -> (TF name, TF stores the transpose). Written from the table of the original release
# (REFERENCE.md), independently of albert_jax.weights.tf1.
LAYER_TF = {
  "attention.query": "attention_1/self/query",
  "attention.key": "attention_1/self/key",
  "attention.value": "attention_1/self/value",
  "attention.dense": "attention_1/output/dense",
  "ffn": "ffn_1/intermediate/dense",
  "ffn_output": "ffn_1/intermediate/output/dense",
}


def tf_variables(state):
  """The TF1 variables of an HF AlbertForPreTraining state dict."""
  out = {}
  for name, tensor in state.items():
    value = tensor.numpy()
    if name.startswith("predictions.decoder") or name.endswith("position_ids"):
      continue  # tied copies and buffers
    kind = name.rsplit(".", 1)[1]
    module = name.rsplit(".", 1)[0]
    if module.startswith("albert.embeddings.") and module.endswith("_embeddings"):
      out[f"bert/embeddings/{module.split('.')[-1]}"] = value
      continue
    if module == "predictions" and kind == "bias":
      out["cls/predictions/output_bias"] = value
      continue
    if module == "sop_classifier.classifier":
      out[f"cls/seq_relationship/output_{'weights' if kind == 'weight' else 'bias'}"] = value
      continue
    if module.startswith("albert.encoder.albert_layer_groups."):
      _, _, _, g, _, i, *rest = module.split(".")
      sub = ".".join(rest)
      scope = f"bert/encoder/transformer/group_{g}/inner_group_{i}/"
      scope += {"attention.LayerNorm": "LayerNorm", "full_layer_layer_norm": "LayerNorm_1"}.get(
        sub
      ) or LAYER_TF[sub]
    else:
      scope = {
        "albert.embeddings.LayerNorm": "bert/embeddings/LayerNorm",
        "albert.encoder.embedding_hidden_mapping_in": "bert/encoder/embedding_hidden_mapping_in",
        "albert.pooler": "bert/pooler/dense",
        "predictions.dense": "cls/predictions/transform/dense",
        "predictions.LayerNorm": "cls/predictions/transform/LayerNorm",
      }[module]
    if scope.endswith("LayerNorm") or scope.endswith("LayerNorm_1"):
      out[f"{scope}/{'gamma' if kind == 'weight' else 'beta'}"] = value
    else:
      out[f"{scope}/{'kernel' if kind == 'weight' else 'bias'}"] = (
        value.T if kind == "weight" else value
      )
  return out


def write_tf_checkpoint(directory, variables, prefix=""):
  """Writes `variables` with tf.compat.v1 Variables and a Saver, plus training state: a
  `global_step` and LAMB's `adam_m` / `adam_v` slots."""
  import tensorflow as tf

  rng = np.random.RandomState(0)
  everything = dict(variables)
  for name in list(variables)[:6]:
    for slot in ("adam_m", "adam_v"):
      everything[f"{name}/{slot}"] = rng.randn(*variables[name].shape).astype(np.float32)
  directory.mkdir(parents=True, exist_ok=True)
  graph = tf.Graph()
  with graph.as_default():
    tf_vars = [
      tf.compat.v1.Variable(value, name=prefix + name) for name, value in everything.items()
    ]
    tf_vars.append(tf.compat.v1.Variable(np.int64(125000), name="global_step"))
    saver = tf.compat.v1.train.Saver(tf_vars)
    with tf.compat.v1.Session(graph=graph) as session:
      session.run(tf.compat.v1.global_variables_initializer())
      saver.save(session, str(directory / "model.ckpt-best"), write_meta_graph=False)


def google_config():
  """albert_config.json as Google writes it: no model_type, "gelu" meaning the tanh GELU."""
  return {k: v for k, v in SMALL.items() if k != "hidden_act"} | {"hidden_act": "gelu"}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  """A Google-style release directory, the HF model holding the same values, and its params."""
  root = tmp_path_factory.mktemp("tf")
  ref = hf_model("pretraining", seed=5, **SMALL)
  variables = tf_variables(ref.state_dict())
  write_tf_checkpoint(root / "albert_small", variables)
  (root / "albert_small" / "albert_config.json").write_text(json.dumps(google_config()))
  shutil.copy(bundled_model_path(), root / "albert_small" / "30k-clean.model")
  expected = params_from_hf_state_dict(ref.state_dict(), AlbertConfig(**SMALL), "pretraining")
  return root, variables, expected


def assert_same_params(params, expected):
  got = jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]
  assert [p for p, _ in got] == [p for p, _ in jax.tree_util.tree_flatten_with_path(expected)[0]]
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), expected)


def test_tf_checkpoint_converts_to_the_hf_route_params(release, tmp_path, capsys):
  root, _, expected = release
  out = tmp_path / "out"
  assert convert.main(["c", "--model", str(root / "albert_small"), "--output", str(out)]) == 0
  printed = capsys.readouterr().out
  meta = json.loads((out / "albert_jax.json").read_text())
  assert meta["head"] == "pretraining" and meta["source_format"] == "tf"
  assert meta["heads_found"] == ["albert", "pooler", "predictions", "sop_classifier"]
  assert meta["tokenizer"] == "source"
  assert "sop_classifier" in printed and f"{meta['parameter_count']:,}" in printed
  model = from_pretrained(out)
  assert model.config == AlbertConfig(**SMALL)  # Google's "gelu" read as the tanh form
  assert_same_params(model.params, expected)
  # A checkpoint prefix works too, read straight into from_pretrained (no directory written).
  direct = from_pretrained(root / "albert_small" / "model.ckpt-best")
  assert_same_params(direct.params, expected)


def test_tf_hub_module_checkpoint_converts(release, tmp_path):
  _, variables, expected = release
  hub = tmp_path / "hub"
  write_tf_checkpoint(hub / "variables", variables, prefix="module/")
  (hub / "albert_config.json").write_text(json.dumps(google_config()))
  converted = load_source(hub)
  assert converted.metadata["source_format"] == "tf-hub-module"
  assert converted.metadata["tokenizer"] == "bundled"
  assert_same_params(converted.params, expected)


def test_tar_gz_of_the_release_converts(release, tmp_path):
  root, _, expected = release
  archive = tmp_path / "albert_small.tar.gz"
  with tarfile.open(archive, "w:gz") as tar:
    tar.add(root / "albert_small", arcname="albert_small")
  out = tmp_path / "out"
  convert.main(["c", "--model", str(archive), "--output", str(out)])
  assert_same_params(from_pretrained(out).params, expected)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["albert_small.tar.gz", "out"]


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
def test_damaged_tf_data_file_is_a_clear_error(release, tmp_path, damage):
  source = tmp_path / "albert_small"
  shutil.copytree(release[0] / "albert_small", source)
  data = next(source.glob("model.ckpt-best.data-*"))
  raw = bytearray(data.read_bytes())
  if damage == "corrupt":
    raw[-64:] = bytes(64)  # inside the last (small) tensors, past the 30000-row embeddings
  else:
    raw = raw[: len(raw) // 2]
  data.write_bytes(bytes(raw))
  out = tmp_path / "out"
  with pytest.raises(ValueError, match="TF checkpoint .*model.ckpt-best.*truncated or corrupt"):
    convert.main(["c", "--model", str(source), "--output", str(out)])
  assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["albert_small"]


def test_missing_config_or_checkpoint(release, tmp_path):
  source = tmp_path / "albert_small"
  shutil.copytree(release[0] / "albert_small", source)
  (source / "albert_config.json").unlink()
  out = tmp_path / "out"
  with pytest.raises(FileNotFoundError, match="No albert_config.json next to TF checkpoint"):
    convert.main(["c", "--model", str(source), "--output", str(out)])
  assert not out.exists()
  config = tmp_path / "config.json"
  config.write_text(json.dumps(google_config()))
  convert.main(["c", "--model", str(source), "--output", str(out), "--albert_config", str(config)])
  assert_same_params(from_pretrained(out).params, release[2])

  for index in source.glob("*.index"):
    index.unlink()
  (source / "albert_config.json").write_text(json.dumps(google_config()))
  with pytest.raises(FileNotFoundError, match="No TF checkpoint in"):
    convert.main(["c", "--model", str(source), "--output", str(tmp_path / "out2")])
  assert not (tmp_path / "out2").exists()
