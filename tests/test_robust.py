"""Runs that meet preemption, bad numbers, full disks, bad configs or changed data end in
correct work or in a one-line error that names the problem, with nothing lost.

The trainer runs are the real CLI (`python -m albert_jax.finetune`) on a tiny model trained
from scratch on the bundled SST-2 sample, stopped with real signals.
"""

import errno
import json
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from albert_jax import cli, convert, files, from_pretrained
from albert_jax.errors import EXIT_PREEMPTED, EXIT_USER_ERROR, UserError
from albert_jax.pipelines.fill_mask import FillMask
from albert_jax.tokenizer import bundled_model_path
from albert_jax.trainer import command, finetune, loop
from tests.localhost import ROOT, environment, finish, start_processes
from tests.runs import (
  SST2_SAMPLE,
  TINY_FLAGS,
  assert_trees_equal,
  finetune_command,
  load_config,
  run_killed,
  train_state,
)

STEPS = 40  # long enough that a signal sent at the first checkpoint arrives mid-run
TINY = {
  "mesh.shape.data": 1,
  **TINY_FLAGS,
  "max_seq_length": 32,
  "batch_size": 8,
  "num_train_steps": STEPS,
  "warmup_steps": 2,
  "max_train_examples": 64,
  "max_eval_examples": 8,
  "eval_every_steps": 0,
  "checkpoint_every_steps": 3,
  "log_every_steps": 5,
}


def wait_for_checkpoint(workdir: pathlib.Path, procs, timeout: float = 300) -> None:
  """Returns once a checkpoint save has begun in `workdir` (the run is in its train loop)."""
  directory, start = workdir / "checkpoints", time.monotonic()
  while not (directory.is_dir() and any(directory.iterdir())):
    for p in procs:
      assert p.poll() is None, p.communicate()[1][-3000:]
    assert time.monotonic() - start < timeout, "no checkpoint appeared"
    time.sleep(0.01)


def stopped_step(stderr: str) -> int:
  pattern = r"stopped: Stopped by SIGTERM after step (\d+); a checkpoint at step \1"
  match = re.search(pattern, stderr)
  assert match, stderr[-3000:]
  return int(match.group(1))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """The tiny run without interruption, in this process (compiling into the run's XLA cache)."""
  workdir = tmp_path_factory.mktemp("uninterrupted")
  metrics = finetune.run(load_config("sst2_sample", TINY), str(workdir))
  return workdir, metrics


# ---- 1. preemption: SIGTERM finishes the step, saves, exits 75; the rerun resumes ------------


def test_sigterm_saves_exits_75_and_the_rerun_ends_identical(uninterrupted, tmp_path):
  reference, metrics = uninterrupted
  workdir, env = tmp_path / "run", environment()
  command = finetune_command(workdir, TINY)
  proc = subprocess.Popen(
    command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  )
  try:
    wait_for_checkpoint(workdir, [proc])
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
  assert out == ""  # no results: the run is not done
  step = stopped_step(err)
  assert 3 <= step < STEPS
  assert max(int(p.name) for p in (workdir / "checkpoints").iterdir()) == step
  assert not (workdir / "metrics.json").exists()

  done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert json.loads(done.stdout) == metrics == json.loads((workdir / "metrics.json").read_text())
  assert_trees_equal(train_state(workdir, STEPS), train_state(reference, STEPS))  # bit for bit


def _processes(workdir, overrides: dict) -> list:
  """The CLI as the 2 processes of one JAX system on localhost (4 CPU devices each)."""
  return start_processes(finetune_command(workdir, overrides))


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(tmp_path):
  """The signal reaches process 1 only; both save the same step and exit 75; the rerun of both
  ends identical to an uninterrupted two-process run."""
  overrides = {**TINY, "mesh.shape.fsdp": -1, "num_train_steps": 30}
  straight = finish(_processes(tmp_path / "straight", overrides))
  assert [r[0] for r in straight] == [0, 0], straight[0][2][-3000:] + straight[1][2][-3000:]

  workdir = tmp_path / "run"
  procs = _processes(workdir, overrides)
  try:
    wait_for_checkpoint(workdir, procs)
    procs[1].send_signal(signal.SIGTERM)
  finally:
    stopped = finish(procs)
  assert [r[0] for r in stopped] == [EXIT_PREEMPTED] * 2, stopped[0][2][-3000:]
  step = stopped_step(stopped[1][2])
  assert "stopped: Stopped by a stop signal on another process after step" in stopped[0][2]
  assert step == int(re.search(r"after step (\d+)", stopped[0][2]).group(1)) < 30
  assert max(int(p.name) for p in (workdir / "checkpoints").iterdir()) == step

  resumed = finish(_processes(workdir, overrides))
  assert [r[0] for r in resumed] == [0, 0], resumed[0][2][-3000:]
  # (stdout also carries gloo's "[Gloo] Rank 0 is connected ..." lines: the files are compared)
  assert json.loads((workdir / "metrics.json").read_text()) == json.loads(
    (tmp_path / "straight" / "metrics.json").read_text()
  )
  assert_trees_equal(train_state(workdir, 30), train_state(tmp_path / "straight", 30))


# ---- 2. bad numbers: a NaN/inf loss stops the run; token ids outside the vocabulary --------


def test_a_diverging_run_stops_naming_the_step_and_saves_nothing_bad(tmp_path):
  config = load_config("sst2_sample", {**TINY, "learning_rate": 1e30, "num_train_steps": 12})
  workdir = tmp_path / "run"
  with pytest.raises(loop.NonFiniteLoss) as raised:
    finetune.run(config, str(workdir))
  message = str(raised.value)
  print(message)
  step = int(re.search(r"at step (\d+): training diverged", message).group(1))
  assert re.search(r"(loss|grad_norm) (nan|inf)", message)
  assert "lower learning_rate (now 1e+30)" in message and "\n" not in message
  saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir())
  assert all(s < step for s in saved)  # nothing from the diverged steps
  if saved:
    assert f"the last good checkpoint is step {saved[-1]} in {workdir / 'checkpoints'}" in message
    state = train_state(workdir, saved[-1])
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state))
  else:
    assert "no checkpoint was written" in message
  assert not (workdir / "metrics.json").exists()


SMALL_VOCAB = dict(
  vocab_size=1000,
  embedding_size=16,
  hidden_size=32,
  num_hidden_layers=1,
  num_attention_heads=2,
  intermediate_size=37,
  max_position_embeddings=64,
)


@pytest.fixture(scope="module")
def small_vocab_model(tmp_path_factory):
  """An HF masked LM with 1000 embeddings, converted without a tokenizer of its own: it gets
  the bundled 30k one, whose ids reach far beyond the model's vocabulary."""
  from tests.reference import hf_model  # noqa: PLC0415

  root = tmp_path_factory.mktemp("small_vocab")
  hf_model("masked_lm", **SMALL_VOCAB).save_pretrained(root / "hf")
  assert convert.main(["c", "--model", str(root / "hf"), "--output", str(root / "out")]) == 0
  return root


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(small_vocab_model, tmp_path, caplog):
  own = tmp_path / "hf"
  shutil.copytree(small_vocab_model / "hf", own)
  shutil.copy(bundled_model_path(), own / "spiece.model")  # its "own" 30k tokenizer
  with pytest.raises(UserError, match=r"its tokenizer has 30000 pieces but the model's "
                     r"vocab_size is 1000"):  # fmt: skip
    convert.main(["c", "--model", str(own), "--output", str(tmp_path / "out")])
  assert not (tmp_path / "out").exists()
  with caplog.at_level(logging.WARNING):
    from_pretrained(small_vocab_model / "out")  # the bundled one: a warning, ids checked at use
  assert "the bundled tokenizer has 30000 pieces, the model's vocab_size is 1000" in caplog.text


def test_token_ids_beyond_the_vocabulary_stop_fill_mask_and_finetuning(small_vocab_model, tmp_path):
  model = from_pretrained(small_vocab_model / "out")
  with pytest.raises(UserError, match=r"fill_mask: token id (\d{4,}) is outside the model's "
                     r"vocabulary \(vocab_size 1000"):  # fmt: skip
    FillMask(model)("The capital of France is [MASK].")
  config = load_config(
    "sst2_sample", {k: v for k, v in TINY.items() if not k.startswith("model_overrides")}
  )
  config.model, config.from_scratch = str(small_vocab_model / "out"), False
  for name in config.model_overrides:
    config.model_overrides[name] = None
  with pytest.raises(UserError, match=r"the train data: token id \d{4,} is outside"):
    finetune.run(config, str(tmp_path / "run"))


# ---- 3. a full disk: reported with the path, the previous checkpoint intact ----------------


def test_a_checkpoint_that_fails_for_a_full_disk_stops_the_run_naming_it(tmp_path, monkeypatch):
  from orbax.checkpoint._src.path import atomicity  # noqa: PLC0415

  finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def full_disk(self, *args, **kwargs):  # the background write of checkpoint 6 fails
    if "/6.orbax-checkpoint-tmp" in str(self.get()):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.get()))
    return await finalize(self, *args, **kwargs)

  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", full_disk)
  workdir = tmp_path / "run"
  with pytest.raises(OSError) as raised:
    finetune.run(load_config("sst2_sample", {**TINY, "num_train_steps": 12}), str(workdir))
  message = str(raised.value)
  print(message)
  assert raised.value.errno == errno.ENOSPC
  assert f"checkpoint 6 could not be written to {workdir / 'checkpoints'}: no space left" in message
  assert "Checkpoint 3 is intact" in message and "rerun the same command to resume" in message
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["3"]
  assert train_state(workdir, 3)["step"] == 3  # readable
  assert not (workdir / "metrics.json").exists()


def test_a_file_write_on_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
  path = tmp_path / "metrics.json"
  files.write_json(path, {"step": 1})

  def full_disk(fd, mode):
    os.close(fd)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, "fdopen", full_disk)
  with pytest.raises(OSError, match=f"cannot write {re.escape(str(path))}: No space left"):
    files.write_json(path, {"step": 2})
  monkeypatch.undo()
  assert json.loads(path.read_text()) == {"step": 1}
  assert os.listdir(tmp_path) == ["metrics.json"]  # no temporary file left


# ---- 4. config values out of range: exit 2, one line naming the field and value ------------


@pytest.mark.parametrize(
  "flag, message",
  [
    ("batch_size=0", "batch_size=0: must be an integer >= 1"),
    ("batch_size=-8", "batch_size=-8: must be an integer >= 1"),
    ("eval_batch_size=-4", "eval_batch_size=-4: must be an integer >= 1"),
    ("num_train_steps=0", "num_train_steps=0: must be an integer >= 1"),
    ("warmup_steps=-1", "warmup_steps=-1: must be an integer >= 0"),
    ("grad_accum_steps=0", "grad_accum_steps=0: must be an integer >= 1"),
    ("keep_checkpoints=0", "keep_checkpoints=0: must be an integer >= 1"),
    ("log_every_steps=-1", "log_every_steps=-1: must be an integer >= 0"),
    ("eval_every_steps=-10", "eval_every_steps=-10: must be an integer >= 0"),
    ("checkpoint_every_steps=-5", "checkpoint_every_steps=-5: must be an integer >= 0"),
    ("max_seq_length=0", "max_seq_length=0: must be an integer >= 8"),
    ("max_eval_examples=0", "max_eval_examples=0: must be an integer >= 1"),
    ("learning_rate=0", "learning_rate=0.0: must be a finite number > 0"),
    ("learning_rate=-0.001", "learning_rate=-0.001: must be a finite number > 0"),
    ("learning_rate=nan", "learning_rate=nan: must be a finite number > 0"),
    ("weight_decay=-0.1", "weight_decay=-0.1: must be a finite number >= 0"),
    ("num_epochs=0", "num_epochs=0.0: must be > 0"),
    ("warmup_fraction=1.5", "warmup_fraction=1.5: must be in [0, 1]"),
    (
      "best_metric=mcc",
      "best_metric='mcc' is not a metric task 'sst2' reports; choose one of accuracy.",
    ),  # fmt: skip
  ],
)
def test_a_config_value_out_of_range_is_one_line_and_exit_2(
  flag, message, tmp_path, capsys, monkeypatch
):
  flag_values = command.flag_values("finetune")  # as `python -m albert_jax.finetune`, anew:
  main = command.main_of(finetune.run, flag_values, "finetune")  # an override flag parses once

  argv = ["finetune", f"--config={SST2_SAMPLE}", f"--config.{flag}", f"--workdir={tmp_path}/run"]
  monkeypatch.setattr(sys, "argv", argv)  # where config flags look for --config's overrides
  with pytest.raises(SystemExit) as exited:
    cli.run(main, flag_values)
  err = capsys.readouterr().err
  assert exited.value.code == EXIT_USER_ERROR, err
  assert err == f"error: {message.rstrip('.')}.\n"
  assert not (tmp_path / "run").exists()  # refused before any work


# ---- 5. the training data changed between a checkpoint and its resumption ------------------


def test_resuming_on_changed_training_data_is_refused_or_restarts_the_epoch(tmp_path):
  train = tmp_path / "train.tsv"
  lines = (ROOT / "albert_jax/assets/samples/sst2_sample/train.tsv").read_text().splitlines()
  train.write_text("\n".join(lines) + "\n")
  # max_length batching: the data position counts examples, as the arithmetic below does
  config = load_config(
    "sst2_sample",
    {**TINY, "num_train_steps": 6, "train_file": str(train), "batching": "max_length"},
  )
  workdir = tmp_path / "run"
  run_killed(finetune.run, config, str(workdir), at_step=4)  # after checkpoint 3
  flipped = [lines[0]] + [f"{t}\t{1 - int(y)}" for t, y in (x.split("\t") for x in lines[1:])]
  train.write_text("\n".join(flipped) + "\n")  # same size, other labels
  with pytest.raises(UserError, match=r"The training data changed since the checkpoint was saved "
                     r"\(64 examples, sha256 .* --config.allow_data_change=True"):  # fmt: skip
    finetune.run(config, str(workdir))

  train.write_text("\n".join(flipped[:20]) + "\n")  # fewer examples than the saved position
  config.allow_data_change = True
  metrics = finetune.run(config, str(workdir))
  assert metrics["step"] == 6
  with open(workdir / "checkpoints" / "6" / "data" / "metadata") as f:
    position = json.load(f)
  assert position["data"]["examples"] == 19
  # 3 steps of 8 on the old data reached (epoch 0, index 24); the new data restarts epoch 0:
  # 3 more steps of 8 = 24 examples = one epoch of 19 + 5.
  assert (position["epoch"], position["index"]) == (1, 5)


# ---- 6. checksums: a changed byte in a converted model is an error naming the file -----------


def test_a_flipped_byte_in_a_converted_model_is_an_error_naming_the_file(
  small_vocab_model, tmp_path
):
  out = tmp_path / "out"
  shutil.copytree(small_vocab_model / "out", out)
  meta = json.loads((out / "albert_jax.json").read_text())
  assert set(meta["checksums"]) >= {"config.json", "spiece.model"}
  arrays = [name for name in meta["checksums"] if name.startswith("params/")]
  biggest = max(arrays, key=lambda name: (out / name).stat().st_size)  # the array data
  from_pretrained(out)  # intact: loads
  data = bytearray((out / biggest).read_bytes())
  data[len(data) // 2] ^= 0x01  # one bit of one weight
  (out / biggest).write_bytes(bytes(data))
  with pytest.raises(UserError, match=rf"{re.escape(str(out / biggest))} does not match its "
                     r"checksum in .*albert_jax.json: the file is damaged"):  # fmt: skip
    from_pretrained(out)


def test_a_flipped_byte_in_a_train_state_checkpoint_stops_the_resume_naming_it(tmp_path):
  overrides = {**TINY, "num_train_steps": 9}
  workdir, env = tmp_path / "run", environment()
  config = load_config("sst2_sample", overrides)
  run_killed(finetune.run, config, str(workdir), at_step=7)  # checkpoints 3 and 6 are written
  step_6 = workdir / "checkpoints" / "6"
  recorded = json.loads((step_6 / "checksums.json").read_text())
  biggest = max(recorded, key=lambda name: (step_6 / name).stat().st_size)
  assert biggest.startswith("state/")
  data = bytearray((step_6 / biggest).read_bytes())
  data[len(data) // 2] ^= 0x01
  (step_6 / biggest).write_bytes(bytes(data))

  command = finetune_command(workdir, overrides)
  run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == EXIT_USER_ERROR, run.stderr[-3000:]
  assert run.stderr.endswith(
    f"error: {step_6 / biggest} does not match its checksum in {step_6 / 'checksums.json'}: "
    f"the file is damaged or was changed. Checkpoint 6 is damaged. Delete {step_6} to resume "
    "from checkpoint 3 (the one before it), or start a new run in another --workdir.\n"
  ), run.stderr[-3000:]
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["3", "6"]
  assert not (workdir / "metrics.json").exists()

  shutil.rmtree(step_6)  # as the message says: the run resumes from 3 and ends as a straight one
  done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  straight = finetune.run(config, str(tmp_path / "straight"))
  assert json.loads(done.stdout) == straight
  assert_trees_equal(train_state(workdir, 9), train_state(tmp_path / "straight", 9))


# ---- 7. messages: what features did to the texts --------------------------------------------


def test_features_says_when_it_truncates_or_lowers_max_seq_length(tmp_path, capsys):
  from albert_jax.features import main as features_main  # noqa: PLC0415
  from tests.reference import hf_model  # noqa: PLC0415

  # the bundled tokenizer's 30000 ids; 16 positions: a text of 20 words is cut
  hf_model("masked_lm", **{**SMALL_VOCAB, "vocab_size": 30000, "max_position_embeddings": 16})\
    .save_pretrained(tmp_path / "hf")  # fmt: skip
  texts = ["a short text", " ".join(["word"] * 20), "another short one", " ".join(["x"] * 30)]
  (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
  argv = ["x", "--model", str(tmp_path / "hf"), "--input", str(tmp_path / "texts.txt"),
          "--output", str(tmp_path / "f.npz")]  # fmt: skip
  capsys.readouterr()

  def notices() -> list[str]:  # stderr's lines but the progress bar's
    return [line for line in capsys.readouterr().err.splitlines() if "max_seq_length" in line]

  assert features_main([*argv, "--max_seq_length", "100"]) == 0
  assert notices() == [
    "features: max_seq_length 100 is more than the model's max_position_embeddings 16; using 16.",
    "features: 2 of 4 texts are longer than max_seq_length 16 tokens and were truncated to it "
    "(the first: text 2).",
  ]
  assert features_main([*argv, "--max_seq_length", "8", "--overwrite"]) == 0
  assert notices() == [
    "features: 2 of 4 texts are longer than max_seq_length 8 tokens and were truncated to it "
    "(the first: text 2).",
  ]  # "another short one" is 5 tokens with [CLS] and [SEP]


# ---- 8. fault injection: SIGKILL at random moments, mid-step and mid-save --------------------

KILL_SEED, KILLS, RETRIES = 18, 10, 8
# room for 18 kills: each costs the steps to the next checkpoint (3), at most 54 in all
LONG = {**TINY, "num_train_steps": 100}


def _kill_at_a_moment(command, env, log, directory: pathlib.Path, mid_save: bool, delay: float):
  """Starts `command` and SIGKILLs it the moment a new checkpoint's temporary directory appears
  (mid-save), or `delay` seconds after a new checkpoint is complete (mid-step); says where it
  struck. stderr goes to the file `log` (a pipe nobody reads could fill and stall the run)."""
  before = set(os.listdir(directory)) if directory.is_dir() else set()
  with open(log, "w") as err:
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
  start = time.monotonic()
  try:
    while True:
      assert proc.poll() is None, log.read_text()[-3000:]  # it must not finish first
      assert time.monotonic() - start < 300, "no checkpoint appeared"
      new = (set(os.listdir(directory)) if directory.is_dir() else set()) - before
      if saving := [name for name in new if ".orbax-checkpoint-tmp" in name and mid_save]:
        step = saving[0].split(".")[0]
        proc.kill()
        proc.wait()
        if (directory / step).is_dir():  # a tiny checkpoint: its save may finish first
          return f"mid-save of {step}, but the save completed before the kill landed"
        return f"mid-save of {step}"
      if done := [int(name) for name in new if name.isdigit() and not mid_save]:
        time.sleep(delay)
        return f"{delay:.3f} s after checkpoint {max(done)} was complete (mid-step)"
      time.sleep(0.001)
  finally:
    proc.kill()
    proc.wait()


def test_sigkill_at_ten_random_moments_ends_identical(tmp_path):
  reference = tmp_path / "reference"
  metrics = finetune.run(load_config("sst2_sample", LONG), str(reference))
  rng = np.random.default_rng(KILL_SEED)
  print(f"kill moments drawn with seed {KILL_SEED}")
  workdir, env = tmp_path / "run", environment()
  command = finetune_command(workdir, LONG)
  # half the kills strike mid-save, half mid-step, in a random order
  mid_saves, struck = rng.permutation([True, False] * (KILLS // 2)), []
  retries = RETRIES  # a tiny save can complete before the kill lands: aim at the next one
  for k, mid_save in enumerate(mid_saves):
    delay = float(rng.uniform(0, 0.1))
    while True:
      where = _kill_at_a_moment(
        command, env, tmp_path / "stderr.txt", workdir / "checkpoints", mid_save, delay
      )
      print(f"kill {k + 1}: {where}; latest checkpoint now {_latest_step(workdir)}")
      struck.append(where)
      if "completed" not in where or not retries:
        break
      retries -= 1
  # measured: 3, then 5, of 5 kills aimed at a save struck mid-save (else just after it); each
  # miss is retried (at most RETRIES in all), so every aimed kill strikes mid-save unless the
  # retries run out, and at least one must
  assert any(w.startswith("mid-save") and "completed" not in w for w in struck), struck
  done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert json.loads(done.stdout) == metrics == json.loads((workdir / "metrics.json").read_text())
  steps = LONG["num_train_steps"]
  assert_trees_equal(train_state(workdir, steps), train_state(reference, steps))  # bit for bit


def _latest_step(workdir: pathlib.Path) -> int | None:
  steps = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
  return max(steps, default=None)
