"""Evaluation metrics in numpy and plain Python (no JAX), one module per task family.

- `classification`: accuracy, F1, Matthews correlation, Pearson/Spearman, `glue_metrics`.
- `squad`: SQuAD EM/F1 as the official v1.1 and v2.0 scripts, with the no-answer threshold.
- `entities`: entity-level precision/recall/F1 of tag sequences as seqeval computes them.
"""

from albert_jax.metrics.classification import (
  accuracy,
  f1_binary,
  glue_metrics,
  matthews_corrcoef,
  pearson_spearman,
  rankdata,
)
from albert_jax.metrics.entities import entity_scores, get_entities, token_accuracy
from albert_jax.metrics.squad import (
  SQUAD_VERSIONS,
  exact_match_score,
  f1_score,
  metric_max_over_ground_truths,
  normalize_answer,
  squad_evaluate,
)

__all__ = [
  "SQUAD_VERSIONS",
  "accuracy",
  "entity_scores",
  "exact_match_score",
  "f1_binary",
  "f1_score",
  "get_entities",
  "glue_metrics",
  "matthews_corrcoef",
  "metric_max_over_ground_truths",
  "normalize_answer",
  "pearson_spearman",
  "rankdata",
  "squad_evaluate",
  "token_accuracy",
]
