"""A model -> a TensorFlow SavedModel: jax2tf with native serialization (the model's StableHLO
inside an `XlaCallModule` op), the parameters as TF variables, and the tokenizer in the graph.

Signatures:
  token_ids        `input_ids`, `attention_mask`, `token_type_ids` int32 [batch, length], both
                   dimensions symbolic (length <= max_position_embeddings) -> the head's raw
                   outputs (`albert_jax.serve.program.OUTPUTS`), float32
  serving_default  raw text -> the task's answer (`albert_jax.serve.tasks`): sequence and
                   token classification, question answering (`question`, `context`), base
                   (features); the other heads get token_ids only, and the export says so
                   on stderr
  text_pair        (sequence classification) `text` and `text_pair` -> as serving_default

Loading it needs `import tensorflow_text` first (it registers the SentencePiece ops), nothing of
jax or albert_jax.
"""

from __future__ import annotations

import os
import sys

from albert_jax import files
from albert_jax.errors import UserError
from albert_jax.serve import program
from albert_jax.weights.pretrained import Pretrained

EXTRA_HINT = "pip install 'albert_jax[serve]'"


def import_tensorflow():
  """tensorflow and tensorflow_text, or a UserError naming the extra that installs them."""
  try:
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the SentencePiece ops)
  except ImportError as e:
    raise UserError(
      f"--format=saved_model needs tensorflow and tensorflow-text ({e}); install them with "
      f"{EXTRA_HINT}"
    ) from None
  return tf


def build(model: Pretrained, platforms: tuple[str, ...] = ("cpu",)):
  """The tf.Module to save: variables, tokenizer and signatures (see the module docstring)."""
  tf = import_tensorflow()
  from jax.experimental import jax2tf

  from albert_jax.serve import tasks
  from albert_jax.serve.text import GraphTokenizer

  root = tf.Module()
  root.params = {
    name: tf.Variable(value, trainable=False, name=name.replace("/", "."))
    for name, value in program.flat_params(model).items()
  }
  forward = jax2tf.convert(
    program.function(model),
    polymorphic_shapes=[None, "(b, l)", "(b, l)", "(b, l)"],
    polymorphic_constraints=program.constraints(model),
    with_gradient=False,
    native_serialization_platforms=platforms,
  )
  spec = tf.TensorSpec([None, None], tf.int32)

  @tf.function(input_signature=[spec, spec, spec], autograph=False)
  def token_ids(input_ids, attention_mask, token_type_ids):
    return forward(dict(root.params), input_ids, attention_mask, token_type_ids)

  root.token_ids = token_ids
  signatures = {"token_ids": token_ids}
  task = tasks.TASKS.get(model.head)
  if task is not None:
    root.tokenizer = GraphTokenizer(model.tokenizer, model.config.max_position_embeddings)
    root.labels = program.label_names(model)
    root.symbols = sorted(model.tokenizer.user_defined_symbols)  # words of their own (QA)
    signatures.update(task(root, token_ids))
  return root, signatures


def write(
  model: Pretrained,
  output: str | os.PathLike,
  platforms: tuple[str, ...] = ("cpu",),
  overwrite: bool = False,
) -> list[str]:
  """Saves the SavedModel into `output` (a temporary sibling renamed into place); returns the
  signature names."""
  tf = import_tensorflow()
  files.refuse_existing(output, overwrite)
  root, signatures = build(model, platforms)
  with files.atomic_directory(output, overwrite) as tmp:
    tf.saved_model.save(root, str(tmp), signatures=signatures)
    model.tokenizer.save_pretrained(tmp / "assets.extra")
  return sorted(signatures)


def export(
  checkpoint: str | os.PathLike,
  output: str | os.PathLike,
  platforms: str | tuple[str, ...] = "cpu",
  dtype: str = "float32",
  overwrite: bool = False,
) -> Pretrained:
  """`checkpoint` (anything `from_pretrained` reads) -> a SavedModel in `output`."""
  platforms = program.check_platforms(platforms)
  import_tensorflow()
  files.refuse_existing(output, overwrite)
  model = program.load(checkpoint, dtype)
  names = write(model, output, platforms, overwrite)
  if "serving_default" not in names:
    print(
      f"note: head {model.head!r} has no task for raw text; {output} has only the token_ids "
      "signature (tokenize with albert_jax.AlbertTokenizer or the saved spiece.model).",
      file=sys.stderr,
    )
  return model
