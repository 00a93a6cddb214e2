"""HF transformers' PyTorch ALBERT as the numerical reference (random weights, fixed seed)."""

from __future__ import annotations

import numpy as np

HF_CLASSES = {
  "base": "AlbertModel",
  "pretraining": "AlbertForPreTraining",
  "masked_lm": "AlbertForMaskedLM",
  "sequence_classification": "AlbertForSequenceClassification",
  "token_classification": "AlbertForTokenClassification",
  "question_answering": "AlbertForQuestionAnswering",
  "multiple_choice": "AlbertForMultipleChoice",
}
# Output fields per head, in HF's names.
OUTPUT_FIELDS = {
  "base": ("last_hidden_state", "pooler_output"),
  "pretraining": ("prediction_logits", "sop_logits"),
  "masked_lm": ("logits",),
  "sequence_classification": ("logits",),
  "token_classification": ("logits",),
  "question_answering": ("start_logits", "end_logits"),
  "multiple_choice": ("logits",),
}


def hf_model(head: str, seed: int = 0, **config):
  """A random-weight HF model of `head`, in eval mode."""
  import torch
  import transformers

  torch.manual_seed(seed)
  cfg = transformers.AlbertConfig(**config)
  model = getattr(transformers, HF_CLASSES[head])(cfg)
  # HF initialises LayerNorm to (1, 0) and biases to 0: randomise them too, so a mix-up
  # between a scale and a bias, or a dropped bias, cannot go unnoticed.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name:
        p.add_(0.1 * torch.randn_like(p))
  return model.eval()


def hf_outputs(model, **inputs) -> dict[str, np.ndarray]:
  import torch

  with torch.no_grad():
    out = model(**{k: torch.as_tensor(np.asarray(v)) for k, v in inputs.items()})
  return {k: v.numpy() for k, v in out.items() if v is not None}


def padded_batch(batch: int, length: int, vocab: int, seed: int = 0):
  """input_ids, attention_mask (rows padded to different lengths), token_type_ids."""
  rng = np.random.RandomState(seed)
  ids = rng.randint(5, vocab, (batch, length)).astype(np.int32)
  lengths = np.linspace(length, max(2, length // 3), batch).astype(int)
  mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
  ids = np.where(mask == 1, ids, 0).astype(np.int32)
  types = (np.arange(length)[None, :] >= (lengths // 2)[:, None]).astype(np.int32) * mask
  return ids, mask, types
