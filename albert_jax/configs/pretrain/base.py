r"""ALBERT-base (v2 architecture) pretraining from scratch with Google's recipe.

  python -m albert_jax.pretrain --config=configs/pretrain/base.py --workdir=runs/albert-base \
    --config.train_data=data/pretrain --config.eval_holdout_files=1

Google's recipe (albert_jax.trainer.pretrain.base_config): LAMB, lr 0.00176, batch 4096,
125,000 steps, 3,125 warm-up steps then linear decay to 0, weight decay 0.01 (not on
LayerNorm and biases), clip 1.0, max_seq_length 512, 20 predictions per sequence. The data:
create_pretraining_data with its defaults (max_seq_length 512, max_predictions_per_seq 20,
dupe_factor 40).
"""

from albert_jax.trainer.pretrain import base_config


def get_config():
  config = base_config()
  config.model = "albert-base-v2"
  return config
