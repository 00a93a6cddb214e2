r"""ALBERT-xlarge (v2 architecture) pretraining from scratch with Google's recipe.

  python -m albert_jax.pretrain --config=configs/pretrain/xlarge.py --workdir=runs/albert-xlarge \
    --config.train_data=data/pretrain --config.eval_holdout_files=1

The recipe is Google's (see configs/pretrain/base.py); only the architecture differs.
Faster on TPU/GPU: --config.dtype=bfloat16 (parameters and optimizer state stay float32).
"""

from albert_jax.trainer.pretrain import base_config


def get_config():
  config = base_config()
  config.model = "albert-xlarge-v2"
  return config
