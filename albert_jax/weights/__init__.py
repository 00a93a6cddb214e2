"""ALBERT weights: HF and Google TF1 checkpoints in, converted directories, HF directories out.

hf          the HF parameter table, used in both directions; head detection
tf1         Google's TF1 checkpoints renamed to HF's names
sources     reading a source: HF directories, TF checkpoints, `.tar.gz`, the HF hub
converted   the converted-directory format (what `python -m albert_jax.convert` writes)
pretrained  `from_pretrained`: config, parameters, tokenizer and module, ready to run
export      a loaded model -> an HF transformers model directory
"""
