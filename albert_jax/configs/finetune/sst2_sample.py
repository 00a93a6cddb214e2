# python -m albert_jax.finetune --config=configs/finetune/sst2_sample.py --workdir=/tmp/albert_demo
"""The embedded demo: a small ALBERT trained from scratch on the bundled SST-2-format sample.

200 training and 60 dev sentences (`albert_jax/assets/samples/sst2_sample`), the real 30k
vocabulary, and a model small enough for a laptop CPU (`finetune.SAMPLE_MODEL`): hidden 128,
4 layers sharing one block, 4 heads, FFN 512, embeddings 64, sequence length 64. Prints its
dev metrics (the README says how long it takes). Nothing is downloaded.
"""

from albert_jax.trainer.finetune import sample_config


def get_config():
  config = sample_config("sst2", max_seq_length=64, max_positions=64)
  # From scratch at this rate, Google's AdamW without bias correction (fine-tuning's default)
  # takes up to ~3x larger steps for its first thousand steps, and the SST-2 demo stayed at
  # chance; the sample recipes use optax's AdamW.
  config.adam_bias_correction = True
  config.num_train_steps = 150
  config.warmup_steps = 15
  config.log_every_steps = 10
  config.eval_every_steps = 50
  config.checkpoint_every_steps = 50
  return config
