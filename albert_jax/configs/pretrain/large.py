r"""ALBERT-large (v2 architecture) pretraining from scratch with Google's recipe.

  python -m albert_jax.pretrain --config=configs/pretrain/large.py --workdir=runs/albert-large \
    --config.train_data=data/pretrain --config.eval_holdout_files=1

The recipe is Google's (see configs/pretrain/base.py); only the architecture differs.
"""

from albert_jax.trainer.pretrain import base_config


def get_config():
  config = base_config()
  config.model = "albert-large-v2"
  return config
