# python -m albert_jax.finetune --config=configs/finetune/squad_sample.py --workdir=/tmp/squad_demo
"""A small ALBERT trained from scratch on the bundled SQuAD 1.1-format sample (a smoke run).

40 training and 15 dev questions (`albert_jax/assets/samples/squad_sample`), the real 30k
vocabulary, the demo's small model (see sst2_sample.py), windows of 128 tokens with stride 64.
It shows the whole SQuAD pipeline (windows, span training, n-best decoding, the official
metrics, predictions.json) in a few minutes on a CPU; 40 questions teach a model from scratch
little, so expect low dev scores.
"""

from albert_jax.trainer.finetune import sample_config


def get_config():
  config = sample_config("squad_v1", max_seq_length=128, max_positions=128)
  config.doc_stride = 64
  config.max_query_length = 32
  config.n_best_size = 20
  config.max_answer_length = 30
  # From scratch at this rate, Google's AdamW without bias correction (fine-tuning's default)
  # takes up to ~3x larger steps for its first thousand steps, and the SST-2 demo stayed at
  # chance; the sample recipes use optax's AdamW.
  config.adam_bias_correction = True
  config.batch_size = 16
  config.num_epochs = 20.0
  config.warmup_fraction = 0.1
  config.best_metric = "f1"
  config.log_every_steps = 10
  config.eval_every_steps = 50
  config.checkpoint_every_steps = 50
  return config
