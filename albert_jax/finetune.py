"""`python -m albert_jax.finetune`: fine-tunes ALBERT on a GLUE, SQuAD or RACE task.

  python -m albert_jax.finetune --config=configs/finetune/sst2_sample.py --workdir=/tmp/albert_demo
  python -m albert_jax.finetune --config=configs/finetune/glue.py:mnli --workdir=runs/mnli \\
    --config.model=albert/albert-large-v2

Flags only; the work is `albert_jax.trainer.finetune.run(config, workdir)`, which a notebook
can call too. Prints the final metrics (as metrics.json) on stdout.
"""

from albert_jax import cli
from albert_jax.trainer import command, finetune

FLAGS = command.flag_values("finetune")
USAGE = command.usage_of("finetune")
main = command.main_of(finetune.run, FLAGS, "finetune")

if __name__ == "__main__":
  cli.run(main, FLAGS)
