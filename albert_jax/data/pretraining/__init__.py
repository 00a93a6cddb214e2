"""ALBERT pretraining data: Google's `create_pretraining_data.py` recipe, and the trainer's input.

Writing (`python -m albert_jax.create_pretraining_data`, or `create_pretraining_data`):
  corpus.py     text files / a prepared TFDS dataset; the data tokenizer (Google's text
                preprocessing by default)
  instances.py  documents -> sentence-order (SOP) instances; what matches Google and the options
  masking.py    whole-word n-gram masking, Google's word boundaries and n-gram selection
  records.py    the files: features, shard names, TFRecord / ArrayRecord records
  writer.py     units in parallel -> shuffled shards + manifest.json, written atomically
Reading (`python -m albert_jax.pretrain`):
  reader.py     the manifest, checked shards, the record parser, `read_pretraining_dataset`
  pipeline.py   deterministic, resumable training batches; evaluation batches

Randomness: every draw comes from the one `random_seed` (Google's tool also used numpy's
unseeded global generator for the n-gram lengths).
"""

from albert_jax.data.pretraining.config import (
  ONE_SENTENCE_CHUNKS,
  PretrainingDataConfig,
  PretrainingDataError,
)
from albert_jax.data.pretraining.corpus import (
  TOKENIZERS,
  TfdsSource,
  default_tokenizer,
  read_documents,
  resolve_input_files,
  split_sentences,
  tfds_documents,
)
from albert_jax.data.pretraining.instances import (
  GenerationStats,
  PretrainingInstance,
  TokenizedDocument,
  create_instances_from_document,
  generate_unit,
  tokenize_document,
  truncate_seq_pair,
)
from albert_jax.data.pretraining.masking import (
  MaskedNgram,
  MaskedTokens,
  is_word_start,
  mask_tokens,
  ngram_probabilities,
  num_to_predict,
  sample_masked_ngrams,
  whole_words,
)
from albert_jax.data.pretraining.pipeline import (
  BATCH_KEYS,
  TrainBatches,
  eval_batches,
  eval_num_batches,
  steps_per_epoch,
  to_batch,
)
from albert_jax.data.pretraining.reader import (
  Shards,
  check_vocabulary,
  fingerprint,
  open_shards,
  original_input_ids,
  process_files,
  read_manifest,
  read_pretraining_dataset,
  split_files,
)
from albert_jax.data.pretraining.records import (
  FEATURE_NAMES,
  FORMATS,
  MANIFEST_NAME,
  feature_spec,
  instance_to_features,
  shard_name,
)
from albert_jax.data.pretraining.writer import create_pretraining_data

__all__ = [
  "fingerprint",
  "BATCH_KEYS",
  "FEATURE_NAMES",
  "FORMATS",
  "MANIFEST_NAME",
  "ONE_SENTENCE_CHUNKS",
  "TOKENIZERS",
  "GenerationStats",
  "MaskedNgram",
  "MaskedTokens",
  "PretrainingDataConfig",
  "PretrainingDataError",
  "PretrainingInstance",
  "Shards",
  "TfdsSource",
  "TokenizedDocument",
  "TrainBatches",
  "check_vocabulary",
  "create_instances_from_document",
  "create_pretraining_data",
  "default_tokenizer",
  "eval_batches",
  "eval_num_batches",
  "feature_spec",
  "generate_unit",
  "instance_to_features",
  "is_word_start",
  "mask_tokens",
  "ngram_probabilities",
  "num_to_predict",
  "open_shards",
  "original_input_ids",
  "process_files",
  "read_documents",
  "read_manifest",
  "read_pretraining_dataset",
  "resolve_input_files",
  "sample_masked_ngrams",
  "shard_name",
  "split_files",
  "split_sentences",
  "steps_per_epoch",
  "tfds_documents",
  "to_batch",
  "tokenize_document",
  "truncate_seq_pair",
  "whole_words",
]
