"""Generation parameters of pretraining data, and its error type."""

from __future__ import annotations

import dataclasses

from albert_jax.config import MAX_POSITIONS
from albert_jax.errors import UserError

# How a chunk of ONE sentence becomes an instance (see `instances.py`):
#   "random_next": Google's: A is the sentence, B comes from a random other document, label 1;
#   "split": the sentence is split at a random word boundary into A and B, swapped with p 0.5.
ONE_SENTENCE_CHUNKS = ("random_next", "split")


class PretrainingDataError(UserError):
  """Bad pretraining input or output (files, flags, data for a run); the message names it."""


@dataclasses.dataclass(frozen=True)
class PretrainingDataConfig:
  """Generation parameters; defaults are Google's `create_pretraining_data.py` flags."""

  max_seq_length: int = MAX_POSITIONS  # L: tokens per example, [CLS] A [SEP] B [SEP] + padding
  max_predictions_per_seq: int = 20  # P: masked positions per example, padded
  masked_lm_prob: float = 0.15  # fraction of tokens to mask
  dupe_factor: int = 40  # passes over the corpus, each with fresh segmentation and masks
  short_seq_prob: float = 0.1  # probability of a random target length in [2, L - 3]
  ngram: int = 3  # longest masked n-gram, in whole words; p(n) proportional to 1/n
  random_seed: int = 12345  # the only source of randomness
  one_sentence_chunks: str = "random_next"  # one of ONE_SENTENCE_CHUNKS; Google's by default

  def __post_init__(self) -> None:
    if self.max_seq_length < 5:
      raise PretrainingDataError(
        f"max_seq_length={self.max_seq_length} is too short: [CLS] A [SEP] B [SEP] needs >= 5"
      )
    if self.max_predictions_per_seq < 1:
      raise PretrainingDataError(
        f"max_predictions_per_seq={self.max_predictions_per_seq} must be >= 1"
      )
    if not 0.0 <= self.masked_lm_prob <= 1.0:
      raise PretrainingDataError(f"masked_lm_prob={self.masked_lm_prob} must be in [0, 1]")
    if not 0.0 <= self.short_seq_prob <= 1.0:
      raise PretrainingDataError(f"short_seq_prob={self.short_seq_prob} must be in [0, 1]")
    if self.dupe_factor < 1:
      raise PretrainingDataError(f"dupe_factor={self.dupe_factor} must be >= 1")
    if self.ngram < 1:
      raise PretrainingDataError(f"ngram={self.ngram} must be >= 1")
    if self.one_sentence_chunks not in ONE_SENTENCE_CHUNKS:
      raise PretrainingDataError(
        f"one_sentence_chunks={self.one_sentence_chunks!r} is not one of {ONE_SENTENCE_CHUNKS}"
      )

  @property
  def max_num_tokens(self) -> int:
    """Tokens left for A and B after [CLS], [SEP], [SEP]."""
    return self.max_seq_length - 3
