# python -m albert_jax.finetune --config=configs/finetune/stsb.py --workdir=/tmp/albert_stsb
"""Fine-tunes ALBERT on GLUE STS-B (similarity regression; Pearson/Spearman).

Google ALBERT's recipe: learning rate 2e-05, batch 16, 3598 steps, 214 warm-up steps,
sequence length 512, AdamW (weight decay 0.01, clip 1.0), linear warm-up and decay.
Local files instead of TFDS: --config.train_file=train.tsv --config.eval_file=dev.tsv.
"""

from albert_jax.finetune import base_config


def get_config():
  config = base_config("stsb")
  config.model = "albert/albert-base-v2"
  config.max_seq_length = 512
  config.learning_rate = 2e-05
  config.batch_size = 16
  config.num_train_steps = 3598
  config.warmup_steps = 214
  config.best_metric = "pearson"
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  return config
