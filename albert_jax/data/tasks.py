"""Fine-tuning tasks: GLUE, SQuAD v1.1/v2.0, RACE and token classification (CoNLL-2003 NER, POS
and chunks; WikiANN), from tensorflow-datasets or local files.

One small API for every task, used by `albert_jax.finetune`:

  task = get_task("mnli")
  examples = load_examples(task, "train")                      # tfds 'glue/mnli'
  examples = load_examples(task, "train", files={"train": "mnli_train.tsv"})  # local file
  features = featurize(task, examples, tokenizer, max_seq_length=128)  # SQuAD train: training=True
  ... model outputs for features.arrays, batch by batch, concatenated ...
  predictions, metrics = postprocess(task, examples, features, outputs)
  paths = write_predictions(task, predictions, out_dir, "validation")

Examples are plain dicts (per family: `albert_jax.data.glue`, `.squad`, `.race`, `.ner`); features
are int32 arrays named as `albert_jax.train` expects its batches, plus `example_index` (the row's
example in `examples`) and whatever `postprocess` needs in `meta`. Bad input (an unknown task, a
missing column, a label outside the task's set, an empty dataset, a `max_seq_length` the model
cannot take) raises ValueError naming the offending file, column or value before any model work.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import inspect
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from albert_jax.data import conll, glue, local, ner, race, squad
from albert_jax.errors import UserError

HEAD_SEQUENCE_CLASSIFICATION = "sequence_classification"
HEAD_QUESTION_ANSWERING = "question_answering"
HEAD_MULTIPLE_CHOICE = "multiple_choice"
HEAD_TOKEN_CLASSIFICATION = "token_classification"


@dataclasses.dataclass(frozen=True)
class Task:
  """What a fine-tuning task is: its head, its labels and the splits it is evaluated on."""

  name: str  # 'cola', ..., 'squad_v1', 'squad_v2', 'race_high', 'race_middle', 'race_all'
  head: str  # 'sequence_classification' | 'question_answering' | 'multiple_choice' | 'token_...'
  num_labels: int  # 1 = regression (stsb); classes (GLUE); choices (RACE: 4); tags; 0 for SQuAD
  eval_splits: tuple[str, ...]  # the splits to evaluate on, e.g. ('validation',)
  label_names: tuple[str, ...]  # class names by label id; () for stsb and SQuAD


@dataclasses.dataclass
class Features:
  """Model inputs for a list of examples.

  arrays: int32 `input_ids`, `attention_mask`, `token_type_ids` [N, L] ([N, C, L] for
    multiple choice); `example_index` [N] (the feature's example); labels: `label` [N] (int32;
    float32 for regression; -1 where unknown) or `start_positions`, `end_positions` [N].
  meta: what `postprocess` needs besides the arrays (SQuAD: see `albert_jax.data.squad`).
  """

  arrays: dict[str, np.ndarray]
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return int(self.arrays["input_ids"].shape[0])


@dataclasses.dataclass
class Predictions:
  """A task's predictions, keyed by example id (GLUE `idx`, SQuAD / RACE question id).

  values: predicted label id (classification), score (regression), answer text ('' = no answer;
    SQuAD), choice letter (RACE) or (word, gold tag, predicted tag) per word of a sentence (token
    classification).
  null_odds: SQuAD v2 only: score(no answer) - score(best span) per question id.
  """

  values: dict[Any, Any]
  null_odds: dict[str, float] | None = None

  def __len__(self) -> int:
    return len(self.values)


def _glue(name: str, label_names: tuple[str, ...], eval_splits=("validation",)) -> Task:
  num_labels = len(label_names) or 1
  return Task(name, HEAD_SEQUENCE_CLASSIFICATION, num_labels, eval_splits, label_names)


TASKS: dict[str, Task] = {
  task.name: task
  for task in (
    _glue("cola", ("unacceptable", "acceptable")),
    _glue("sst2", ("negative", "positive")),
    _glue("mrpc", ("not_equivalent", "equivalent")),
    _glue("qqp", ("not_duplicate", "duplicate")),
    _glue("stsb", ()),
    _glue(
      "mnli",
      ("entailment", "neutral", "contradiction"),
      ("validation_matched", "validation_mismatched"),
    ),
    _glue("qnli", ("entailment", "not_entailment")),
    _glue("rte", ("entailment", "not_entailment")),
    _glue("wnli", ("not_entailment", "entailment")),
    Task("squad_v1", HEAD_QUESTION_ANSWERING, 0, ("validation",), ()),
    Task("squad_v2", HEAD_QUESTION_ANSWERING, 0, ("validation",), ()),
    *(
      Task(f"race_{level}", HEAD_MULTIPLE_CHOICE, 4, ("dev", "test"), race.LETTERS)
      for level in ("high", "middle", "all")
    ),
    *(
      Task(name, HEAD_TOKEN_CLASSIFICATION, len(t.label_names), t.eval_splits, t.label_names)
      for name, t in ner.TASKS.items()
    ),
  )
}

# The tensorflow-datasets builders each task reads (race_all: both levels, concatenated).
TFDS_BUILDERS: dict[str, tuple[str, ...]] = {
  **{name: (f"glue/{name}",) for name in glue.COLUMNS},
  "squad_v1": ("squad/v1.1",),
  "squad_v2": ("squad/v2.0",),
  "race_high": ("race/high",),
  "race_middle": ("race/middle",),
  "race_all": ("race/high", "race/middle"),
  **{name: (t.builder,) for name, t in ner.TASKS.items()},
}


# Small datasets shipped with the package (written for albert_jax; see assets/samples/README.md):
# task -> split -> file name under albert_jax/assets/samples/.
SAMPLES: dict[str, dict[str, str]] = {
  "sst2": {"train": "sst2_sample/train.tsv", "validation": "sst2_sample/dev.tsv"},
  "squad_v1": {"train": "squad_sample/train.json", "validation": "squad_sample/dev.json"},
  "conll2003": {"train": "ner_sample/train.conll", "dev": "ner_sample/dev.conll"},
}


def sample_files(name: str) -> dict[str, str]:
  """The `files` argument of `load_examples` for a bundled sample ('sst2', 'squad_v1' or
  'conll2003': the NER sample)."""
  task = get_task(name)
  if task.name not in SAMPLES:
    raise ValueError(f"no bundled sample for {task.name}; samples exist for {', '.join(SAMPLES)}")
  root = importlib.resources.files("albert_jax") / "assets" / "samples"
  return {split: str(root / path) for split, path in SAMPLES[task.name].items()}


def get_task(name: str) -> Task:
  """The task called `name`: a `TASKS` key, any case; also 'sst-2', 'sts-b', 'squad_v1.1'."""
  key = name.strip().lower()
  key = _ALIASES.get(key, key)
  if key not in TASKS:
    raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
  return TASKS[key]


_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "squad_v1.1": "squad_v1", "squad_v2.0": "squad_v2"}


def with_labels(task: Task, label_names: str | tuple[str, ...] | list[str]) -> Task:
  """`task` with another tag set (a local file's own tags, e.g. 'O,B-GENE,I-GENE'): names as a
  sequence or one comma-separated string. Token classification only."""
  if task.head != HEAD_TOKEN_CLASSIFICATION:
    raise UserError(f"label_names apply to token classification tasks only, not to {task.name}")
  names = tuple(
    name.strip()
    for name in (label_names.split(",") if isinstance(label_names, str) else label_names)
  )
  if not names or "" in names or len(set(names)) != len(names):
    raise UserError(f"label_names={label_names!r} must be distinct, non-empty tag names")
  return dataclasses.replace(task, num_labels=len(names), label_names=names)


# ---- loading ----------------------------------------------------------------------------------


def load_examples(
  task: Task,
  split: str,
  *,
  data_dir: str | None = None,
  files: Mapping[str, str | os.PathLike[str]] | None = None,
  limit: int | None = None,
) -> list[dict[str, Any]]:
  """The examples of `split`: from tensorflow-datasets when `files` is None, else from the local
  file `files[split]` (formats: `albert_jax.data.local`; columns: the task family's module).

  Args:
    task: from `get_task`.
    split: a split name ('train', 'validation', 'validation_matched', 'dev', 'test', ...).
    data_dir: tensorflow-datasets' data directory (None: its default, ~/tensorflow_datasets).
    files: split -> local path; the tfds builders are not touched when given.
    limit: keep only the first `limit` examples (questions for SQuAD and RACE).
  """
  if limit is not None and (isinstance(limit, bool) or limit < 1):
    raise ValueError(f"limit={limit!r} must be a positive number of examples, or None for all")
  if files is None:
    source = f"tensorflow-datasets {'+'.join(TFDS_BUILDERS[task.name])} split {split!r}"
    rows = _tfds_rows(task, split, data_dir, limit)
  else:
    if not isinstance(files, Mapping):
      raise TypeError(
        f"files must map split names to paths, e.g. {{'train': 'train.tsv'}}; got {files!r}"
      )
    if split not in files:
      raise ValueError(
        f"no local file for split {split!r} of {task.name}; files has splits {sorted(files)}: "
        f"add {split!r}: <path> to it"
      )
    source = str(files[split])
    rows = _local_rows(task, files[split])
  examples = _family(task).examples_from_rows(task, rows, split)[:limit]
  if not examples:
    raise ValueError(f"{source} holds no examples for {task.name}; check the file or split")
  return examples


def _local_rows(task: Task, path: str | os.PathLike[str]) -> list[local.Row]:
  if task.head == HEAD_QUESTION_ANSWERING:
    return local.read_squad(path)
  if task.head == HEAD_MULTIPLE_CHOICE:
    return local.read_race(path)
  if task.head == HEAD_TOKEN_CLASSIFICATION:
    return conll.read_conll(path)
  return local.read_table(path)


def _tfds_rows(task: Task, split: str, data_dir: str | None, limit: int | None) -> list[local.Row]:
  import tensorflow_datasets as tfds  # a heavy import, only when tfds is used

  rows: list[local.Row] = []
  for builder in TFDS_BUILDERS[task.name]:
    ds = tfds.load(builder, split=split, data_dir=data_dir)
    if limit is not None:  # a RACE row (article) holds >= 1 question: `limit` rows are enough
      ds = ds.take(limit)
    for i, record in enumerate(tfds.as_numpy(ds)):
      row = _plain(record)
      if task.head == HEAD_MULTIPLE_CHOICE:
        row.setdefault("level", builder.split("/")[1])
      rows.append((f"tfds {builder} {split}[{i}]", row))
  return rows


def _plain(value: Any) -> Any:
  """A tfds numpy record as Python values: bytes -> str, arrays -> lists."""
  if isinstance(value, dict):
    return {key: _plain(item) for key, item in value.items()}
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray):
    return [_plain(item) for item in value] if value.ndim else _plain(value.item())
  if isinstance(value, (list, tuple)):
    return [_plain(item) for item in value]
  if isinstance(value, np.generic):
    return value.item()
  return value


def _family(task: Task):
  return {
    HEAD_SEQUENCE_CLASSIFICATION: glue,
    HEAD_QUESTION_ANSWERING: squad,
    HEAD_MULTIPLE_CHOICE: race,
    HEAD_TOKEN_CLASSIFICATION: ner,
  }[task.head]


# ---- features ---------------------------------------------------------------------------------


def max_sequence_length(tokenizer: Any, max_positions: int | None = None) -> int | None:
  """The longest sequence the model takes: the smaller of the tokenizer's `model_max_length`
  and the model's `max_positions` (its `max_position_embeddings`); None when neither is known."""
  limits = [getattr(tokenizer, "model_max_length", None), max_positions]
  known = [int(n) for n in limits if n is not None]
  return min(known) if known else None


def featurize(
  task: Task,
  examples: list[dict[str, Any]],
  tokenizer: Any,
  max_seq_length: int,
  *,
  max_positions: int | None = None,
  **task_kwargs: Any,
) -> Features:
  """Model inputs for `examples`, every row `max_seq_length` tokens long.

  max_positions: the model's `max_position_embeddings` (a longer `max_seq_length` is an error).
  task_kwargs: SQuAD: `doc_stride` (128), `max_query_length` (64; at most half of
  `max_seq_length` when not given), `training` (False; True drops examples whose answer is not
  found in the context, as BERT's run_squad does); RACE: `max_qa_length` (128; at most half of
  `max_seq_length` when not given); token classification: `doc_stride` (half a window),
  `label_all_tokens` (False). GLUE takes none; an option a task does not take is an error.
  """
  limit = max_sequence_length(tokenizer, max_positions)
  if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, (int, np.integer)):
    raise ValueError(f"max_seq_length={max_seq_length!r} must be an int")
  if max_seq_length < 8 or limit is not None and max_seq_length > limit:
    raise ValueError(
      f"max_seq_length={max_seq_length} is outside 8..{limit}: the model has {limit} positions "
      f"(tokenizer model_max_length {getattr(tokenizer, 'model_max_length', None)}, model "
      f"max_position_embeddings {max_positions}); use a max_seq_length of at most {limit}"
    )
  if not examples:
    raise ValueError(f"no examples to featurize for {task.name}; load_examples gave none")
  featurize_family = _family(task).featurize
  _check_options(task, featurize_family, task_kwargs)
  arrays, meta = featurize_family(task, examples, tokenizer, int(max_seq_length), **task_kwargs)
  return Features(arrays, meta)


def _check_options(task: Task, function: Any, kwargs: Mapping[str, Any]) -> None:
  """Raises ValueError for keyword options that `function` (a family's step) does not take."""
  params = inspect.signature(function).parameters.values()
  known = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
  unknown = sorted(set(kwargs) - set(known))
  if unknown:
    raise ValueError(
      f"{function.__name__} for {task.name} takes no option {', '.join(unknown)}; "
      f"its options: {', '.join(known) or 'none'}"
    )


# ---- predictions ------------------------------------------------------------------------------


def postprocess(
  task: Task,
  examples: list[dict[str, Any]],
  features: Features,
  outputs: Mapping[str, np.ndarray],
  **kwargs: Any,
) -> tuple[Predictions, dict[str, float]]:
  """Predictions and metrics from the model outputs for every feature row, in order.

  outputs: `logits` [N, num_labels] (GLUE; [N] or [N, 1] for stsb), [N, 4] (RACE); or
    `start_logits`, `end_logits` [N, L] (SQuAD); `logits` [N, L, num_labels] (token
    classification).
  kwargs: SQuAD: `n_best_size` (20), `max_answer_length` (30), `null_score_diff_threshold`
    (0.0, v2).
  Metrics are fractions for GLUE and RACE, percent for SQuAD (the official script's); empty
  when the split has no labels (a test split).
  """
  outputs = {key: np.asarray(value) for key, value in outputs.items()}
  for key, value in outputs.items():
    if value.shape[:1] != (len(features),):
      raise ValueError(
        f"outputs[{key!r}] has shape {value.shape}, but there are {len(features)} feature rows; "
        "pass the outputs of every row in order, without the padding of a last batch"
      )
  postprocess_family = _family(task).postprocess
  _check_options(task, postprocess_family, kwargs)
  values, null_odds, metrics = postprocess_family(task, examples, features, outputs, **kwargs)
  return Predictions(values, null_odds), metrics


def write_predictions(
  task: Task, predictions: Predictions, out_dir: str | os.PathLike[str], split: str
) -> list[str]:
  """Writes the files the official tools take into `out_dir/split/`; returns their paths.

  GLUE: the submission TSV (`CoLA.tsv`, `MNLI-m.tsv`, ...: `index<TAB>prediction`, labels as
  the GLUE server expects them); SQuAD: `predictions.json` (+ `null_odds.json` for v2); RACE:
  `answers.json` (question id -> letter); token classification: `<split>.conll` (`word gold
  predicted` per line, as conlleval reads). Each file is written to a temporary name first.
  """
  directory = Path(out_dir) / split
  directory.mkdir(parents=True, exist_ok=True)
  paths = []
  for name, text in _family(task).prediction_files(task, predictions, split).items():
    paths.append(str(write_text_atomic(directory / name, text)))
  return paths


def write_text_atomic(path: Path, text: str) -> Path:
  """Writes `text` to a temporary file next to `path`, then renames it into place."""
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise
  return path
