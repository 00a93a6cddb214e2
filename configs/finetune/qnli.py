# python -m albert_jax.finetune --config=configs/finetune/qnli.py --workdir=/tmp/albert_qnli
"""Fine-tunes ALBERT on GLUE QNLI (question-answer entailment).

Google ALBERT's recipe: learning rate 1e-05, batch 32, 33112 steps, 1986 warm-up steps,
sequence length 512, AdamW (weight decay 0.01, clip 1.0), linear warm-up and decay.
Local files instead of TFDS: --config.train_file=train.tsv --config.eval_file=dev.tsv.
"""

from albert_jax.finetune import base_config


def get_config():
  config = base_config("qnli")
  config.model = "albert/albert-base-v2"
  config.max_seq_length = 512
  config.learning_rate = 1e-05
  config.batch_size = 32
  config.num_train_steps = 33112
  config.warmup_steps = 1986
  config.best_metric = "accuracy"
  config.eval_every_steps = 2000
  config.checkpoint_every_steps = 2000
  return config
