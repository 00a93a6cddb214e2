"""Serving artifacts of a trained model, for use outside albert_jax.

`saved_model.export` writes a TensorFlow SavedModel (jax2tf, native serialization) whose
`serving_default` takes raw text (tokenized in the graph: `albert_jax.serve.text`) and whose
`token_ids` takes the tokenizer's ids; `stablehlo.export` writes `jax.export` programs that
`albert_jax.serving` (jax and numpy alone) loads. `program` is the model as the one function
both of them serialize.
"""
