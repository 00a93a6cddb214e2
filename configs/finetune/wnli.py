# python -m albert_jax.finetune --config=configs/finetune/wnli.py --workdir=/tmp/albert_wnli
"""Fine-tunes ALBERT on GLUE WNLI (Winograd entailment).

Google ALBERT's recipe: learning rate 3e-05, batch 32, 200 steps, 50 warm-up steps,
sequence length 512, AdamW (weight decay 0.01, clip 1.0), linear warm-up and decay.
# Google gives no WNLI recipe. These are RTE's settings scaled to WNLI's 635 training
# examples: RTE's learning rate and batch, about 10 epochs (RTE: 800 steps over 2.5k
# examples) and a quarter of them warm-up, as for RTE.
Local files instead of TFDS: --config.train_file=train.tsv --config.eval_file=dev.tsv.
"""

from albert_jax.finetune import base_config


def get_config():
  config = base_config("wnli")
  config.model = "albert/albert-base-v2"
  config.max_seq_length = 512
  config.learning_rate = 3e-05
  config.batch_size = 32
  config.num_train_steps = 200
  config.warmup_steps = 50
  config.best_metric = "accuracy"
  config.eval_every_steps = 50
  config.checkpoint_every_steps = 50
  return config
