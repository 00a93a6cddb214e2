# python -m albert_jax.finetune --config=configs/finetune/sst2_sample.py --workdir=/tmp/albert_demo
"""The embedded demo: a small ALBERT trained from scratch on the bundled SST-2-format sample.

200 training and 60 dev sentences (`albert_jax/assets/samples/sst2_sample`), the real 30k
vocabulary, and a model small enough for a laptop CPU: hidden 128, 4 layers sharing one block,
4 heads, FFN 512, embeddings 64, sequence length 64. Prints its dev metrics (the README says
how long it takes). Nothing is downloaded.
"""

from albert_jax.data.tasks import sample_files
from albert_jax.trainer.finetune import base_config


def get_config():
  config = base_config("sst2")
  files = sample_files("sst2")
  config.train_file = files["train"]
  config.eval_file = files["validation"]
  config.model = "albert-base-v2"  # the architecture, trained from random weights ...
  config.from_scratch = True  # ... with these overrides (no download)
  config.model_overrides.hidden_size = 128
  config.model_overrides.num_hidden_layers = 4
  config.model_overrides.num_attention_heads = 4
  config.model_overrides.intermediate_size = 512
  config.model_overrides.embedding_size = 64
  config.model_overrides.max_position_embeddings = 64
  config.max_seq_length = 64
  # From scratch at this rate, Google's AdamW without bias correction (fine-tuning's default)
  # takes up to ~3x larger steps for its first thousand steps, and the SST-2 demo stayed at
  # chance; the sample recipes use optax's AdamW.
  config.adam_bias_correction = True
  config.learning_rate = 1e-3  # from scratch: much higher than fine-tuning's 1e-5
  config.batch_size = 32
  config.num_train_steps = 150
  config.warmup_steps = 15
  config.log_every_steps = 10
  config.eval_every_steps = 50
  config.checkpoint_every_steps = 50
  return config
