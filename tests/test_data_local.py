"""albert_jax.data.local: file encodings (BOM, non-UTF-8) give rows or a clear error."""

from __future__ import annotations

import pytest

from albert_jax.data import local, tasks
from albert_jax.errors import UserError


def test_utf8_bom_header_is_read(tmp_path):
  """Excel and Notepad write a byte-order mark; the header must still read `sentence`."""
  path = tmp_path / "train.tsv"
  path.write_bytes("\ufeffsentence\tlabel\ngood film\t1\n".encode())
  rows = local.read_table(path)
  assert rows == [(f"{path} line 2", {"sentence": "good film", "label": "1"})]
  examples = tasks.load_examples(tasks.get_task("sst2"), "train", files={"train": path})
  assert examples[0]["text_a"] == "good film"
  jsonl = tmp_path / "train.jsonl"
  jsonl.write_bytes('\ufeff{"sentence": "a", "label": 0}\n'.encode())
  assert local.read_table(jsonl)[0][1] == {"sentence": "a", "label": 0}


def test_non_utf8_file_names_the_file_and_line(tmp_path):
  path = tmp_path / "train.tsv"
  path.write_bytes("sentence\tlabel\ngood\t1\nna\u00efve\t0\n".encode("latin-1"))
  with pytest.raises(UserError, match=r"train.tsv line 3 is not UTF-8 \(bytes b'\\xef'\)"):
    local.read_table(path)
