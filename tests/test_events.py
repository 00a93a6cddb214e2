"""TensorBoard event files (albert_jax.events) against the readers and writers TensorBoard users
have: TensorFlow's own reader (checksums verified in C++) and tensorboardX's writer."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from albert_jax import crc32c, events

SCALARS = {  # step -> {tag: value}; values not exact in float32 on purpose
  0: {"train/loss": 0.6931471805599453, "train/lr": 1e-5},
  10: {"train/loss": 0.25, "eval_validation/accuracy": 2 / 3},
  1234567890123: {"train/loss": -3.4e38},  # a step past 32 bits, the float32 range's end
}


def write(logdir):
  writer = events.EventWriter(logdir)
  for step, values in SCALARS.items():
    writer.scalars(step, values)
  writer.close()
  return writer.path


# Prints, for each event file, [[wall_time, step, file_version, [[tag, simple_value], ...]], ...]
# or the name of the error reading it raised.
READ_WITH_TF = """
import json, sys
import tensorflow as tf
files = []
for path in sys.argv[1:]:
  try:
    files.append([
      [e.wall_time, e.step, e.file_version, [[v.tag, v.simple_value] for v in e.summary.value]]
      for e in tf.compat.v1.train.summary_iterator(path)
    ])
  except Exception as error:
    files.append(type(error).__name__)
print(json.dumps(files))
"""


def read_with_tensorflow(*paths):
  done = subprocess.run(
    [sys.executable, "-c", READ_WITH_TF, *map(str, paths)],
    capture_output=True,
    text=True,
    env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
  )
  assert done.returncode == 0, done.stderr[-2000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_check_value_of_crc32c():
  def crc(data: bytes) -> int:
    return int(crc32c.crc32c_rows(np.frombuffer(data, dtype=np.uint8)[None])[0])

  assert crc(b"123456789") == 0xE3069283  # CRC-32C's published check value
  assert crc(b"") == 0


def test_tensorflow_reads_what_we_write_and_refuses_it_damaged(tmp_path):
  """TensorFlow reads the file; one flipped payload byte is a DataLossError there (and here),
  so the checksums are TensorFlow's and the good file's reading is not luck."""
  path = write(tmp_path / "tb")
  damaged = tmp_path / "damaged" / os.path.basename(path)
  damaged.parent.mkdir()
  data = bytearray(open(path, "rb").read())
  data[-10] ^= 0x01  # inside the last event's payload
  damaged.write_bytes(bytes(data))
  got, refused = read_with_tensorflow(path, damaged)
  assert refused == "DataLossError"
  with pytest.raises(ValueError, match="corrupt record"):
    events.read_scalars(damaged.parent)
  assert got[0][2] == "brain.Event:2" and got[0][3] == []
  expected = [
    [step, [[tag, float(np.float32(value))]]]
    for step, values in SCALARS.items()
    for tag, value in values.items()
  ]
  assert [[e[1], e[3]] for e in got[1:]] == expected
  wall = [e[0] for e in got]
  assert wall == sorted(wall) and abs(wall[-1] - wall[0]) < 60
  assert os.path.basename(path).startswith("events.out.tfevents.")


def test_we_read_what_tensorboardx_writes(tmp_path):
  tensorboardx = pytest.importorskip("tensorboardX")
  writer = tensorboardx.SummaryWriter(str(tmp_path))
  for step, values in SCALARS.items():
    for tag, value in values.items():
      writer.add_scalar(tag, value, step)
  writer.close()
  expected = {}
  for step, values in SCALARS.items():
    for tag, value in values.items():
      expected.setdefault(tag, {})[step] = float(np.float32(value))
  assert events.read_scalars(tmp_path) == expected


def test_read_scalars_round_trip_and_a_record_cut_short(tmp_path):
  path = write(tmp_path)
  expected = {}
  for step, values in SCALARS.items():
    for tag, value in values.items():
      expected.setdefault(tag, {})[step] = float(np.float32(value))
  assert events.read_scalars(tmp_path) == expected
  data = open(path, "rb").read()
  open(path, "wb").write(data[:-5])  # a run still writing its last event
  del expected["train/loss"][1234567890123]
  assert events.read_scalars(tmp_path) == expected


def test_a_negative_step_is_refused(tmp_path):
  writer = events.EventWriter(tmp_path)
  with pytest.raises(ValueError, match="step=-1"):
    writer.scalars(-1, {"x": 1.0})
  writer.close()
