# python -m albert_jax.finetune --config=configs/finetune/cola.py --workdir=/tmp/albert_cola
"""Fine-tunes ALBERT on GLUE CoLA (acceptability; Matthews correlation).

Google ALBERT's recipe: learning rate 1e-05, batch 16, 5336 steps, 320 warm-up steps,
sequence length 512, AdamW (weight decay 0.01, clip 1.0), linear warm-up and decay.
Local files instead of TFDS: --config.train_file=train.tsv --config.eval_file=dev.tsv.
"""

from albert_jax.finetune import base_config


def get_config():
  config = base_config("cola")
  config.model = "albert/albert-base-v2"
  config.max_seq_length = 512
  config.learning_rate = 1e-05
  config.batch_size = 16
  config.num_train_steps = 5336
  config.warmup_steps = 320
  config.best_metric = "mcc"
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  return config
