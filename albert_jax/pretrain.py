"""`python -m albert_jax.pretrain`: pretrains ALBERT (masked LM + sentence order).

  python -m albert_jax.create_pretraining_data --input='corpus/*.txt' --output=data/pretrain
  python -m albert_jax.pretrain --config=configs/pretrain/large.py --workdir=runs/large \\
    --config.train_data=data/pretrain --config.eval_holdout_files=1

Flags only; the work is `albert_jax.trainer.pretrain.run(config, workdir)`, which a notebook
can call too. Prints {"step", "train", "eval", "export"} on stdout.
"""

from albert_jax import cli
from albert_jax.trainer import command, pretrain

FLAGS = command.flag_values("pretrain")
USAGE = command.usage_of("pretrain")
main = command.main_of(pretrain.run, FLAGS, "pretrain")

if __name__ == "__main__":
  cli.run(main, FLAGS)
