"""`python -m albert_jax.finetune`: fine-tunes ALBERT on a GLUE, SQuAD or RACE task.

  python -m albert_jax.finetune --config=configs/finetune/sst2_sample.py --workdir=/tmp/albert_demo
  python -m albert_jax.finetune --config=configs/finetune/glue.py:mnli --workdir=runs/mnli \\
    --config.model=albert/albert-large-v2

Flags only; the work is `albert_jax.trainer.finetune.run(config, workdir)`, which a notebook
can call too. Prints the final metrics (as metrics.json) on stdout.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from absl import flags
from ml_collections import config_flags

from albert_jax import cli, distributed
from albert_jax.trainer import finetune

USAGE = "python -m albert_jax.finetune --config=configs/finetune/TASK.py --workdir=DIR"
FLAGS = flags.FlagValues()
config_flags.DEFINE_config_file(
  "config", None, "A configs/finetune/*.py file.", flag_values=FLAGS, lock_config=True
)
flags.DEFINE_string(
  "workdir",
  None,
  "Where checkpoints, TensorBoard files, predictions and metrics.json go; rerun with the same "
  "one to resume.",
  flag_values=FLAGS,
)


def main(argv: Sequence[str]) -> None:
  if extra := cli.parse(FLAGS, argv, USAGE):
    raise cli.UserError(f"Unexpected arguments: {extra}\n\nUsage: {USAGE}")
  if FLAGS.config is None or not FLAGS.workdir:
    raise cli.UserError(f"--config and --workdir are required.\n\nUsage: {USAGE}")
  distributed.initialize()  # joins the processes of a multi-host run; else nothing
  results = finetune.run(FLAGS.config, FLAGS.workdir)
  if distributed.is_main_process():  # output from process 0 only, as for every file
    print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
  cli.run(main, FLAGS)
