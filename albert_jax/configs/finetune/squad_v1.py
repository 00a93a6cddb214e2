# python -m albert_jax.finetune --config=configs/finetune/squad_v1.py --workdir=/tmp/albert_squad_v1
"""Fine-tunes ALBERT on SQuAD 1.1 (span extraction; exact match and F1 on dev).

Google ALBERT's recipe: learning rate 5e-5, batch 48, 2 epochs, 10% warm-up, sequence length
384, document stride 128, question length 64; n-best 20 and answer length 30 when decoding.
Local files instead of TFDS: --config.train_file=train-v1.1.json --config.eval_file=dev-v1.1.json.
"""

from albert_jax.trainer.finetune import base_config


def get_config(task: str = "squad_v1"):
  config = base_config(task)
  config.model = "albert/albert-base-v2"
  config.max_seq_length = 384
  config.doc_stride = 128
  config.max_query_length = 64
  config.n_best_size = 20
  config.max_answer_length = 30
  config.learning_rate = 5e-5
  config.batch_size = 48
  config.num_epochs = 2.0
  config.warmup_fraction = 0.1
  config.best_metric = "f1"
  config.eval_every_steps = 2000
  config.checkpoint_every_steps = 2000
  return config
