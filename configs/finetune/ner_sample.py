# python -m albert_jax.finetune --config=configs/finetune/ner_sample.py --workdir=/tmp/albert_ner
"""The embedded NER demo: a small ALBERT trained from scratch on the bundled CoNLL-format sample.

300 training and 100 dev sentences tagged PER / ORG / LOC / MISC in IOB2
(`albert_jax/assets/samples/ner_sample`, task conll2003's label set), the real 30k vocabulary
and the SST-2 demo's laptop-sized model: hidden 128, 4 layers sharing one block, 4 heads, FFN
512, embeddings 64, sequence length 32 (the sentences have at most ~25 pieces). CPU-friendly,
nothing is downloaded; prints the dev entity F1 (`f1`, `f1_PER`, ...) and token accuracy.
"""

import ml_collections

from albert_jax.data.tasks import sample_files
from albert_jax.trainer.finetune import base_config


def get_config():
  config = base_config("conll2003")
  files = sample_files("conll2003")
  config.train_file = files["train"]
  config.eval_file = files["dev"]
  config.label_names = ml_collections.config_dict.placeholder(str)  # e.g. "O,B-GENE,I-GENE"
  config.label_all_tokens = False  # True: a word's later pieces carry its (I-) tag too
  config.doc_stride = ml_collections.config_dict.placeholder(int)  # None: half a window
  config.model = "albert-base-v2"  # the architecture, trained from random weights ...
  config.from_scratch = True  # ... with these overrides (no download)
  config.model_overrides.hidden_size = 128
  config.model_overrides.num_hidden_layers = 4
  config.model_overrides.num_attention_heads = 4
  config.model_overrides.intermediate_size = 512
  config.model_overrides.embedding_size = 64
  config.model_overrides.max_position_embeddings = 64
  config.max_seq_length = 32
  config.learning_rate = 1e-3  # from scratch: much higher than fine-tuning's
  config.batch_size = 32
  config.num_train_steps = 200
  config.warmup_steps = 20
  config.best_metric = "f1"
  config.log_every_steps = 10
  config.eval_every_steps = 50
  config.checkpoint_every_steps = 50
  return config
