"""CRC-32C (Castagnoli) and TFRecord's masked form of it: the checksums of every TFRecord file
the project reads or writes (the pretraining data, `albert_jax.data.pretraining.records`;
TensorBoard's event files, `albert_jax.events`). Table-driven, vectorized over rows of bytes."""

from __future__ import annotations

import numpy as np


def _table() -> np.ndarray:
  table = np.arange(256, dtype=np.uint32)
  for _ in range(8):
    table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1)
  return table.astype(np.uint32)


_TABLE = _table()


def crc32c_rows(data_NK: np.ndarray) -> np.ndarray:
  """The CRC-32C of each row of `data_NK` (uint8): [N, K] -> [N] uint32."""
  crc_N = np.full(data_NK.shape[0], 0xFFFFFFFF, dtype=np.uint32)
  for k in range(data_NK.shape[1]):
    crc_N = _TABLE[(crc_N ^ data_NK[:, k]) & 0xFF] ^ (crc_N >> 8)
  return crc_N ^ np.uint32(0xFFFFFFFF)


def masked_rows(data_NK: np.ndarray) -> np.ndarray:
  """TFRecord's checksum of each row: the CRC-32C rotated right by 15 bits plus a constant."""
  crc_N = crc32c_rows(data_NK)
  return (((crc_N >> 15) | (crc_N << 17)) + np.uint32(0xA282EAD8)).astype(np.uint32)


def masked(data: bytes) -> int:
  """TFRecord's checksum of `data`."""
  return int(masked_rows(np.frombuffer(data, dtype=np.uint8)[None])[0])
