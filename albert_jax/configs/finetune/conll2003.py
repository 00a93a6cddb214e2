# python -m albert_jax.finetune --config=configs/finetune/conll2003.py --workdir=/tmp/albert_conll
"""Fine-tunes ALBERT on CoNLL-2003: named entities (default), or its POS or chunk tags.

  --config=configs/finetune/conll2003.py               NER (PER, ORG, LOC, MISC), best by F1
  --config=configs/finetune/conll2003.py:conll2003_pos part-of-speech tags, best by accuracy
  --config=configs/finetune/conll2003.py:conll2003_chunk  chunks, best by entity F1

ALBERT's paper and Google's code have no NER recipe; this is the common BERT-style one: the
BERT paper's fine-tuning grid (Devlin et al. 2019, appendix A.3: batch 32, learning rate 5e-5,
3 epochs) with BERT's 10% linear warm-up (`warmup_proportion` of its run_classifier.py) and
sequence length 128 (HF transformers' run_ner default; longer sentences go into windows).
Evaluated on `dev` (picks the best checkpoint) and `test`. Local files instead of TFDS:
--config.train_file=train.txt --config.eval_file=valid.txt (CoNLL format, the tag last).
"""

import ml_collections

from albert_jax.trainer.finetune import base_config


def get_config(task: str = "conll2003"):
  config = base_config(task)
  config.label_names = ml_collections.config_dict.placeholder(str)  # a local file's own tags
  config.label_all_tokens = False  # True: a word's later pieces carry its (I-) tag too
  config.doc_stride = ml_collections.config_dict.placeholder(int)  # None: half a window
  config.model = "albert/albert-base-v2"
  config.max_seq_length = 128
  config.learning_rate = 5e-5
  config.batch_size = 32
  config.num_epochs = 3.0
  config.warmup_fraction = 0.1
  config.best_metric = "accuracy" if task == "conll2003_pos" else "f1"
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  return config
