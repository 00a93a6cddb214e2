#!/usr/bin/env bash
# Multi-node GPU without a scheduler: start this on every node, one process per node.
#
#   # on node 0 (the coordinator) and on node 1, with the same COORDINATOR and NUM_NODES:
#   COORDINATOR=10.0.0.1:12345 NUM_NODES=2 NODE_RANK=0 launch/gpu_multinode.sh \
#     python -m albert_jax.finetune --config=configs/finetune/glue.py:mnli --workdir=/shared/mnli
#   COORDINATOR=10.0.0.1:12345 NUM_NODES=2 NODE_RANK=1 launch/gpu_multinode.sh \
#     python -m albert_jax.finetune --config=configs/finetune/glue.py:mnli --workdir=/shared/mnli
#
# COORDINATOR is host:port of node 0 (any free port reachable from the other nodes); NODE_RANK
# is 0 .. NUM_NODES - 1. Each process uses all GPUs of its node (limit them with
# CUDA_VISIBLE_DEVICES). The workdir must be on a filesystem all nodes share.
#
# --restarts N (first argument, the same on every node): when the job fails (a process dies,
# hangs or raises: every process then ends within a minute, see docs/troubleshooting.md),
# start it again from its last checkpoint; every node restarts its process and they meet at
# COORDINATOR again. N+1 consecutive failures at the same step stop it (launch/supervise.py).
set -euo pipefail

restarts=()
if [[ "${1:-}" == "--restarts" ]]; then
  restarts=(--restarts "${2:?--restarts needs a number}")
  shift 2
fi

: "${COORDINATOR:?set COORDINATOR=host:port of node 0}"
: "${NUM_NODES:?set NUM_NODES}" "${NODE_RANK:?set NODE_RANK (0 .. NUM_NODES-1)}"
if [[ $# -eq 0 ]]; then
  echo "usage: COORDINATOR=host:port NUM_NODES=N NODE_RANK=i launch/gpu_multinode.sh [--restarts N] COMMAND..." >&2
  exit 2
fi
export ALBERT_JAX_COORDINATOR="$COORDINATOR"
export ALBERT_JAX_NUM_PROCESSES="$NUM_NODES"
export ALBERT_JAX_PROCESS_ID="$NODE_RANK"
if [[ ${#restarts[@]} -eq 0 ]]; then
  exec "$@"
fi
exec python3 "$(dirname "$0")/supervise.py" "${restarts[@]}" -- "$@"
