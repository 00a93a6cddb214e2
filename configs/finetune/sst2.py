# python -m albert_jax.finetune --config=configs/finetune/sst2.py --workdir=/tmp/albert_sst2
"""Fine-tunes ALBERT on GLUE SST-2 (sentiment).

Google ALBERT's recipe: learning rate 1e-05, batch 32, 20935 steps, 1256 warm-up steps,
sequence length 512, AdamW (weight decay 0.01, clip 1.0), linear warm-up and decay.
Local files instead of TFDS: --config.train_file=train.tsv --config.eval_file=dev.tsv.
"""

from albert_jax.finetune import base_config


def get_config():
  config = base_config("sst2")
  config.model = "albert/albert-base-v2"
  config.max_seq_length = 512
  config.learning_rate = 1e-05
  config.batch_size = 32
  config.num_train_steps = 20935
  config.warmup_steps = 1256
  config.best_metric = "accuracy"
  config.eval_every_steps = 2000
  config.checkpoint_every_steps = 2000
  return config
