"""`python -m albert_jax.pretrain`: pretrains ALBERT (masked LM + sentence order).

  python -m albert_jax.create_pretraining_data --input='corpus/*.txt' --output=data/pretrain
  python -m albert_jax.pretrain --config=configs/pretrain/large.py --workdir=runs/large \\
    --config.train_data=data/pretrain --config.eval_holdout_files=1

Flags only; the work is `albert_jax.trainer.pretrain.run(config, workdir)`, which a notebook
can call too. Prints {"step", "train", "eval", "export"} on stdout.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from absl import flags
from ml_collections import config_flags

from albert_jax import cli, distributed
from albert_jax.trainer import pretrain

USAGE = "python -m albert_jax.pretrain --config=configs/pretrain/SIZE.py --workdir=DIR"
FLAGS = flags.FlagValues()
config_flags.DEFINE_config_file(
  "config", None, "A configs/pretrain/*.py file.", flag_values=FLAGS, lock_config=True
)
flags.DEFINE_string(
  "workdir",
  None,
  "Where checkpoints, metrics, TensorBoard files and the exported model go; rerun with the "
  "same one to resume.",
  flag_values=FLAGS,
)


def main(argv: Sequence[str]) -> None:
  if extra := cli.parse(FLAGS, argv, USAGE):
    raise cli.UserError(f"Unexpected arguments: {extra}\n\nUsage: {USAGE}")
  if FLAGS.config is None or not FLAGS.workdir:
    raise cli.UserError(f"--config and --workdir are required.\n\nUsage: {USAGE}")
  distributed.initialize()  # joins the processes of a multi-host run; else nothing
  results = pretrain.run(FLAGS.config, FLAGS.workdir)
  if distributed.is_main_process():  # output from process 0 only, as for every file
    print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
  cli.run(main, FLAGS)
