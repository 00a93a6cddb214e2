# python -m albert_jax.finetune --config=configs/finetune/glue.py:mnli --workdir=/tmp/albert_mnli
"""Fine-tunes ALBERT on a GLUE task, picked by the argument after the colon.

  --config=configs/finetune/glue.py:TASK   TASK: cola sst2 mrpc qqp stsb mnli qnli rte wnli

Google ALBERT's recipes (RECIPES; docs/finetuning.md's table): AdamW (weight decay 0.01, clip 1.0),
linear warm-up and decay, sequence length 512. Google gives no WNLI recipe; its row is RTE's
learning rate and batch, about 10 epochs of WNLI's 635 training examples (RTE: 800 steps over
2.5k examples), a quarter of them warm-up as for RTE.
Local files instead of TFDS: --config.train_file=train.tsv --config.eval_file=dev.tsv.
"""

from typing import NamedTuple

from albert_jax.trainer.finetune import base_config


class Recipe(NamedTuple):
  learning_rate: float
  batch_size: int
  num_train_steps: int
  warmup_steps: int
  max_seq_length: int
  best_metric: str  # the dev metric that picks the best checkpoint
  eval_every_steps: int  # also how often a checkpoint is saved


RECIPES = {
  "cola": Recipe(1e-5, 16, 5336, 320, 512, "mcc", 500),  # acceptability
  "sst2": Recipe(1e-5, 32, 20935, 1256, 512, "accuracy", 2000),  # sentiment
  "mrpc": Recipe(2e-5, 32, 800, 200, 512, "accuracy", 100),  # paraphrase (accuracy, F1)
  "qqp": Recipe(5e-5, 128, 14000, 1000, 512, "accuracy", 1000),  # duplicates (accuracy, F1)
  "stsb": Recipe(2e-5, 16, 3598, 214, 512, "pearson", 500),  # similarity regression
  "mnli": Recipe(3e-5, 128, 10000, 1000, 512, "accuracy", 1000),  # matched + mismatched dev
  "qnli": Recipe(1e-5, 32, 33112, 1986, 512, "accuracy", 2000),  # question-answer entailment
  "rte": Recipe(3e-5, 32, 800, 200, 512, "accuracy", 100),  # entailment
  "wnli": Recipe(3e-5, 32, 200, 50, 512, "accuracy", 50),  # Winograd entailment
}


def get_config(task=None):
  if task not in RECIPES:
    raise ValueError(
      f"glue.py needs a task after a colon, e.g. --config=configs/finetune/glue.py:mnli; got "
      f"{task!r}. Tasks: {' '.join(RECIPES)}."
    )
  recipe = RECIPES[task]
  config = base_config(task)
  config.model = "albert/albert-base-v2"
  config.update(recipe._asdict())
  config.checkpoint_every_steps = recipe.eval_every_steps
  return config
