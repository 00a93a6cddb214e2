r"""A tiny ALBERT pretrained on your own text in minutes on a CPU (the recipe at toy scale).

  python -m albert_jax.create_pretraining_data --input='my_corpus/*.txt' \
    --output=/tmp/albert-tiny/data --max_seq_length=64 --dupe_factor=5 --num_shards=4
  python -m albert_jax.pretrain --config=configs/pretrain/tiny.py --workdir=/tmp/albert-tiny/run \
    --config.train_data=/tmp/albert-tiny/data

Text files: one sentence per line, a blank line between documents. The model: hidden 64, 2
layers, 4 heads, FFN 128, embeddings 32, the real 30k vocabulary. The last data file is held out
for eval; the result in /tmp/albert-tiny/run/export loads with albert_jax.from_pretrained.
"""

from albert_jax.trainer.pretrain import base_config


def get_config():
  config = base_config()
  config.model = "albert-base-v2"
  config.model_overrides.hidden_size = 64
  config.model_overrides.num_hidden_layers = 2
  config.model_overrides.num_attention_heads = 4
  config.model_overrides.intermediate_size = 128
  config.model_overrides.embedding_size = 32
  config.model_overrides.max_position_embeddings = 64
  # BERT's 0.02 suits hidden 768; at hidden 64 every sub-layer starts tiny against the residual,
  # so [CLS] ignores its input and SOP, which needs [CLS] to attend to the text, sits at chance
  # while MLM trains. 0.2 ~ 1.6 / sqrt(hidden); the measurements are in docs/pretraining.md.
  config.model_overrides.initializer_range = 0.2
  config.max_seq_length = 64
  config.max_predictions_per_seq = 20
  config.eval_holdout_files = 1

  # AdamW: LAMB (0.01) collapses [CLS] to a constant under MLM at this size, so SOP never starts.
  config.optimizer = "adamw"
  config.adam_bias_correction = True  # optax's AdamW, with which this recipe was tuned
  config.learning_rate = 0.003
  config.batch_size = 16
  config.num_train_steps = 300
  config.warmup_steps = 10

  config.log_every_steps = 10
  config.eval_every_steps = 100
  config.checkpoint_every_steps = 100
  config.keep_checkpoints = 2
  config.mesh.shape = {"data": 1}  # one device: at this size more only add overhead
  return config
