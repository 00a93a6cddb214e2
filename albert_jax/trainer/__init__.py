"""The training core shared by fine-tuning and pretraining, and the two trainers built on it.

  config.py    the run-config fields both trainers share, their checks, the optimizer
  state.py     the train state: restored from the latest checkpoint, else made from loaded
               parameters, else randomly initialized -- created already sharded
  loop.py      the train loop: gradient accumulation, logging, eval, checkpoints, export
  command.py   the command line of both trainers: --config, --workdir, the result on stdout
  export.py    a trained model written in `python -m albert_jax.convert`'s layout
  finetune.py  `run(config, workdir)` for GLUE, SQuAD and RACE (`python -m albert_jax.finetune`)
  seeds.py     several seeds as one program: the stacked state, the vmapped steps, collapse
               and restarts, the summary; finetune_seeds.py runs them (`--config.seeds=N`)
  pretrain.py  `run(config, workdir)` for masked LM + sentence order
               (`python -m albert_jax.pretrain`)

A notebook calls the trainers directly:

  from albert_jax.trainer import finetune
  config = finetune.base_config("sst2")  # or a configs/finetune/*.py file's get_config()
  metrics = finetune.run(config, "/tmp/run")

Importing this package imports none of its modules.
"""
