"""The notebooks in notebooks/ run top to bottom, offline and small, and produce what they say.

Each notebook runs in a fresh kernel (nbclient, the `python3` kernel of this interpreter) with
a cell of parameters injected after its `parameters` cell, as papermill does: a tiny random HF
ALBERT as the model (converted by the notebook itself), the bundled SST-2 sample instead of
tensorflow-datasets, a few steps. The checks read the notebook's outputs: the JSON line it
prints after `NOTEBOOK_RESULT `, its images, the files it wrote.
"""

import json
import math
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from tests import runs

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PREFIX = "NOTEBOOK_RESULT "
TIMEOUT_S = 600  # per cell: a busy 2-core machine is slow, a hung kernel still ends
TINY = dict(runs.TINY, vocab_size=30000)  # the suite's tiny model; the bundled tokenizer's ids


def repo_url() -> str:
  """The repository's URL: the one line `Repository: URL` of notebooks/README.md."""
  (url,) = re.findall(r"^Repository: (\S+)$", (NOTEBOOKS / "README.md").read_text(), re.M)
  return url


@pytest.fixture(scope="module")
def tiny_hf_model(tmp_path_factory):
  """A random-weight HF `AlbertForMaskedLM` directory, as the hub's albert-base-v2 is."""
  transformers = pytest.importorskip("transformers")
  import torch

  torch.manual_seed(0)
  directory = tmp_path_factory.mktemp("tiny_hf")
  transformers.AlbertForMaskedLM(transformers.AlbertConfig(**TINY)).save_pretrained(directory)
  return directory


def execute(name: str, parameters: dict, workdir: Path, monkeypatch) -> nbformat.NotebookNode:
  """Runs notebooks/NAME.ipynb in `workdir` with `parameters` injected, in a `python3` kernel
  of this interpreter."""
  # This environment's kernel specs first (a user's `python3` spec could name another Python);
  # jupyter_client runs the spec's `python` as sys.executable.
  monkeypatch.setenv("JUPYTER_PATH", os.path.join(sys.prefix, "share", "jupyter"))
  nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
  (at,) = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
  injected = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
  cell = nbformat.v4.new_code_cell(injected, metadata={"tags": ["injected-parameters"]})
  nb.cells.insert(at + 1, cell)
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
  env.update(JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
  client = NotebookClient(
    nb, timeout=TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
  )
  start = time.perf_counter()
  client.execute(env=env)
  seconds = time.perf_counter() - start
  print(f"\n{name}.ipynb executed in {seconds:.1f} s")
  assert f"Python {sys.executable}\n" in stream_text(nb)  # the install cell says which
  return nb


def outputs(nb) -> list:
  return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def stream_text(nb) -> str:
  return "".join(o.get("text", "") for o in outputs(nb) if o.output_type == "stream")


def result(nb) -> dict:
  """The JSON the notebook printed after PREFIX (exactly one such line)."""
  (line,) = [x for x in stream_text(nb).splitlines() if x.startswith(PREFIX)]
  return json.loads(line[len(PREFIX) :])


def images(nb) -> int:
  return sum("image/png" in o.get("data", {}) for o in outputs(nb))


def finite(x) -> bool:
  return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def test_finetune_notebook_runs_offline(tiny_hf_model, tmp_path, monkeypatch):
  steps = 4
  nb = execute(
    "finetune",
    dict(
      MODEL=str(tiny_hf_model),
      STEPS=steps,
      BATCH=8,
      MAX_SEQ_LENGTH=64,
      EVAL_EVERY=2,
      WORKDIR=str(tmp_path / "work"),
      REPO_DIR=str(ROOT),
      INSTALL=False,
      OFFLINE=True,
      TENSORBOARD=False,
    ),
    tmp_path,
    monkeypatch,
  )
  r = result(nb)
  assert r["runtime"]["platform"] == "cpu" and r["runtime"]["dtype"] == "float32"
  assert r["runtime"]["mesh"] == {"data": 1, "fsdp": 1, "tensor": 1}
  assert r["steps"] == steps and finite(r["final_train_loss"])
  assert r["dev_metrics"]["step"] == steps
  accuracy = r["dev_metrics"]["validation"]["accuracy"]
  assert finite(accuracy) and 0 <= accuracy <= 1
  curve = r["eval_curves"]["eval_validation/accuracy"]
  assert sorted(map(int, curve)) == [2, 4]  # every EVAL_EVERY steps, and the last
  assert np.float32(curve["4"]) == np.float32(accuracy)  # TensorBoard keeps float32
  assert finite(curve["2"])
  # The plot: saved as a PNG file and shown in the notebook.
  assert Path(r["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert images(nb) >= 1
  # Predictions for each typed sentence, with the task's label names and a probability.
  labels = {"negative", "positive"}
  assert len(r["predictions"]) == 3
  assert all(p["label"] in labels and 0 <= p["score"] <= 1 for p in r["predictions"])
  # The exported model loads: with albert_jax, and with transformers (same labels).
  import albert_jax

  model = albert_jax.from_pretrained(r["export"])
  assert model.head == "sequence_classification" and model.num_labels == 2
  assert (Path(r["hf_dir"]) / "config.json").is_file()
  assert r["hf_labels"] == [p["label"] for p in r["predictions"]]


def test_research_notebook_runs_offline(tiny_hf_model, tmp_path, monkeypatch):
  nb = execute(
    "research",
    dict(
      MODEL=str(tiny_hf_model),
      IG_STEPS=8,
      OUTPUT_DIR=str(tmp_path / "figures"),
      REPO_DIR=str(ROOT),
      INSTALL=False,
    ),
    tmp_path,
    monkeypatch,
  )
  r = result(nb)
  layers, heads = TINY["num_hidden_layers"], TINY["num_attention_heads"]
  k, n, length, _ = r["attention_shape"]
  assert (k, n) == (layers, heads) and length > 2
  assert r["attention_row_sum_error"] < 1e-5  # softmax rows in f32
  assert r["hidden_states_shape"] == [layers + 1, 1, length, TINY["hidden_size"]]
  assert len(r["layer_change"]) == layers and all(map(finite, r["layer_change"]))
  assert len(r["probe_accuracy"]) == layers + 1
  assert all(finite(a) and 0 <= a <= 1 for a in r["probe_accuracy"])
  assert len(r["ig_per_token"]) == length and all(map(finite, r["ig_per_token"]))
  assert finite(r["ig_total"]) and finite(r["ig_difference"])
  assert [len(row) for row in r["head_importance"]] == [heads] * layers
  assert all(finite(v) for row in r["head_importance"] for v in row)
  assert 1 <= r["best_layer"] <= layers  # a layer after attention: its heads matter
  assert max(v for row in r["head_importance"] for v in row) > 0
  assert r["depth_change"] and all(map(finite, r["depth_change"].values()))
  for figure in r["figures"]:
    assert Path(figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert images(nb) == len(r["figures"])


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
  """Stored notebooks carry no outputs or execution counts (diffs stay readable), run in the
  `python3` kernel and have one `parameters` cell."""
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert [c for c in code if c.outputs or c.execution_count is not None] == []
  assert nb.metadata.kernelspec.name == "python3"
  (parameters,) = [c for c in code if "parameters" in c.metadata.get("tags", [])]
  assert f'REPO_URL = "{repo_url()}"' in parameters.source


def test_readme_links_the_notebooks_through_one_url():
  """README.md opens every notebook in Colab at the repository's URL (notebooks/README.md)."""
  owner_repo = repo_url().removeprefix("https://github.com/")
  readme = (ROOT / "README.md").read_text()
  links = re.findall(r"https://colab\.research\.google\.com/github/\S+?\.ipynb", readme)
  expected = {
    f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{p.name}"
    for p in NOTEBOOKS.glob("*.ipynb")
  }
  assert expected and set(links) == expected
