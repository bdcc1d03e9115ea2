#!/usr/bin/env bash
# Multi-node GPU run: one process per node driving all of its GPUs.
# Under SLURM:  srun --nodes=N --ntasks-per-node=1 --gpus-per-node=8 launch/gpu_multi.sh CONFIG WORKDIR
#   (JAX detects SLURM's coordinator, process count and index via --jax_distributed.)
# Without SLURM, on each node i of N (node 0's address as coordinator):
#   COORDINATOR=node0:12345 NUM_PROCESSES=N PROCESS_ID=i launch/gpu_multi.sh CONFIG WORKDIR
# WORKDIR must be a shared filesystem path.
set -euo pipefail
CONFIG=$1; WORKDIR=$2; shift 2
if [ -n "${COORDINATOR:-}" ]; then
  exec python -m launch.main --config="$CONFIG" --workdir="$WORKDIR" \
    --coordinator_address="$COORDINATOR" --num_processes="$NUM_PROCESSES" \
    --process_id="$PROCESS_ID" "$@"
fi
exec python -m launch.main --config="$CONFIG" --workdir="$WORKDIR" --jax_distributed "$@"
