"""`python -m albert_jax.export`: albert_jax params -> HF directory -> transformers loads it with
no missing keys and the same outputs."""

import json
import os
import re

import jax
import numpy as np
import pytest
import transformers

from albert_jax import AlbertConfig, convert, export, from_pretrained
from albert_jax.errors import UserError
from albert_jax.heads import abstract_params, create_module
from albert_jax.weights.converted import save_params
from tests.reference import HF_CLASSES, hf_outputs
from tests.test_convert_cli import inputs_for, max_diff
from tests.test_model import SMALL, TOL

NUM_LABELS = {"sequence_classification": 3, "token_classification": 4}


def random_params(head, seed=0, **config):
  """Random values for every leaf (numpy: no compilation), LayerNorm scales around 1."""
  config = AlbertConfig(**{**SMALL, **config})
  module = create_module(config, head, NUM_LABELS.get(head), scan_layers=False)
  rng = np.random.RandomState(seed)
  params = jax.tree_util.tree_map_with_path(
    lambda path, leaf: (rng.normal(0, 0.1, leaf.shape) + (path[-1].key == "scale")).astype(
      np.float32
    ),
    abstract_params(module),
  )
  return module, params


@pytest.mark.parametrize("head", sorted(HF_CLASSES))
def test_export_round_trip_through_transformers(head, tmp_path, capsys):
  module, params = random_params(head)
  id2label = {"0": "neg", "1": "neutral", "2": "pos"} if head == "sequence_classification" else None
  save_params(
    tmp_path / "ours",
    params,
    module.config,
    head,
    num_labels=NUM_LABELS.get(head),
    id2label=id2label,
  )
  assert (
    export.main(["e", "--model", str(tmp_path / "ours"), "--output", str(tmp_path / "hf")]) == 0
  )
  assert HF_CLASSES[head] in capsys.readouterr().out
  assert sorted(os.listdir(tmp_path / "hf")) == [
    "checksums.json",
    "config.json",
    "model.safetensors",
    "spiece.model",
    "tokenizer_config.json",
  ]

  cls = getattr(transformers, HF_CLASSES[head])
  ref, info = cls.from_pretrained(tmp_path / "hf", output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert not info["mismatched_keys"] and not info["error_msgs"], info
  auto = transformers.AutoConfig.from_pretrained(tmp_path / "hf")
  assert auto.architectures == [HF_CLASSES[head]]
  if head in NUM_LABELS:
    assert auto.num_labels == NUM_LABELS[head]
  if id2label:
    assert auto.id2label == {0: "neg", 1: "neutral", 2: "pos"}
  if head in ("pretraining", "masked_lm"):  # the decoder is re-tied to the word embeddings
    assert ref.predictions.decoder.weight.data_ptr() == (
      ref.albert.embeddings.word_embeddings.weight.data_ptr()
    )

  ids, mask, types = inputs_for(head)
  ours = module.apply({"params": params}, ids, mask, types)
  theirs = hf_outputs(ref.eval(), input_ids=ids, attention_mask=mask, token_type_ids=types)
  worst = max_diff(ours, theirs, mask if head != "multiple_choice" else mask[:, 0], head)
  print(f"{head}: export round trip max abs diff {worst:.2e}")
  assert worst <= TOL


def test_export_refuses_existing_output_and_bad_checkpoints(tmp_path):
  module, params = random_params("masked_lm")
  save_params(tmp_path / "ours", params, module.config, "masked_lm")
  (tmp_path / "hf").mkdir()
  (tmp_path / "hf" / "keep.txt").write_text("old")
  with pytest.raises(UserError, match="already exists; pass --overwrite"):
    export.main(["e", "--model", str(tmp_path / "ours"), "--output", str(tmp_path / "hf")])
  assert os.listdir(tmp_path / "hf") == ["keep.txt"]
  export.main(
    ["e", "--model", str(tmp_path / "ours"), "--output", str(tmp_path / "hf"), "--overwrite"]
  )
  config = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert config["architectures"] == ["AlbertForMaskedLM"]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "ours"]

  with pytest.raises(FileNotFoundError, match="neither a local path nor an HF hub"):
    export.main(["e", "--model", str(tmp_path / "none"), "--output", str(tmp_path / "x")])
  with pytest.raises(ValueError, match="params do not match head 'sequence_classification'"):
    save_params(tmp_path / "bad", params, module.config, "sequence_classification")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "ours"]


def test_export_of_converted_hf_checkpoint_matches_the_original_file(tmp_path):
  from tests.reference import hf_model

  # The bundled 30k tokenizer travels with the export, so the model takes 30000 ids (a smaller
  # vocabulary is refused when the exported directory is loaded: test_robust.py).
  ref = hf_model("pretraining", **{**SMALL, "vocab_size": 30000})
  ref.save_pretrained(tmp_path / "orig")
  convert.main(["c", "--model", str(tmp_path / "orig"), "--output", str(tmp_path / "ours")])
  export.main(["e", "--model", str(tmp_path / "ours"), "--output", str(tmp_path / "hf")])
  from safetensors.numpy import load_file

  original, exported = (load_file(tmp_path / d / "model.safetensors") for d in ("orig", "hf"))
  assert sorted(original) == sorted(exported)
  for name, value in original.items():
    np.testing.assert_array_equal(exported[name], value, err_msg=name)
  assert from_pretrained(tmp_path / "hf").head == "pretraining"  # and it converts back


def test_a_flipped_byte_in_an_export_is_an_error_naming_the_file(tmp_path):
  # 30000 ids: the bundled tokenizer that travels with the export fits the model
  module, params = random_params("masked_lm", vocab_size=30000)
  save_params(tmp_path / "ours", params, module.config, "masked_lm")
  export.main(["e", "--model", str(tmp_path / "ours"), "--output", str(tmp_path / "hf")])
  recorded = json.loads((tmp_path / "hf" / "checksums.json").read_text())
  assert sorted(recorded) == ["config.json", "model.safetensors", "spiece.model",
                              "tokenizer_config.json"]  # fmt: skip
  from_pretrained(tmp_path / "hf")  # intact: loads
  weights = tmp_path / "hf" / "model.safetensors"
  data = bytearray(weights.read_bytes())
  data[len(data) // 2] ^= 0x01  # one bit of one weight (the header is at the start)
  weights.write_bytes(bytes(data))
  message = (
    rf"{re.escape(str(weights))} does not match its checksum in "
    rf"{re.escape(str(tmp_path / 'hf' / 'checksums.json'))}: the file is damaged or was "
    r"changed. Export \(or download\) the model again."
  )
  with pytest.raises(UserError, match=message):
    from_pretrained(tmp_path / "hf")
  with pytest.raises(UserError, match=message):
    convert.main(["c", "--model", str(tmp_path / "hf"), "--output", str(tmp_path / "back")])
  assert not (tmp_path / "back").exists()


def test_processes_but_the_first_write_only_their_parameter_shards(tmp_path, monkeypatch):
  """Every process of a multi-process run calls `write_converted` (fine-tuning's export) and
  `checksums.write(main_only=True)` (checkpoints): process 0 alone writes, and hashes, the
  shared files. (Two writers raced: one hashed the other's temporary file just renamed away,
  FileNotFoundError, and its peer then waited forever in the next barrier.)"""
  import flax.linen as nn

  from albert_jax import checksums, files
  from albert_jax.tokenizer import AlbertTokenizer, bundled_model_path
  from albert_jax.weights import converted

  config = AlbertConfig(**SMALL)
  ids = np.ones((1, 4), np.int32)
  params = nn.unbox(create_module(config, "base").init(jax.random.key(0), ids)["params"])
  model = converted.Converted(config, params, "base", AlbertTokenizer(bundled_model_path()), {})
  hashed = []
  monkeypatch.setattr(files, "sha256", lambda path: hashed.append(path) or "0" * 64)
  for main, name in ((False, "other"), (True, "first")):
    monkeypatch.setattr(files, "is_main_process", lambda main=main: main)
    directory = tmp_path / name
    directory.mkdir()
    converted.write_converted(directory, model)
    checksums.write(directory, main_only=True)
    written = sorted(p.name for p in directory.iterdir())
    if main:
      assert {"params", "config.json", "albert_jax.json", "spiece.model", "checksums.json"} <= set(
        written
      )
      assert hashed
    else:
      assert written == ["params"] and not hashed
