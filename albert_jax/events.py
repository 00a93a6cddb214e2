"""TensorBoard event files of scalars, written and read without TensorFlow, tensorboardX or
protobuf.

A run's train and eval metrics go to `events.out.tfevents.<time>.<host>.<pid>` in its logdir,
which TensorBoard (and `tf.compat.v1.train.summary_iterator`) reads; `read_scalars(logdir)`
gives them back as {tag: {step: value}} (for plots; it reads `simple_value` scalars, as this
writer and tensorboardX write them, not TF2's tensor summaries). Written here because the
writers that exist cost every run seconds at start-up: tensorboardX imports torch when it is
installed (as on Colab), TensorFlow is larger still.

The format: a file of records, each `length` (uint64, little-endian), the masked CRC-32C
(`albert_jax.crc32c`) of those 8 bytes (uint32), the payload, its masked CRC-32C (uint32); the
first payload an `Event` holding `file_version = "brain.Event:2"`, then one `Event` per scalar:

  Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
  Summary { repeated Value value = 1; }
  Value   { string tag = 1; float simple_value = 2; }

encoded by hand below (protobuf's wire format: a varint key `field << 3 | wire type`, then the
value: 1 = 8 bytes, 5 = 4 bytes, 0 = varint, 2 = varint length + bytes).
"""

from __future__ import annotations

import glob
import os
import socket
import struct
import time
from collections import defaultdict

from albert_jax import crc32c

_FILE_VERSION = b"brain.Event:2"


def record(payload: bytes) -> bytes:
  """One TFRecord: length, its checksum, the payload, its checksum."""
  length = struct.pack("<Q", len(payload))
  return (
    length
    + struct.pack("<I", crc32c.masked(length))
    + payload
    + struct.pack("<I", crc32c.masked(payload))
  )


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    bits, value = value & 0x7F, value >> 7
    out.append(bits | (0x80 if value else 0))
    if not value:
      return bytes(out)


def _bytes_field(field: int, data: bytes) -> bytes:
  return _varint(field << 3 | 2) + _varint(len(data)) + data


def event(wall_time: float, step: int = 0, *, file_version: bytes = b"", scalars=()) -> bytes:
  """An `Event` payload: `scalars` is [(tag, value)] (floats, stored as float32)."""
  if step < 0:
    raise ValueError(f"step={step}: TensorBoard steps are >= 0.")
  out = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step)
  if file_version:
    out += _bytes_field(3, file_version)
  if scalars:
    values = b"".join(
      _bytes_field(1, _bytes_field(1, tag.encode()) + b"\x15" + struct.pack("<f", value))
      for tag, value in scalars
    )
    out += _bytes_field(5, values)
  return out


class EventWriter:
  """Appends scalar events to a new event file in `logdir` (created if missing)."""

  def __init__(self, logdir: str | os.PathLike):
    os.makedirs(logdir, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    self.path = os.path.join(os.fspath(logdir), name)
    self._file = open(self.path, "ab")  # noqa: SIM115  (closed by close())
    self._file.write(record(event(time.time(), file_version=_FILE_VERSION)))
    self._file.flush()

  def scalars(self, step: int, values: dict[str, float]) -> None:
    """One event per tag at `step`, as TensorBoard's writers do."""
    now = time.time()
    for tag, value in values.items():
      self._file.write(record(event(now, step, scalars=[(tag, float(value))])))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    if not self._file.closed:
      self._file.close()


def _fields(data: bytes):
  """(field number, value) of a protobuf message: ints for varints, bytes otherwise."""
  i = 0
  while i < len(data):
    key, i = _read_varint(data, i)
    field, kind = key >> 3, key & 7
    if kind == 0:
      value, i = _read_varint(data, i)
    elif kind == 1:
      value, i = data[i : i + 8], i + 8
    elif kind == 5:
      value, i = data[i : i + 4], i + 4
    elif kind == 2:
      n, i = _read_varint(data, i)
      value, i = data[i : i + n], i + n
    else:
      raise ValueError(f"wire type {kind} is not one an Event uses")
    yield field, value


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
  value = shift = 0
  while True:
    byte = data[i]
    value |= (byte & 0x7F) << shift
    i, shift = i + 1, shift + 7
    if not byte & 0x80:
      return value, i


def records(path: str | os.PathLike):
  """The payloads of a TFRecord file; stops at a record cut short (a run still writing),
  raises ValueError naming the file at a checksum that does not match."""
  with open(path, "rb") as f:
    data = f.read()
  i = 0
  while i + 12 <= len(data):
    header = data[i : i + 8]
    (n,) = struct.unpack("<Q", header)
    if struct.unpack("<I", data[i + 8 : i + 12])[0] != crc32c.masked(header):
      raise ValueError(f"{path}: corrupt record at byte {i} (length checksum)")
    if i + 16 + n > len(data):
      return
    payload = data[i + 12 : i + 12 + n]
    if struct.unpack("<I", data[i + 12 + n : i + 16 + n])[0] != crc32c.masked(payload):
      raise ValueError(f"{path}: corrupt record at byte {i} (data checksum)")
    yield payload
    i += n + 16


def read_scalars(logdir: str | os.PathLike) -> dict[str, dict[int, float]]:
  """{tag: {step: value}} of the scalar events in `logdir`'s event files (later files win)."""
  out: dict[str, dict[int, float]] = defaultdict(dict)
  for path in sorted(glob.glob(os.path.join(os.fspath(logdir), "events.out.tfevents.*"))):
    for payload in records(path):
      step, values = 0, []
      for field, value in _fields(payload):
        if field == 2:
          step = value
        elif field == 5:
          values += [v for f, v in _fields(value) if f == 1]
      for value in values:
        tag, number = None, None
        for f, v in _fields(value):
          if f == 1:
            tag = v.decode()
          elif f == 2:
            (number,) = struct.unpack("<f", v)
        if tag is not None and number is not None:
          out[tag][step] = number
  return dict(out)
