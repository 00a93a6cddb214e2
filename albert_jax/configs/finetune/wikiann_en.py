# python -m albert_jax.finetune --config=configs/finetune/wikiann_en.py --workdir=/tmp/albert_wiki
"""Fine-tunes ALBERT on WikiANN English (PER, ORG, LOC; 20k training sentences).

The CoNLL-2003 config's BERT-style recipe (see configs/finetune/conll2003.py: batch 32,
learning rate 5e-5, 3 epochs, 10% warm-up, sequence length 128); ALBERT's paper has no NER
recipe. Evaluated on `validation` (picks the best checkpoint) and `test`.
"""

import ml_collections

from albert_jax.trainer.finetune import base_config


def get_config():
  config = base_config("wikiann_en")
  config.label_names = ml_collections.config_dict.placeholder(str)
  config.label_all_tokens = False
  config.doc_stride = ml_collections.config_dict.placeholder(int)
  config.model = "albert/albert-base-v2"
  config.max_seq_length = 128
  config.learning_rate = 5e-5
  config.batch_size = 32
  config.num_epochs = 3.0
  config.warmup_fraction = 0.1
  config.best_metric = "f1"
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  return config
