#!/usr/bin/env bash
# Run a jaxcompress config on a Cloud TPU pod slice: the same command on every host.
# Usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [extra flags]
# WORKDIR must be shared storage every host can write (e.g. gs://bucket/run): orbax writes the
# checkpoint from all hosts together; only host 0 writes logs.
set -euo pipefail
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
  cd ~/jaxcompress && git pull --ff-only &&
  pip install -q -e . 'jax[tpu]' &&
  python -m launch.main --config=$CONFIG --workdir=$WORKDIR --jax_distributed $*"
