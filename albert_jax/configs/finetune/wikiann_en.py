# python -m albert_jax.finetune --config=configs/finetune/wikiann_en.py --workdir=/tmp/albert_wiki
"""Fine-tunes ALBERT on WikiANN English (PER, ORG, LOC; 20k training sentences).

The CoNLL-2003 config's BERT-style recipe (see configs/finetune/conll2003.py: batch 32,
learning rate 5e-5, 3 epochs, 10% warm-up, sequence length 128); ALBERT's paper has no NER
recipe. Evaluated on `validation` (picks the best checkpoint) and `test`.
"""

from albert_jax.configs.finetune import conll2003


def get_config():
  return conll2003.get_config("wikiann_en")  # best by entity F1, as CoNLL-2003 NER
