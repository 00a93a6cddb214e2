"""Tests of `albert_jax.trainer.pretrain` (`python -m albert_jax.pretrain`) and its input
pipeline (`data.pretraining`).

The data: documents of 3-6 generated sentences (the generator of test_pretraining_data) whose
first sentence starts with "First," and last with "Finally", so the sentence order can be told
from the text; create_pretraining_data turns them into 4 shards at max_seq_length 64 (the last
one held out for eval). The model: configs/pretrain/tiny.py (hidden 64, 2 layers, 4 heads, FFN
128, embeddings 32, the real 30k vocabulary), batch 16.

What a CPU test shows in 200 steps: the masked-LM loss falls from ~ln(30000) = 10.3 to ~4.6, and
sentence-order accuracy on the whole held-out shard (~560 examples, majority class 0.51) rises
well above chance (measured 0.83-0.88 after 300 steps over 3 seeds). That needs the tiny
config's initializer_range 0.2 and AdamW (see configs/pretrain/tiny.py): with BERT's 0.02 and
LAMB, [CLS] starts (and under MLM stays) input-independent and SOP sits at chance.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from albert_jax.data import pretraining as data_lib
from albert_jax.data.order import DataPosition
from albert_jax.data.pretraining import (
  PretrainingDataConfig,
  PretrainingDataError,
  create_pretraining_data,
  original_input_ids,
  read_manifest,
)
from albert_jax.trainer import pretrain
from configs.pretrain import tiny
from tests.test_pretraining_data import make_sentence, make_tokenizer, write_corpus

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_SEQ_LENGTH = 64
MAX_PREDICTIONS = 10  # round(64 * 0.15) = 10: no padding wasted on the 30k-wide MLM softmax
NUM_SHARDS = 4


def make_ordered_documents(num_documents: int, seed: int) -> list[list[str]]:
  """Documents whose first and last sentences are marked, so segment order can be learned."""
  rng = random.Random(seed)
  documents = []
  for _ in range(num_documents):
    sentences = [make_sentence(rng) for _ in range(rng.randint(3, 6))]
    documents.append(
      [
        f"First, {sentences[0]}",
        *(f"Then {s}" for s in sentences[1:-1]),
        f"Finally {sentences[-1]}",
      ]
    )
  return documents


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
  corpus = tmp_path_factory.mktemp("corpus")
  documents = make_ordered_documents(800, seed=0)
  for i in range(2):
    write_corpus(str(corpus / f"part-{i}.txt"), documents[i::2])
  output = str(tmp_path_factory.mktemp("pretrain") / "data")
  config = PretrainingDataConfig(
    max_seq_length=MAX_SEQ_LENGTH,
    max_predictions_per_seq=MAX_PREDICTIONS,
    dupe_factor=2,
    random_seed=1,
    # Every label from segment order alone (Google's default pairs a one-sentence chunk with
    # another document, label 1: 62% of the held-out labels would be 1, not 51%).
    one_sentence_chunks="split",
  )
  create_pretraining_data(
    str(corpus / "*.txt"),
    output,
    config,
    tokenizer_factory=make_tokenizer,
    num_shards=NUM_SHARDS,
    show_progress=False,
  )
  return output


def tiny_config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
  config = tiny.get_config()
  config.train_data = data_dir
  config.max_predictions_per_seq = MAX_PREDICTIONS
  config.update(overrides)
  return config


def read_metrics(workdir: str, split: str = "train") -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


def open_train(data_dir: str, file_ids=(0, 1, 2), batch_size=16, **kwargs) -> data_lib.TrainBatches:
  manifest = read_manifest(data_dir)
  shards = data_lib.open_shards(data_dir, list(file_ids))
  steps = data_lib.steps_per_epoch(manifest, list(file_ids), 1, batch_size)
  return data_lib.TrainBatches(shards, batch_size, steps, **kwargs)


def unmasked_ids(batch: dict) -> list[tuple]:
  """Each example's ids before masking."""
  return [
    tuple(original_input_ids({k: v[b] for k, v in batch.items()}))
    for b in range(len(batch["input_ids"]))
  ]


def example_keys(batch: dict) -> list[bytes]:
  """Identifies examples (the data's duplication passes mask the same text differently)."""
  return [
    batch["input_ids"][b].tobytes() + batch["masked_lm_positions"][b].tobytes()
    for b in range(len(batch["input_ids"]))
  ]


# ---------------------------------------------------------------------------------------------
# The input pipeline


def test_batches_have_train_keys_and_shapes(data_dir: str) -> None:
  batch = next(open_train(data_dir, prefetch=0))
  assert {k: (v.shape, v.dtype.name) for k, v in batch.items()} == {
    "input_ids": ((16, 64), "int32"),
    "attention_mask": ((16, 64), "int32"),
    "token_type_ids": ((16, 64), "int32"),
    "masked_lm_positions": ((16, 10), "int32"),
    "masked_lm_ids": ((16, 10), "int32"),
    "masked_lm_weights": ((16, 10), "float32"),
    "sentence_order_label": ((16,), "int32"),
  }
  assert set(np.unique(batch["sentence_order_label"])) <= {0, 1}
  assert np.all(batch["input_ids"][:, 0] == 2)  # [CLS]


def test_order_is_a_function_of_seed_epoch_and_position(data_dir: str) -> None:
  batches = open_train(data_dir, shuffle_window=2)
  steps = batches.steps_per_epoch
  epoch0 = [pair for s in range(steps) for pair in batches.where(DataPosition(0, s * 16))]
  assert len(set(epoch0)) == len(epoch0) == steps * 16  # no example twice in an epoch
  assert epoch0 != sorted(epoch0)  # shuffled across files and within them
  seen = [example_keys(next(batches)) for _ in range(steps + 3)]
  batches.close()
  assert batches.position == DataPosition(1, 3 * 16)
  assert seen[steps] != seen[0]  # the next epoch has another order
  # A fresh reader seeked to a position reads exactly what followed it (prefetch or not).
  for prefetch in (0, 2):
    resumed = open_train(data_dir, shuffle_window=2, prefetch=prefetch)
    resumed.seek(DataPosition(0, (steps - 2) * 16))
    assert [example_keys(next(resumed)) for _ in range(5)] == seen[steps - 2 : steps + 3]
    resumed.close()
  other_seed = open_train(data_dir, shuffle_window=2, seed=1, prefetch=0)
  assert example_keys(next(other_seed)) != seen[0]


def test_process_shares_are_disjoint_and_epochs_agree(data_dir: str) -> None:
  manifest = read_manifest(data_dir)
  train_ids, eval_ids = data_lib.split_files(NUM_SHARDS, 1)
  assert (train_ids, eval_ids) == ([0, 1, 2], [3])
  shares = [data_lib.process_files(train_ids, p, 2) for p in range(2)]
  assert shares == [[0, 2], [1]]
  steps = data_lib.steps_per_epoch(manifest, train_ids, 2, 8)
  counts = [f["num_instances"] for f in manifest["files"]]
  assert steps == min(counts[0] + counts[2], counts[1]) // 8
  with pytest.raises(PretrainingDataError, match="--num_shards >= 4"):
    data_lib.process_files(train_ids, 0, 4)


def test_dynamic_masking_redraws_masks_from_epoch_1(data_dir: str) -> None:
  static = open_train(data_dir, prefetch=0)
  dynamic = open_train(data_dir, prefetch=0, dynamic_masking=True)
  start = DataPosition(0, 0)
  for k, v in static.batch_at(start).items():  # epoch 0: the masks written in the data
    np.testing.assert_array_equal(v, dynamic.batch_at(start)[k])
  epoch1 = DataPosition(1, 0)
  plain, remasked = static.batch_at(epoch1), dynamic.batch_at(epoch1)
  assert unmasked_ids(plain) == unmasked_ids(remasked)  # same examples, same unmasked ids
  assert not np.array_equal(plain["masked_lm_positions"], remasked["masked_lm_positions"])
  for k in ("attention_mask", "token_type_ids", "sentence_order_label"):
    np.testing.assert_array_equal(plain[k], remasked[k])
  np.testing.assert_array_equal(  # the same number of predictions per example
    plain["masked_lm_weights"].sum(1), remasked["masked_lm_weights"].sum(1)
  )
  again = open_train(data_dir, prefetch=0, dynamic_masking=True).batch_at(epoch1)
  for k, v in remasked.items():  # deterministic
    np.testing.assert_array_equal(v, again[k])


def test_eval_batches_cover_every_example_once(data_dir: str) -> None:
  shards = data_lib.open_shards(data_dir, [3])
  count = int(shards.counts[0])
  batches = list(data_lib.eval_batches(shards, 16))
  assert len(batches) == -(-count // 16)
  weights = np.concatenate([b["example_weight"] for b in batches])
  assert weights.sum() == count and np.all(weights[:count] == 1)
  keys = [
    k for b in batches for k, w in zip(example_keys(b), b["example_weight"], strict=True) if w
  ]
  assert len(set(keys)) == count


def test_arrayrecord_reads_like_tfrecord(tmp_path) -> None:
  corpus = write_corpus(str(tmp_path / "corpus.txt"), make_ordered_documents(60, seed=3))
  config = PretrainingDataConfig(
    max_seq_length=MAX_SEQ_LENGTH, max_predictions_per_seq=10, dupe_factor=1
  )
  batches = []
  for data_format in ("tfrecord", "arrayrecord"):
    output = str(tmp_path / data_format)
    create_pretraining_data(
      corpus,
      output,
      config,
      tokenizer_factory=make_tokenizer,
      num_shards=2,
      data_format=data_format,
      show_progress=False,
    )
    reader = open_train(output, file_ids=(0, 1), batch_size=8, prefetch=0, dynamic_masking=True)
    batches.append([reader.batch_at(DataPosition(epoch, 8)) for epoch in (0, 1)])
  for tfrecord, arrayrecord in zip(*batches, strict=True):
    for k, v in tfrecord.items():
      np.testing.assert_array_equal(v, arrayrecord[k])


@pytest.mark.parametrize("size", ["base", "large", "xlarge", "xxlarge"])
def test_size_configs_hold_googles_recipe(size: str) -> None:
  import importlib

  config = importlib.import_module(f"configs.pretrain.{size}").get_config()
  assert config.model == f"albert-{size}-v2"
  recipe = {
    k: config[k]
    for k in (
      "optimizer",
      "learning_rate",
      "batch_size",
      "num_train_steps",
      "warmup_steps",
      "weight_decay",
      "clip_norm",
      "max_seq_length",
      "max_predictions_per_seq",
      "dtype",
    )
  }
  assert recipe == {
    "optimizer": "lamb",
    "learning_rate": 0.00176,
    "batch_size": 4096,
    "num_train_steps": 125_000,
    "warmup_steps": 3_125,
    "weight_decay": 0.01,
    "clip_norm": 1.0,
    "max_seq_length": 512,
    "max_predictions_per_seq": 20,
    "dtype": "float32",
  }
  assert pretrain.model_config(config) == pretrain.AlbertConfig.from_name(f"albert-{size}-v2")


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors before any compute


def corrupt_copy(data_dir: str, tmp_path, how: str) -> str:
  copy = str(tmp_path / f"data-{how}")
  shutil.copytree(data_dir, copy)
  path = os.path.join(copy, read_manifest(copy)["files"][1]["path"])
  with open(path, "r+b") as f:
    data = bytearray(f.read())
    if how == "garbage":  # a record header overwritten
      f.seek(len(data) // 2)
      f.write(bytes(range(256)) * 4)
    elif how == "truncated":
      f.truncate(len(data) - 100)
    elif how == "payload":  # the start of the first record: its header stays intact
      f.seek(12)
      f.write(b"\xff" * 8)
  return path


@pytest.mark.parametrize(
  ("case", "overrides", "message"),
  [
    ("empty", {}, "has no manifest.json"),
    ("missing", {}, "does not exist"),
    ("garbage", {}, r"is not a readable TFRecord file: .*corrupt"),
    ("truncated", {}, r"is not a readable TFRecord file: .*cut off|past the end"),
    ("payload", {"verify_checksums": True}, "sha256 mismatch"),
    ("seq_length", {"max_seq_length": 32}, "max_seq_length=64 but the run has max_seq_length=32"),
    ("predictions", {"max_predictions_per_seq": 20}, "max_predictions_per_seq=10 but the run"),
    ("holdout", {"eval_holdout_files": 4}, "cannot hold out 4 of 4 files"),
  ],
)
def test_bad_input_fails_before_compute(data_dir, tmp_path, case, overrides, message) -> None:
  bad = data_dir
  if case == "empty":
    bad = str(tmp_path / "empty")
    os.makedirs(bad)
  elif case == "missing":
    bad = str(tmp_path / "nowhere")
  elif case in ("garbage", "truncated", "payload"):
    path = corrupt_copy(data_dir, tmp_path, case)
    bad = os.path.dirname(path)
    message = f"{path}.*{message}" if case != "payload" else message
  config = tiny_config(bad, **overrides)
  workdir = str(tmp_path / "run")
  start = time.perf_counter()
  with pytest.raises(ValueError, match=message):
    pretrain.run(config, workdir)
  assert not os.path.exists(workdir)  # nothing written, nothing compiled
  assert time.perf_counter() - start < 5


def test_corrupt_payload_is_named_when_parsed(data_dir, tmp_path) -> None:
  path = corrupt_copy(data_dir, tmp_path, "payload")
  with pytest.raises(PretrainingDataError, match=f"record 0 of '{path}'"):
    data_lib.open_shards(os.path.dirname(path))  # checks that every file's first record parses


# ---------------------------------------------------------------------------------------------
# Training

TRAIN_STEPS = 200


@pytest.fixture(scope="module")
def trained(data_dir: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
  workdir = str(tmp_path_factory.mktemp("run") / "tiny")
  config = tiny_config(
    data_dir,
    num_train_steps=TRAIN_STEPS,
    warmup_steps=10,
    log_every_steps=10,
    eval_every_steps=TRAIN_STEPS,
    eval_batches=None,  # the whole held-out shard: enough examples that chance cannot pass
    checkpoint_every_steps=TRAIN_STEPS,
  )
  start = time.perf_counter()
  results = pretrain.run(config, workdir)
  print(f"\n{TRAIN_STEPS} steps in {time.perf_counter() - start:.1f} s")
  return workdir, results


def test_pretraining_learns_masked_lm(trained: tuple[str, dict]) -> None:
  workdir, results = trained
  logged = read_metrics(workdir)
  first, last, final_eval = logged[0], logged[-1], results["eval"]
  print("train (steps 1-10):", {k: round(v, 3) for k, v in first.items() if k != "split"})
  print(
    f"train (steps {TRAIN_STEPS - 9}-{TRAIN_STEPS}):",
    {k: round(v, 3) for k, v in last.items() if k != "split"},
  )
  print("eval (held-out shard):", {k: round(v, 3) for k, v in final_eval.items()})
  assert [r["step"] for r in logged] == list(range(10, TRAIN_STEPS + 1, 10))
  assert first["mlm_loss"] > 9.5  # ~ln(30000) = 10.3: nothing learned yet
  assert last["mlm_loss"] < 6 and final_eval["mlm_loss"] < 6
  assert final_eval["mlm_accuracy"] > 0.08


def test_pretraining_learns_sentence_order(trained: tuple[str, dict]) -> None:
  workdir, results = trained
  logged, final_eval = read_metrics(workdir), results["eval"]
  assert logged[0]["sop_accuracy"] < 0.65  # the first steps guess
  # ~560 held-out examples: chance (0.5, or 0.51 for the majority class) is 5 standard
  # deviations below 0.65.
  assert final_eval["sop_accuracy"] > 0.65 and final_eval["sop_loss"] < 0.6
  assert read_metrics(workdir, "eval") == [{"step": TRAIN_STEPS, "split": "eval", **final_eval}]
  assert os.listdir(os.path.join(workdir, "tb"))  # TensorBoard event files


def test_export_loads_for_finetuning_without_conversion(trained: tuple[str, dict]) -> None:
  import orbax.checkpoint as ocp

  from albert_jax.weights.pretrained import from_pretrained

  workdir, results = trained
  assert results["export"] == os.path.join(workdir, "export")
  assert sorted(os.listdir(results["export"])) == [
    "albert_jax.json",
    "config.json",
    "params",
    "spiece.model",
    "tokenizer_config.json",
  ]
  model = from_pretrained(results["export"], "pretraining")
  assert model.metadata["newly_initialized"] == [] and model.metadata["step"] == TRAIN_STEPS
  assert model.config.hidden_size == 64 and model.config.embedding_size == 32
  state = ocp.StandardCheckpointer().restore(
    os.path.join(workdir, "checkpoints", str(TRAIN_STEPS), "state")
  )
  jax.tree.map(
    np.testing.assert_array_equal, jax.device_get(model.params), jax.device_get(state["params"])
  )
  classifier = from_pretrained(results["export"], "sequence_classification", num_labels=3)
  assert sorted(classifier.metadata["newly_initialized"]) == [
    "classifier/bias",
    "classifier/kernel",
  ]
  batch = classifier.tokenizer(
    ["First, Anna found the river.", "Then"], padding=True, return_tensors="np"
  )
  assert classifier(**batch).logits.shape == (2, 3)


def test_continued_pretraining_starts_from_init_from(trained, data_dir, tmp_path) -> None:
  workdir, results = trained
  config = tiny_config(
    data_dir,
    init_from=results["export"],
    num_train_steps=TRAIN_STEPS,
    warmup_steps=10,
    log_every_steps=1,
    eval_every_steps=TRAIN_STEPS,
    eval_batches=8,
    checkpoint_every_steps=TRAIN_STEPS,
  )
  continued = pretrain.run(config, str(tmp_path / "continued"), stop_at_step=2)
  fresh_start, trained_end = read_metrics(workdir)[0], read_metrics(workdir)[-1]
  print(
    f"continued from the export: mlm_loss {continued['train']['mlm_loss']:.3f} at step 2 "
    f"(fresh start: {fresh_start['mlm_loss']:.3f}, end of training: "
    f"{trained_end['mlm_loss']:.3f})"
  )
  assert continued["step"] == 2
  assert continued["train"]["mlm_loss"] < trained_end["mlm_loss"] + 0.5 < fresh_start["mlm_loss"]


def test_resume_after_preemption_repeats_the_run(data_dir: str, tmp_path) -> None:
  """Gradient accumulation (2 micro-batches of 8) and AdamW, so resuming mid-way must restore
  the accumulator and the schedule as well as the data position."""
  config = tiny_config(
    data_dir,
    optimizer="adamw",
    learning_rate=1e-3,
    grad_accum_steps=2,
    num_train_steps=6,
    warmup_steps=2,
    log_every_steps=1,
    eval_every_steps=3,
    eval_batches=2,
    checkpoint_every_steps=2,
    keep_checkpoints=3,
  )
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  pretrain.run(config, straight)
  stopped = pretrain.run(config, resumed, stop_at_step=5)
  assert stopped["step"] == 5 and stopped["export"] is None
  assert sorted(os.listdir(os.path.join(resumed, "checkpoints"))) == ["2", "4", "5"]
  assert [r["step"] for r in read_metrics(resumed)] == [1, 2, 3, 4, 5]
  # The process died while saving step 5: the rerun restarts from step 4 and steps 5-6 again.
  shutil.rmtree(os.path.join(resumed, "checkpoints", "5"))
  pretrain.run(config, resumed)

  def without_timing(records):
    return [{k: v for k, v in r.items() if k != "steps_per_second"} for r in records]

  for split in ("train", "eval"):
    assert without_timing(read_metrics(resumed, split)) == without_timing(
      read_metrics(straight, split)
    )
  assert [r["step"] for r in read_metrics(resumed)] == [1, 2, 3, 4, 5, 6]
  import orbax.checkpoint as ocp

  restored = [
    ocp.StandardCheckpointer().restore(os.path.join(w, "export", "params"))
    for w in (straight, resumed)
  ]
  jax.tree.map(np.testing.assert_array_equal, *restored)
  positions = []
  for w in (straight, resumed):
    with open(os.path.join(w, "checkpoints", "6", "data", "metadata")) as f:
      positions.append(json.load(f))
  assert (
    positions[0]
    == positions[1]
    == {
      "epoch": 0,
      "index": 6 * 2 * 8,
      "rows": 8,
      "steps_per_epoch": positions[0]["steps_per_epoch"],
      "data": data_lib.fingerprint(read_manifest(data_dir), [0, 1, 2]),  # the training files
    }
  )
  # A rerun with a different recipe in the same workdir is refused before any work.
  config.learning_rate = 2e-3
  with pytest.raises(ValueError, match="learning_rate: 0.001 -> 0.002"):
    pretrain.run(config, resumed)


def test_resuming_on_changed_data_is_refused_or_restarts_the_epoch(data_dir, tmp_path) -> None:
  data = tmp_path / "data"
  shutil.copytree(data_dir, data)
  overrides = dict(num_train_steps=4, warmup_steps=1, checkpoint_every_steps=2,
                   eval_every_steps=0, eval_batches=1, log_every_steps=2)  # fmt: skip
  config = tiny_config(str(data), **overrides)
  workdir = tmp_path / "run"
  pretrain.run(config, str(workdir), stop_at_step=2)
  # The data is regenerated with one file less (its training files: 3 -> 2, the last held out).
  manifest = json.loads((data / "manifest.json").read_text())
  dropped = manifest["files"].pop(1)
  (data / dropped["path"]).unlink()
  manifest["num_instances"] -= dropped["num_instances"]
  (data / "manifest.json").write_text(json.dumps(manifest))
  before = data_lib.fingerprint(read_manifest(data_dir), [0, 1, 2])
  now = data_lib.fingerprint(manifest, [0, 1])

  flags = [f"--config.{k}={v}" for k, v in {**overrides, "train_data": data,
           "max_predictions_per_seq": MAX_PREDICTIONS}.items()]  # fmt: skip
  tiny_file = ROOT / "configs" / "pretrain" / "tiny.py"
  command = [sys.executable, "-m", "albert_jax.pretrain", f"--config={tiny_file}", *flags,
             f"--workdir={workdir}"]  # fmt: skip
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
  run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 2, run.stderr[-3000:]
  assert run.stderr.endswith(
    f"error: The training data changed since the checkpoint was saved ({before['examples']} "
    f"examples, sha256 {before['sha256'][:12]}... then; {now['examples']}, "
    f"{now['sha256'][:12]}... now). Restore the data, or pass "
    "--config.allow_data_change=True to continue on the new data from the start of epoch 0, or "
    "start a new run in another --workdir.\n"
  ), run.stderr[-3000:]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]

  config.allow_data_change = True
  assert pretrain.run(config, str(workdir))["step"] == 4
  with open(workdir / "checkpoints" / "4" / "data" / "metadata") as f:
    position = json.load(f)
  assert position["data"] == now
  assert (position["epoch"], position["index"]) == (0, 2 * 16)  # epoch 0 again, from its start
