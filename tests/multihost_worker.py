"""One process of the multi-process test (`tests/test_multihost.py`), or the whole run in one.

  ALBERT_JAX_COORDINATOR=127.0.0.1:PORT ALBERT_JAX_NUM_PROCESSES=2 ALBERT_JAX_PROCESS_ID=i \\
    python -m tests.multihost_worker OUT_DIR

Trains a tiny classifier for a few steps on an fsdp mesh over every device of every process,
each process loading only its rows of each global batch; then saves the state with Orbax (all
processes together). Process 0 writes OUT_DIR/losses.json; every process prints the rows it
loaded.
"""

from __future__ import annotations

import json
import os
import sys

GLOBAL_BATCH, LENGTH, STEPS = 8, 16, 3
TINY = dict(vocab_size=128, embedding_size=16, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
            hidden_dropout_prob=0.1)


def global_batches() -> list[dict]:
  """The same global batches in every process (a real input pipeline shares a seed)."""
  import numpy as np

  rng = np.random.RandomState(0)
  batches = []
  for _ in range(STEPS):
    ids = rng.randint(5, TINY["vocab_size"], (GLOBAL_BATCH, LENGTH)).astype(np.int32)
    batches.append(dict(input_ids=ids, attention_mask=np.ones_like(ids),
                        token_type_ids=np.zeros_like(ids), label=(ids[:, 1] % 2)))
  return batches


def run(out_dir: str):
  """(losses, final state). `distributed.initialize()` reads the ALBERT_JAX_* variables."""
  from albert_jax import distributed

  distributed.initialize()
  import jax
  import orbax.checkpoint as ocp

  from albert_jax import AlbertConfig, sharding
  from albert_jax.convert import create_module
  from albert_jax.optim import adamw

  head, tx = "sequence_classification", adamw(1e-3)
  module = create_module(AlbertConfig(**TINY), head, num_labels=2)
  mesh = sharding.make_mesh({"fsdp": -1})
  rows = distributed.process_batch_slice(GLOBAL_BATCH, mesh)
  print(f"process {jax.process_index()} of {jax.process_count()}: rows {rows.start}:{rows.stop} "
        f"of {GLOBAL_BATCH}, {jax.local_device_count()} of {jax.device_count()} devices",
        flush=True)
  batches = global_batches()
  sample = {k: v[:1] for k, v in batches[0].items()}
  state = sharding.create_sharded_state(module, tx, head, jax.random.key(0), sample, mesh)
  train = sharding.jit_train_step(sharding.shardings_of(state), mesh)
  rng = sharding.replicate(jax.random.key(1), mesh)
  losses = []
  for batch in batches:
    local = {k: v[rows] for k, v in batch.items()}
    state, metrics = train(state, sharding.shard_batch(local, mesh), rng)
    losses.append(float(metrics["loss"]))
  with ocp.StandardCheckpointer() as ckptr:  # every process writes its own shards
    ckptr.save(os.path.join(os.path.abspath(out_dir), "ckpt"), state)
    ckptr.wait_until_finished()
  if distributed.is_main_process():
    with open(os.path.join(out_dir, "losses.json"), "w") as f:
      json.dump(losses, f)
  return losses, state


if __name__ == "__main__":
  run(sys.argv[1])
