"""albert_jax: ALBERT (A Lite BERT) in JAX/Flax."""

from albert_jax.config import AlbertConfig
from albert_jax.heads import (
  AlbertForMaskedLM,
  AlbertForMultipleChoice,
  AlbertForPreTraining,
  AlbertForQuestionAnswering,
  AlbertForSequenceClassification,
  AlbertForTokenClassification,
)
from albert_jax.model import AlbertModel, AlbertModelOutput
from albert_jax.pipelines import pipeline
from albert_jax.tokenizer import AlbertTokenizer
from albert_jax.weights.pretrained import Pretrained, from_pretrained

__all__ = [
  "AlbertConfig",
  "AlbertModel",
  "AlbertModelOutput",
  "AlbertForPreTraining",
  "AlbertForMaskedLM",
  "AlbertForSequenceClassification",
  "AlbertForTokenClassification",
  "AlbertForQuestionAnswering",
  "AlbertForMultipleChoice",
  "AlbertTokenizer",
  "Pretrained",
  "from_pretrained",
  "pipeline",
]
