#!/usr/bin/env bash
# Runs one command on every worker of a Cloud TPU VM slice (one host or a pod slice), fetches
# each worker's log, and deletes the TPU VM.
#
#   TPU_NAME=albert-v4-32 ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 \
#   COMMAND="python -m albert_jax.pretrain --config=configs/pretrain/large.py --workdir=/mnt/shared/albert-large" \
#   launch/tpu_vm.sh
#
# Every worker runs the same COMMAND from a copy of this repository (~/albert_jax);
# `albert_jax.distributed.initialize()` finds the other workers by itself on a TPU VM, and the
# mesh spans all chips of the slice. The workdir must be one filesystem that all workers see
# (e.g. a Filestore or gcsfuse mount at the same path): Orbax checkpoints are written by all
# workers together, and the logs and metrics by worker 0.
#
# Environment:
#   TPU_NAME          name of the TPU VM (required)
#   ZONE              e.g. us-central2-b (required)
#   ACCELERATOR_TYPE  e.g. v4-8, v4-32, v5litepod-16 (required unless the TPU VM exists)
#   RUNTIME_VERSION   TPU VM image (default: tpu-ubuntu2204-base)
#   COMMAND           the command to run on every worker (required)
#   PROJECT           gcloud project (default: gcloud's configured one)
#   SPOT=1            create a Spot TPU VM
#   KEEP=1            keep the TPU VM at the end (default: delete it)
#   SETUP             extra shell run on every worker before COMMAND, e.g. a mount command
#   LOG_DIR           where worker logs go (default: logs/$TPU_NAME)
#
# --restarts N (the only argument): when the job fails (a worker dies, hangs or raises: every
# worker then ends within a minute, see docs/troubleshooting.md), run COMMAND again on every
# worker from its last checkpoint; N+1 consecutive failures at the same step stop it
# (launch/supervise.py).
set -euo pipefail

restarts=0
if [[ "${1:-}" == "--restarts" ]]; then
  restarts="${2:?--restarts needs a number}"
fi

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${COMMAND:?set COMMAND}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
LOG_DIR="${LOG_DIR:-logs/$TPU_NAME}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
GCLOUD=(gcloud compute tpus tpu-vm)
WHERE=(--zone "$ZONE" ${PROJECT:+--project "$PROJECT"})

if ! "${GCLOUD[@]}" describe "$TPU_NAME" "${WHERE[@]}" >/dev/null 2>&1; then
  : "${ACCELERATOR_TYPE:?set ACCELERATOR_TYPE to create the TPU VM}"
  echo "Creating $TPU_NAME ($ACCELERATOR_TYPE, $RUNTIME_VERSION) in $ZONE"
  "${GCLOUD[@]}" create "$TPU_NAME" "${WHERE[@]}" --accelerator-type "$ACCELERATOR_TYPE" \
    --version "$RUNTIME_VERSION" ${SPOT:+--spot}
fi
if [[ -z "${KEEP:-}" ]]; then
  trap 'echo "Deleting $TPU_NAME"; "${GCLOUD[@]}" delete "$TPU_NAME" "${WHERE[@]}" --quiet' EXIT
fi

echo "Copying the repository to every worker"
tmp="$(mktemp -d)" && archive="$tmp/albert_jax.tgz"
tar -czf "$archive" -C "$REPO" --exclude=.git --exclude=.venv --exclude=logs \
  --exclude='__pycache__' --exclude='*.egg-info' .
"${GCLOUD[@]}" scp "$archive" "$TPU_NAME":albert_jax.tgz "${WHERE[@]}" --worker=all
rm -rf "$tmp"
"${GCLOUD[@]}" ssh "$TPU_NAME" "${WHERE[@]}" --worker=all --command "
  set -e
  rm -rf ~/albert_jax && mkdir ~/albert_jax && tar -xzf ~/albert_jax.tgz -C ~/albert_jax
  python3 -m pip install -q -U 'jax[tpu]' -e ~/albert_jax
  ${SETUP:-true}"

echo "Running on every worker: $COMMAND"
status=0
python3 "$REPO/launch/supervise.py" --restarts "$restarts" -- \
  "${GCLOUD[@]}" ssh "$TPU_NAME" "${WHERE[@]}" --worker=all --command "
  set -o pipefail; cd ~/albert_jax && ($COMMAND) 2>&1 | tee -a ~/albert_jax.log" || status=$?

echo "Fetching logs into $LOG_DIR"
mkdir -p "$LOG_DIR"
workers=$("${GCLOUD[@]}" describe "$TPU_NAME" "${WHERE[@]}" \
  --format='value(networkEndpoints.len())')
for ((i = 0; i < ${workers:-1}; i++)); do
  "${GCLOUD[@]}" scp "$TPU_NAME":albert_jax.log "$LOG_DIR/worker_$i.log" "${WHERE[@]}" \
    --worker="$i" || echo "No log from worker $i"
done
tail -n 20 "$LOG_DIR/worker_0.log" || true
exit "$status"
