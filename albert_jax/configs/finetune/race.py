# python -m albert_jax.finetune --config=configs/finetune/race.py --workdir=/tmp/albert_race
"""Fine-tunes ALBERT on RACE, middle and high school together (4-way multiple choice; accuracy).

Google ALBERT's recipe: learning rate 1e-5, batch 32, 12000 steps, 1000 warm-up steps,
sequence length 512 with at most 128 tokens of question + option. Google notes that ALBERT v2
needed dropout 0 (the v2 configs' default) and this learning rate to converge.
Local files instead of TFDS: --config.train_file=RACE/train --config.eval_file=RACE/dev.
"""

from albert_jax.trainer.finetune import base_config


def get_config():
  config = base_config("race_all")
  config.model = "albert/albert-base-v2"
  config.max_seq_length = 512
  config.max_qa_length = 128
  config.learning_rate = 1e-5
  config.batch_size = 32
  config.num_train_steps = 12000
  config.warmup_steps = 1000
  config.best_metric = "accuracy"
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  return config
