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
from albert_jax.tokenizer import AlbertTokenizer

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
]


def __getattr__(name: str):
  # Imported on first use, so that `python -m albert_jax.convert` does not import
  # albert_jax.convert twice (once as the package's module, once as __main__).
  if name in ("Pretrained", "from_pretrained"):
    from albert_jax import pretrained

    return getattr(pretrained, name)
  raise AttributeError(f"module 'albert_jax' has no attribute {name!r}")
