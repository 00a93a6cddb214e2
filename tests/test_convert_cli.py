"""`python -m albert_jax.convert` and `from_pretrained`: HF checkpoints of every head, the hub,
head changes, sharded loading, and every bad input leaving no partial output."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from jax.sharding import NamedSharding, PartitionSpec

from albert_jax import convert, from_pretrained
from albert_jax.errors import UserError
from albert_jax.heads import abstract_params
from albert_jax.weights import hf, sources
from albert_jax.weights.converted import save_params
from tests.reference import OUTPUT_FIELDS, hf_model, hf_outputs, padded_batch
from tests.test_model import SMALL, TOL

CASES = {  # name: (head, HF config extras, weights format)
  "base": ("base", {}, "safetensors"),
  "pretraining": ("pretraining", {}, "safetensors"),
  "masked_lm": ("masked_lm", {}, "safetensors"),
  "masked_lm_bin": ("masked_lm", {}, "bin"),
  "sequence_classification": ("sequence_classification", {"num_labels": 3}, "safetensors"),
  "regression": ("sequence_classification", {"num_labels": 1}, "safetensors"),
  "token_classification": ("token_classification", {"num_labels": 5}, "bin"),
  "question_answering": ("question_answering", {}, "safetensors"),
  "multiple_choice": ("multiple_choice", {}, "safetensors"),
}


def save_hf(model, directory, fmt="safetensors"):
  """`save_pretrained`; transformers 5 always writes safetensors, so .bin is written by hand."""
  model.save_pretrained(directory)
  if fmt == "bin":
    os.remove(directory / "model.safetensors")
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
  return directory


def max_diff(ours, theirs, mask, head):
  """Max abs difference over a head's outputs; per-token outputs on real positions only."""
  worst = 0.0
  for field in OUTPUT_FIELDS[head]:
    a, b = np.asarray(getattr(ours, field)), theirs[field]
    assert a.shape == b.shape, (field, a.shape, b.shape)
    if a.ndim >= 2 and a.shape[:2] == mask.shape:
      a, b = a[mask.astype(bool)], b[mask.astype(bool)]
    worst = max(worst, float(np.abs(a - b).max()))
  return worst


def inputs_for(head):
  ids, mask, types = padded_batch(4, 12, SMALL["vocab_size"], seed=3)
  if head == "multiple_choice":
    ids, mask, types = (a.reshape(2, 2, 12) for a in (ids, mask, types))
  return ids, mask, types


@pytest.mark.parametrize("case", sorted(CASES))
def test_hf_checkpoint_converts_and_loads_with_hf_outputs(case, tmp_path, capsys):
  head, extra, fmt = CASES[case]
  ref = hf_model(head, seed=1, **SMALL, **extra)
  src = save_hf(ref, tmp_path / "hf", fmt)
  assert convert.main(["convert", "--model", str(src), "--output", str(tmp_path / "out")]) == 0
  printed = capsys.readouterr().out
  model = from_pretrained(tmp_path / "out", scan_layers=False)  # eager: faster on CPU
  meta = json.loads((tmp_path / "out" / "albert_jax.json").read_text())

  assert model.head == meta["head"] == head  # detected from config.json `architectures`
  assert meta["num_labels"] == extra.get("num_labels", 2 if "classif" in head else None)
  count = sum(p.numel() for p in ref.parameters())
  assert meta["parameter_count"] == count
  assert f"{count:,}" in printed and ", ".join(meta["heads_found"]) in printed
  assert sorted(os.listdir(tmp_path)) == ["hf", "out"]  # no temporary directory left behind
  ids, mask, types = inputs_for(head)
  ours = model(ids, mask, types)
  theirs = hf_outputs(ref, input_ids=ids, attention_mask=mask, token_type_ids=types)
  worst = max_diff(ours, theirs, mask if head != "multiple_choice" else mask[:, 0], head)
  print(f"{case}: max abs diff vs HF {worst:.2e}")
  assert worst <= TOL


def test_head_is_detected_from_tensor_names_and_can_be_overridden(tmp_path):
  ref = hf_model("pretraining", **SMALL)
  src = save_hf(ref, tmp_path / "hf")
  config = json.loads((src / "config.json").read_text())
  del config["architectures"]
  (src / "config.json").write_text(json.dumps(config))
  assert sources.load_source(src).head == "pretraining"
  convert.main(["c", "--model", str(src), "--output", str(tmp_path / "base"), "--head", "base"])
  model = from_pretrained(tmp_path / "base")
  assert model.head == "base" and set(model.params) == {"embeddings", "encoder", "pooler"}
  full = hf.params_from_hf_state_dict(ref.state_dict(), model.config, "pretraining")
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(model.params), full["albert"])
  assert hf.detect_head(["classifier.weight", "albert.pooler.weight"]) == (
    "sequence_classification"
  )
  assert hf.detect_head(["classifier.weight", "albert.encoder.x"]) == "token_classification"


def test_masked_lm_checkpoint_keeps_its_pooler_for_the_encoder(tmp_path):
  # HF hub copies of the released weights are AlbertForMaskedLM files that still hold a pooler.
  ref = hf_model("pretraining", **SMALL)
  state = {k: v for k, v in ref.state_dict().items() if not k.startswith("sop_classifier")}
  (tmp_path / "hf").mkdir()
  ref.config.architectures = ["AlbertForMaskedLM"]
  ref.config.save_pretrained(tmp_path / "hf")
  torch.save(state, tmp_path / "hf" / "pytorch_model.bin")
  convert.main(["c", "--model", str(tmp_path / "hf"), "--output", str(tmp_path / "out")])
  assert from_pretrained(tmp_path / "out").head == "masked_lm"
  base = from_pretrained(tmp_path / "out", head="base", strict=True)
  np.testing.assert_array_equal(
    base.params["pooler"]["kernel"], state["albert.pooler.weight"].numpy().T
  )


def test_from_pretrained_changes_head_and_initializes_only_what_is_new(tmp_path, caplog):
  ref = hf_model("pretraining", **SMALL)
  convert.main(
    ["c", "--model", str(save_hf(ref, tmp_path / "hf")), "--output", str(tmp_path / "out")]
  )
  with caplog.at_level(logging.WARNING, logger="albert_jax.weights.pretrained"):
    model = from_pretrained(tmp_path / "out", head="sequence_classification", num_labels=3)
  assert "newly initialized" in caplog.text and "classifier/kernel" in caplog.text
  assert model.metadata["newly_initialized"] == ["classifier/bias", "classifier/kernel"]
  assert model.params["classifier"]["kernel"].shape == (SMALL["hidden_size"], 3)
  stored = from_pretrained(tmp_path / "out")
  jax.tree.map(np.testing.assert_array_equal, model.params["albert"], stored.params["albert"])
  # The same from the HF directory directly (converted in memory).
  direct = from_pretrained(tmp_path / "hf", head="sequence_classification", num_labels=3)
  jax.tree.map(np.testing.assert_array_equal, direct.params, model.params)

  with pytest.raises(ValueError, match="classifier/kernel.*for head 'sequence_classification'"):
    from_pretrained(tmp_path / "out", head="sequence_classification", strict=True)
  seq3 = tmp_path / "seq3"
  save_params(seq3, model.params, model.config, model.head, num_labels=3)
  with pytest.raises(ValueError, match=r"classifier/bias is stored with shape \(3,\)"):
    from_pretrained(seq3, num_labels=2)
  two = from_pretrained(seq3, num_labels=2, ignore_mismatched_sizes=True)
  assert two.params["classifier"]["kernel"].shape == (SMALL["hidden_size"], 2)


def test_loads_sharded_onto_a_mesh(tmp_path):
  ref = hf_model("pretraining", **SMALL)
  convert.main(
    ["c", "--model", str(save_hf(ref, tmp_path / "hf")), "--output", str(tmp_path / "out")]
  )
  mesh = jax.make_mesh((2, 4), ("data", "model"))

  def shard(abstract):  # the hidden axis (32) over "model" where a leaf has one, else replicate
    def spec(leaf):
      axes = [None] * leaf.ndim
      for i, n in enumerate(leaf.shape):
        if n == SMALL["hidden_size"]:
          axes[i] = "model"
          break
      return NamedSharding(mesh, PartitionSpec(*axes))

    return jax.tree.map(spec, abstract)

  plain = from_pretrained(tmp_path / "out", head="sequence_classification")
  wanted = shard(abstract_params(plain.module))
  for shardings in (shard, wanted):  # a function of the abstract tree, or the tree itself
    model = from_pretrained(tmp_path / "out", head="sequence_classification", shardings=shardings)
    leaves, want = jax.tree.leaves(model.params), jax.tree.leaves(wanted)
    assert len(leaves) == len(want)
    for leaf, sharding in zip(leaves, want, strict=True):
      assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), (leaf.sharding, sharding)
    kernel = model.params["albert"]["encoder"]["embedding_hidden_mapping_in"]["kernel"]
    assert len(kernel.addressable_shards) == 8 and kernel.addressable_shards[0].data.shape == (
      SMALL["embedding_size"],
      SMALL["hidden_size"] // 4,
    )
    assert model.params["classifier"]["kernel"].sharding.spec == PartitionSpec("model", None)
    jax.tree.map(
      np.testing.assert_array_equal, jax.device_get(model.params), jax.device_get(plain.params)
    )  # new head too: same rng, same values


def test_hub_name_is_downloaded_converted_and_cached(tmp_path, monkeypatch):
  import huggingface_hub

  src = save_hf(hf_model("masked_lm", **SMALL), tmp_path / "snapshot")
  calls = []

  def fake_download(repo_id, **kwargs):
    calls.append(repo_id)
    return str(src)

  monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
  monkeypatch.setenv("ALBERT_JAX_CACHE", str(tmp_path / "cache"))
  first = from_pretrained("albert-base-v2")
  assert calls == ["albert/albert-base-v2"]
  cached = tmp_path / "cache" / "albert--albert-base-v2"
  assert json.loads((cached / "albert_jax.json").read_text())["source"] == "albert-base-v2"
  second = from_pretrained("albert/albert-base-v2")  # same repository: loaded from the cache
  assert calls == ["albert/albert-base-v2"]
  jax.tree.map(np.testing.assert_array_equal, first.params, second.params)


def test_unknown_hub_name_offline_is_a_clear_error(tmp_path, monkeypatch):
  assert os.environ.get("HF_HUB_OFFLINE") == "1"  # conftest: the real client, offline
  out = tmp_path / "out"
  with pytest.raises(FileNotFoundError, match="pass that directory or file as the source"):
    convert.main(["c", "--model", "albert/no-such-model", "--output", str(out)])
  import huggingface_hub

  def no_network(repo_id, **kwargs):
    raise ConnectionError("network unreachable")

  monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
  monkeypatch.setenv("ALBERT_JAX_CACHE", str(tmp_path / "cache"))
  with pytest.raises(
    FileNotFoundError,
    match=r"ConnectionError: network unreachable.*hf "
    r"download albert/albert-large-v2",
  ):
    from_pretrained("albert-large-v2")
  assert not out.exists() and not (tmp_path / "cache" / "albert--albert-large-v2").exists()


def test_cli_subprocess_reports_errors_in_one_line(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("old")
  env = {**os.environ, "HF_HUB_OFFLINE": "1"}
  run = subprocess.run(
    [
      sys.executable,
      "-m",
      "albert_jax.convert",
      "--model",
      str(tmp_path / "missing"),
      "--output",
      str(out),
    ],
    capture_output=True,
    text=True,
    env=env,
    timeout=120,
  )
  assert run.returncode == 2
  assert run.stderr.strip().splitlines()[-1].startswith(f"error: Output {out} already exists")
  assert (out / "keep.txt").read_text() == "old"


# ---- bad input: a clear error and no partial output ----------------------------------------


@pytest.fixture
def hf_dir(tmp_path):
  return save_hf(hf_model("masked_lm", **SMALL), tmp_path / "hf")


def _convert_fails(source, output, error, match, *extra):
  output = Path(output)
  with pytest.raises(error, match=match):
    convert.main(["c", "--model", str(source), "--output", str(output), *extra])
  assert not output.exists()
  assert not [p for p in output.parent.iterdir() if p.name.startswith(f"{output.name}.")]


def test_missing_files(tmp_path, hf_dir):
  out = tmp_path / "out"
  _convert_fails(tmp_path / "nowhere", out, FileNotFoundError, "does not exist and is not an HF")
  _convert_fails("nowhere/x", out, FileNotFoundError, "'nowhere/x' is not a local path either")
  (tmp_path / "empty").mkdir()
  _convert_fails(tmp_path / "empty", out, FileNotFoundError, "neither an HF model")
  os.remove(hf_dir / "model.safetensors")
  _convert_fails(hf_dir, out, FileNotFoundError, "neither an HF model.*found: .'config.json'")
  with pytest.raises(ValueError, match="Pass --model and --output"):
    convert.main(["c", "--model", str(hf_dir)])
  with pytest.raises(ValueError, match="Unknown command line flag 'sorce'"):
    convert.main(["c", "--sorce", str(hf_dir)])


def test_truncated_or_corrupt_weights(tmp_path, hf_dir):
  weights = hf_dir / "model.safetensors"
  data = weights.read_bytes()
  weights.write_bytes(data[: len(data) // 2])
  _convert_fails(hf_dir, tmp_path / "out", ValueError, "model.safetensors.*truncated or corrupt")
  weights.write_bytes(b"\x00" * 64)
  _convert_fails(hf_dir, tmp_path / "out", ValueError, "model.safetensors.*truncated or corrupt")
  os.remove(weights)
  (hf_dir / "pytorch_model.bin").write_bytes(b"not a pickle")
  _convert_fails(hf_dir, tmp_path / "out", ValueError, "pytorch_model.bin.*truncated or corrupt")


def test_config_that_disagrees_with_the_tensors(tmp_path, hf_dir):
  config = json.loads((hf_dir / "config.json").read_text())
  config["intermediate_size"] = 40
  (hf_dir / "config.json").write_text(json.dumps(config))
  _convert_fails(
    hf_dir,
    tmp_path / "out",
    ValueError,
    r"ffn.weight' has shape \(37, 32\); the config implies \(40, 32\)",
  )
  config.update(intermediate_size=37, inner_group_num=1)  # the checkpoint has 2 inner layers
  (hf_dir / "config.json").write_text(json.dumps(config))
  _convert_fails(
    hf_dir,
    tmp_path / "out",
    ValueError,
    r"albert_layers.1.*belong to no layer of the config.*inner_group_num=1",
  )
  config["inner_group_num"] = 2
  (hf_dir / "config.json").write_text(json.dumps(config))
  _convert_fails(
    hf_dir,
    tmp_path / "out",
    ValueError,
    "missing 2 tensor.*start a new head",
    "--head",
    "question_answering",
  )


def test_existing_output_is_refused_then_replaced_atomically(tmp_path, hf_dir, monkeypatch):
  out = tmp_path / "out"
  out.mkdir()
  (out / "old.txt").write_text("old")
  with pytest.raises(UserError, match="already exists; pass --overwrite"):
    convert.main(["c", "--model", str(hf_dir), "--output", str(out)])
  assert (out / "old.txt").read_text() == "old"

  def crash(directory, converted):  # dies half way: params written, the rest not
    (directory / "params").mkdir()
    raise KeyboardInterrupt

  with monkeypatch.context() as m:
    m.setattr(sources, "write_converted", crash)
    with pytest.raises(KeyboardInterrupt):
      convert.main(["c", "--model", str(hf_dir), "--output", str(out), "--overwrite"])
    with pytest.raises(KeyboardInterrupt):
      convert.main(["c", "--model", str(hf_dir), "--output", str(tmp_path / "new")])
  assert sorted(os.listdir(out)) == ["old.txt"] and not (tmp_path / "new").exists()
  assert sorted(os.listdir(tmp_path)) == ["hf", "out"]

  convert.main(["c", "--model", str(hf_dir), "--output", str(out), "--overwrite"])
  assert not (out / "old.txt").exists() and from_pretrained(out).head == "masked_lm"
  assert sorted(os.listdir(tmp_path)) == ["hf", "out"]


def test_damaged_converted_directory(tmp_path, hf_dir):
  out = tmp_path / "out"
  convert.main(["c", "--model", str(hf_dir), "--output", str(out)])
  for path in sorted((out / "params").rglob("*")):
    if path.is_file() and path.stat().st_size > 1000:  # the tensor data
      path.write_bytes(path.read_bytes()[:100])
  with pytest.raises(ValueError, match=r"params/\S+ does not match its checksum .* damaged"):
    from_pretrained(out)  # named by the checksums albert_jax.json records


def test_a_file_in_the_way_of_the_output_is_named(tmp_path, hf_dir):
  (tmp_path / "file").write_text("in the way")
  for output in (tmp_path / "file" / "out", tmp_path / "file" / "deeper" / "out"):
    with pytest.raises(UserError) as raised:
      convert.main(["c", "--model", str(hf_dir), "--output", str(output)])
    assert str(raised.value) == (
      f"Cannot write {output}: {tmp_path / 'file'} is a file, not a directory; move it away "
      "or choose another output."
    )
  assert (tmp_path / "file").read_text() == "in the way"
