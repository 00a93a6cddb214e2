"""`python -m albert_jax.create_pretraining_data`: text -> ALBERT pretraining examples.

  python -m albert_jax.create_pretraining_data \\
    --input='corpus/*.txt' --output=data/pretrain --num_workers=8

Input files hold one sentence per line with a blank line between documents. Instead of files, a
TFDS text dataset already prepared on this machine can be read (nothing is downloaded):

  python -m albert_jax.create_pretraining_data --tfds_name=wikipedia/20230601.en \\
    --tfds_split=train --tfds_text_key=text --tfds_data_dir=~/tensorflow_datasets \\
    --output=data/pretrain-wiki

Defaults are Google's (max_seq_length 512, 20 predictions, 15%, 3-grams, dupe_factor 40, a
one-sentence chunk paired with a random other document, Google's text preprocessing). The
recipe, the options and the output format are described in `albert_jax.data.pretraining`; read
the output back with `albert_jax.data.read_pretraining_dataset(DIR)`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from absl import flags

from albert_jax import cli
from albert_jax.data import pretraining
from albert_jax.errors import UserError

USAGE = (
  "python -m albert_jax.create_pretraining_data (--input=FILES | --tfds_name=NAME) "
  "--output=DIR [flags]"
)
FLAGS = flags.FlagValues()
_DEFAULTS = pretraining.PretrainingDataConfig()
log = logging.getLogger(__name__)

_INPUT = flags.DEFINE_string(
  "input",
  None,
  "Text files: comma-separated paths and/or globs (one sentence a line).",
  flag_values=FLAGS,
)
_OUTPUT = flags.DEFINE_string(
  "output", None, "Output directory (shards + manifest.json).", flag_values=FLAGS
)
_MAX_SEQ_LENGTH = flags.DEFINE_integer(
  "max_seq_length", _DEFAULTS.max_seq_length, "Tokens per example.", flag_values=FLAGS
)
_MAX_PREDICTIONS = flags.DEFINE_integer(
  "max_predictions_per_seq",
  _DEFAULTS.max_predictions_per_seq,
  "Masked positions per example.",
  flag_values=FLAGS,
)
_MASKED_LM_PROB = flags.DEFINE_float(
  "masked_lm_prob", _DEFAULTS.masked_lm_prob, "Fraction of tokens to mask.", flag_values=FLAGS
)
_DUPE_FACTOR = flags.DEFINE_integer(
  "dupe_factor",
  _DEFAULTS.dupe_factor,
  "Passes over the input, each with fresh masks.",
  flag_values=FLAGS,
)
_SHORT_SEQ_PROB = flags.DEFINE_float(
  "short_seq_prob",
  _DEFAULTS.short_seq_prob,
  "Probability of a shorter random target length.",
  flag_values=FLAGS,
)
_NGRAM = flags.DEFINE_integer(
  "ngram", _DEFAULTS.ngram, "Longest masked n-gram, in words.", flag_values=FLAGS
)
_RANDOM_SEED = flags.DEFINE_integer(
  "random_seed", _DEFAULTS.random_seed, "Seed of every random draw.", flag_values=FLAGS
)
_ONE_SENTENCE_CHUNKS = flags.DEFINE_enum(
  "one_sentence_chunks",
  _DEFAULTS.one_sentence_chunks,
  list(pretraining.ONE_SENTENCE_CHUNKS),
  "A chunk of one sentence: 'random_next' (Google's) pairs it with a random other document, "
  "label 1; 'split' splits the sentence into A and B, swapped with p 0.5.",
  flag_values=FLAGS,
)
_TEXT_PREPROCESSING = flags.DEFINE_enum(
  "text_preprocessing",
  "google",
  list(pretraining.TOKENIZERS),
  "'google': as Google's tokenization.py (`` and '' kept; `` becomes <unk>); 'hf': as HF's "
  "AlbertTokenizer (`` and '' become \").",
  flag_values=FLAGS,
)
_NUM_WORKERS = flags.DEFINE_integer(
  "num_workers", 1, "Processes (the output does not depend on it).", flag_values=FLAGS
)
_NUM_SHARDS = flags.DEFINE_integer(
  "num_shards", None, "Output files; default one per 50,000 examples.", flag_values=FLAGS
)
_FORMAT = flags.DEFINE_enum(
  "format", "tfrecord", list(pretraining.FORMATS), "Output format.", flag_values=FLAGS
)
_TFDS_NAME = flags.DEFINE_string(
  "tfds_name", None, "A prepared TFDS text dataset to read instead of --input.", flag_values=FLAGS
)
_TFDS_SPLIT = flags.DEFINE_string("tfds_split", "train", "TFDS split.", flag_values=FLAGS)
_TFDS_TEXT_KEY = flags.DEFINE_string(
  "tfds_text_key", "text", "TFDS feature holding the text.", flag_values=FLAGS
)
_TFDS_DATA_DIR = flags.DEFINE_string(
  "tfds_data_dir", None, "TFDS data_dir (default: TFDS's).", flag_values=FLAGS
)
_OVERWRITE = flags.DEFINE_bool(
  "overwrite", False, "Replace a non-empty --output.", flag_values=FLAGS
)


def main(argv: Sequence[str]) -> int:
  extra = cli.parse(FLAGS, argv, USAGE)
  if extra:
    raise UserError(f"unexpected arguments: {extra}\n\nUsage: {USAGE}")
  if _OUTPUT.value is None:
    raise UserError(f"--output is required\n\nUsage: {USAGE}")
  if (_INPUT.value is None) == (_TFDS_NAME.value is None):
    raise UserError(f"give exactly one of --input and --tfds_name\n\nUsage: {USAGE}")
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
    one_sentence_chunks=_ONE_SENTENCE_CHUNKS.value,
  )
  manifest = pretraining.create_pretraining_data(
    _INPUT.value,
    _OUTPUT.value,
    config,
    tfds_source=tfds_source,
    tokenizer_factory=pretraining.TOKENIZERS[_TEXT_PREPROCESSING.value],
    num_workers=_NUM_WORKERS.value,
    num_shards=_NUM_SHARDS.value,
    data_format=_FORMAT.value,
    overwrite=_OVERWRITE.value,
  )
  log.info("stats: %s", json.dumps(manifest["stats"]))
  print(
    f"wrote {manifest['num_instances']} examples in {len(manifest['files'])} "
    f"{manifest['format']} files to {_OUTPUT.value}"
  )
  return 0


if __name__ == "__main__":
  cli.run(main, FLAGS)
