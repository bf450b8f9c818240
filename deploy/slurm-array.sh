#!/usr/bin/env bash
# Slurm array of `nasnet worker --queue` processes, one GPU each. Start the search elsewhere with
# the same --queue URL; cancel the array (scancel) when the search has finished.
#   sbatch --array=0-31 deploy/slurm-array.sh redis://QUEUE_HOST:6379 /data/cifar10
#SBATCH --job-name=nasnet-worker
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --time=48:00:00
# SIGTERM 60 s before the time limit: the worker hands its trial back to the queue.
#SBATCH --signal=TERM@60
set -euo pipefail
QUEUE=${1:?redis://HOST:PORT[/DB]}
DATA_DIR=${2:?dataset folder on this machine}
NASNET=${NASNET:-nasnet}
exec "$NASNET" worker --queue "$QUEUE" --queue-name "${QUEUE_NAME:-nasnet}" \
    --device cuda:0 --data-dir "$DATA_DIR" --lease-ms "${LEASE_MS:-60000}"
