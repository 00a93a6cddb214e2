"""Task pipelines with HF transformers' task names, arguments and output fields.

    classify = albert_jax.pipeline("text-classification", model="WORKDIR/export")
    classify(["a gripping film", "dull"])  # [{"label": "positive", "score": ...}, ...]

`pipeline(task, model=DIR_or_Pretrained, **options)`; `model` is anything
`albert_jax.from_pretrained` loads (a converted or exported directory, a fine-tuning workdir)
or a loaded `Pretrained`. Every pipeline takes one input or a list of them, in the call forms
`transformers.pipeline` documents for its task (`answer(question=..., context=...)`,
`classify(text, text_pair=...)`; each module says which), and `batch_size`,
`dtype` ("float32", "bfloat16") and `progress` options; the model-running ones (all but
fill-mask and feature-extraction) also `max_tokens`, a budget of padded positions per batch
("auto": 1024 on CPU, where long rows run fastest a few at a time, no limit on GPU/TPU;
None: `batch_size` rows whatever their length). Question answering and token
classification also take `pack` (default True): several inputs laid end to end in one row of
one length, each attending only to itself (`albert_jax.data.packing`), for almost no padding
and one compiled shape; False computes each input in a row of its own, at a bucket length.
One module per task.
"""

from __future__ import annotations

from typing import Any

from albert_jax import compilation
from albert_jax.errors import UserError
from albert_jax.pipelines.extraction import FeatureExtractionPipeline, FillMaskPipeline
from albert_jax.pipelines.multiple_choice import MultipleChoicePipeline
from albert_jax.pipelines.question_answering import QuestionAnsweringPipeline
from albert_jax.pipelines.text_classification import TextClassificationPipeline
from albert_jax.pipelines.token_classification import TokenClassificationPipeline

PIPELINES = {
  p.task: p
  for p in (
    TextClassificationPipeline,
    QuestionAnsweringPipeline,
    TokenClassificationPipeline,
    MultipleChoicePipeline,
    FillMaskPipeline,
    FeatureExtractionPipeline,
  )
}
ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}


def pipeline(task: str, model: Any, *, compilation_cache: bool = True, **options: Any):
  """The pipeline for `task` (an HF task name) over `model`; see the module docstring.
  `compilation_cache`: the persistent XLA cache on or off (`albert_jax.compilation.setup`)."""
  task = ALIASES.get(task, task)
  if task not in PIPELINES:
    raise UserError(f"Unknown pipeline task {task!r}; choose one of {', '.join(PIPELINES)}.")
  compilation.setup(compilation_cache)
  return PIPELINES[task](model, **options)
