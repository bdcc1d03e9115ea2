#!/usr/bin/env bash
# What we run on a lent GPU machine (one H100/H200; its image has JAX, flax, optax, orbax, torch):
# the missing pure-Python/binary wheels travel in .whl/ (see BENCHMARKS.md), then the training-step
# benchmarks against PyTorch on the same GPU, then a longer training run of a paper config.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import jax, flax, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'torch', torch.__version__)"
python3 benchmarks/train_step.py --model resnet20 --device cuda --reps 20 --steps 20 2>&1 | tee "$OUT/train_step_resnet20.txt"
python3 benchmarks/train_step.py --model rbnn_resnet20 --device cuda --reps 20 --steps 20 2>&1 | tee "$OUT/train_step_rbnn.txt"
python3 -m launch.main --config=configs/rbnn/digits_resnet20.py --workdir=/tmp/rbnn_gpu \
  --config.num_epochs=100 --config.progress=lines 2>&1 | tail -n 5 | tee "$OUT/rbnn_digits_100ep.txt"
cp /tmp/rbnn_gpu/metrics.jsonl "$OUT/rbnn_digits_100ep_metrics.jsonl"
