# python -m albert_jax.finetune --config=configs/finetune/mnli.py --workdir=/tmp/albert_mnli
"""Fine-tunes ALBERT on GLUE MNLI (entailment; matched and mismatched dev sets).

Google ALBERT's recipe: learning rate 3e-05, batch 128, 10000 steps, 1000 warm-up steps,
sequence length 512, AdamW (weight decay 0.01, clip 1.0), linear warm-up and decay.
Local files instead of TFDS: --config.train_file=train.tsv --config.eval_file=dev.tsv.
"""

from albert_jax.finetune import base_config


def get_config():
  config = base_config("mnli")
  config.model = "albert/albert-base-v2"
  config.max_seq_length = 512
  config.learning_rate = 3e-05
  config.batch_size = 128
  config.num_train_steps = 10000
  config.warmup_steps = 1000
  config.best_metric = "accuracy"
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  return config
