# python -m albert_jax.finetune --config=configs/finetune/squad_v2.py --workdir=/tmp/albert_squad_v2
"""Fine-tunes ALBERT on SQuAD 2.0 (span extraction; exact match and F1 on dev).

Google ALBERT's recipe, SQuAD 1.1's (configs/finetune/squad_v1.py): learning rate 5e-5, batch
48, 2 epochs, 10% warm-up, sequence length 384, document stride 128, question length 64; n-best
20 and answer length 30 when decoding.
Unanswerable questions: the linear span head with the null answer at [CLS].
Local files instead of TFDS: --config.train_file=train-v2.0.json --config.eval_file=dev-v2.0.json.
"""

from albert_jax.configs.finetune import squad_v1


def get_config():
  config = squad_v1.get_config("squad_v2")
  config.null_score_diff_threshold = 0.0  # "no answer" if it beats the best span by more
  return config
