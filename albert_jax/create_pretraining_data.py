"""`python -m albert_jax.create_pretraining_data`: text -> ALBERT pretraining examples.

  python -m albert_jax.create_pretraining_data \\
    --input='corpus/*.txt' --output=data/pretrain --num_workers=8

Input files hold one sentence per line with a blank line between documents. Instead of files, a
TFDS text dataset already prepared on this machine can be read (nothing is downloaded):

  python -m albert_jax.create_pretraining_data --tfds_name=wikipedia/20230601.en \\
    --tfds_split=train --tfds_text_key=text --tfds_data_dir=~/tensorflow_datasets \\
    --output=data/pretrain-wiki

Defaults are Google's (max_seq_length 512, 20 predictions, 15%, 3-grams, dupe_factor 40).
The recipe, the edge cases and the output format are described in `albert_jax.data.pretraining`;
read the output back with `albert_jax.data.read_pretraining_dataset(DIR)`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from absl import app, flags, logging

from albert_jax.data import pretraining

_DEFAULTS = pretraining.PretrainingDataConfig()

_INPUT = flags.DEFINE_string(
  "input", None, "Text files: comma-separated paths and/or globs (one sentence a line)."
)
_OUTPUT = flags.DEFINE_string("output", None, "Output directory (shards + manifest.json).")
_MAX_SEQ_LENGTH = flags.DEFINE_integer(
  "max_seq_length", _DEFAULTS.max_seq_length, "Tokens per example."
)
_MAX_PREDICTIONS = flags.DEFINE_integer(
  "max_predictions_per_seq", _DEFAULTS.max_predictions_per_seq, "Masked positions per example."
)
_MASKED_LM_PROB = flags.DEFINE_float(
  "masked_lm_prob", _DEFAULTS.masked_lm_prob, "Fraction of tokens to mask."
)
_DUPE_FACTOR = flags.DEFINE_integer(
  "dupe_factor", _DEFAULTS.dupe_factor, "Passes over the input, each with fresh masks."
)
_SHORT_SEQ_PROB = flags.DEFINE_float(
  "short_seq_prob", _DEFAULTS.short_seq_prob, "Probability of a shorter random target length."
)
_NGRAM = flags.DEFINE_integer("ngram", _DEFAULTS.ngram, "Longest masked n-gram, in words.")
_RANDOM_SEED = flags.DEFINE_integer(
  "random_seed", _DEFAULTS.random_seed, "Seed of every random draw."
)
_NUM_WORKERS = flags.DEFINE_integer(
  "num_workers", 1, "Processes (the output does not depend on it)."
)
_NUM_SHARDS = flags.DEFINE_integer(
  "num_shards", None, "Output files; default one per 50,000 examples."
)
_FORMAT = flags.DEFINE_enum("format", "tfrecord", list(pretraining.FORMATS), "Output format.")
_TFDS_NAME = flags.DEFINE_string(
  "tfds_name", None, "A prepared TFDS text dataset to read instead of --input."
)
_TFDS_SPLIT = flags.DEFINE_string("tfds_split", "train", "TFDS split.")
_TFDS_TEXT_KEY = flags.DEFINE_string("tfds_text_key", "text", "TFDS feature holding the text.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir (default: TFDS's).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a non-empty --output.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {list(argv[1:])}")
  if _OUTPUT.value is None:
    raise app.UsageError("--output is required")
  if (_INPUT.value is None) == (_TFDS_NAME.value is None):
    raise app.UsageError("give exactly one of --input and --tfds_name")
  tfds_source = None
  if _TFDS_NAME.value is not None:
    tfds_source = pretraining.TfdsSource(
      _TFDS_NAME.value, _TFDS_SPLIT.value, _TFDS_TEXT_KEY.value, _TFDS_DATA_DIR.value
    )
  config = pretraining.PretrainingDataConfig(
    max_seq_length=_MAX_SEQ_LENGTH.value,
    max_predictions_per_seq=_MAX_PREDICTIONS.value,
    masked_lm_prob=_MASKED_LM_PROB.value,
    dupe_factor=_DUPE_FACTOR.value,
    short_seq_prob=_SHORT_SEQ_PROB.value,
    ngram=_NGRAM.value,
    random_seed=_RANDOM_SEED.value,
  )
  try:
    manifest = pretraining.create_pretraining_data(
      _INPUT.value,
      _OUTPUT.value,
      config,
      tfds_source=tfds_source,
      num_workers=_NUM_WORKERS.value,
      num_shards=_NUM_SHARDS.value,
      data_format=_FORMAT.value,
      overwrite=_OVERWRITE.value,
    )
  except pretraining.PretrainingDataError as e:
    sys.exit(f"create_pretraining_data: error: {e}")
  logging.info("stats: %s", json.dumps(manifest["stats"]))
  print(
    f"wrote {manifest['num_instances']} examples in {len(manifest['files'])} "
    f"{manifest['format']} files to {_OUTPUT.value}"
  )


if __name__ == "__main__":
  app.run(main)
