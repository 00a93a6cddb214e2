# python -m albert_jax.finetune --config=configs/finetune/ner_sample.py --workdir=/tmp/albert_ner
"""The embedded NER demo: a small ALBERT trained from scratch on the bundled CoNLL-format sample.

300 training and 100 dev sentences tagged PER / ORG / LOC / MISC in IOB2
(`albert_jax/assets/samples/ner_sample`, task conll2003's label set), the real 30k vocabulary
and the SST-2 demo's laptop-sized model: hidden 128, 4 layers sharing one block, 4 heads, FFN
512, embeddings 64, sequence length 32 (the sentences have at most ~25 pieces). CPU-friendly,
nothing is downloaded; prints the dev entity F1 (`f1`, `f1_PER`, ...) and token accuracy.
"""

import ml_collections

from albert_jax.trainer.finetune import sample_config


def get_config():
  config = sample_config("conll2003", max_seq_length=32, max_positions=64)
  config.label_names = ml_collections.config_dict.placeholder(str)  # e.g. "O,B-GENE,I-GENE"
  config.label_all_tokens = False  # True: a word's later pieces carry its (I-) tag too
  config.doc_stride = ml_collections.config_dict.placeholder(int)  # None: half a window
  config.num_train_steps = 200
  config.warmup_steps = 20
  config.best_metric = "f1"
  config.log_every_steps = 10
  config.eval_every_steps = 50
  config.checkpoint_every_steps = 50
  return config
