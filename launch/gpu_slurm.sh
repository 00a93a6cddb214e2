#!/usr/bin/env bash
# SLURM batch script: one process per node, each owning all of its node's GPUs.
#
#   sbatch --nodes=2 --gpus-per-node=8 launch/gpu_slurm.sh \
#     python -m albert_jax.pretrain --config=configs/pretrain/large.py --workdir=/shared/albert-large
#
# The process of node 0 is the coordinator; every process gets ALBERT_JAX_COORDINATOR,
# ALBERT_JAX_NUM_PROCESSES and ALBERT_JAX_PROCESS_ID from SLURM's variables, which
# `albert_jax.distributed.initialize()` reads. The workdir must be on a filesystem all nodes
# share. Run from the repository root with albert_jax installed (`pip install -e .` and a CUDA
# build of jax: `pip install -U "jax[cuda12]"`) in the environment the job inherits.
#
# --restarts N (first argument): when the job fails (a process dies, hangs or raises: every
# process then ends within a minute, see docs/troubleshooting.md), run it again in the same
# allocation from its last checkpoint; N+1 consecutive failures at the same step stop it
# (launch/supervise.py). srun ends the tasks left 120 s after the first one exits.
#
#SBATCH --job-name=albert-jax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --output=albert-jax-%j.log
set -euo pipefail

restarts=0
if [[ "${1:-}" == "--restarts" ]]; then
  restarts="${2:?--restarts needs a number}"
  shift 2
fi
if [[ $# -eq 0 ]]; then
  echo "usage: sbatch [options] launch/gpu_slurm.sh [--restarts N] COMMAND [ARGS...]" >&2
  exit 2
fi
coordinator="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
export ALBERT_JAX_COORDINATOR="$coordinator:${ALBERT_JAX_PORT:-$((20000 + SLURM_JOB_ID % 10000))}"
export ALBERT_JAX_NUM_PROCESSES="$SLURM_NNODES"
echo "$SLURM_NNODES processes, coordinator $ALBERT_JAX_COORDINATOR: $*"
# SLURM_PROCID is only known inside each task, hence the inner shell. The tasks that outlive a
# failed one end by themselves, printing why (so no --kill-on-bad-exit); --wait is the backstop.
python3 "$(dirname "$0")/supervise.py" --restarts "$restarts" -- \
  srun --ntasks="$SLURM_NNODES" --ntasks-per-node=1 --wait=120 \
  bash -c 'ALBERT_JAX_PROCESS_ID="$SLURM_PROCID" exec "$@"' _ "$@"
