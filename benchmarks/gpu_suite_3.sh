#!/usr/bin/env bash
# Third lent-GPU check (one H100/H200; its image has JAX, flax, optax, orbax, torch, pytest,
# pytest-xdist; the other packages travel as wheels in .whl/):
#   1. device and versions;
#   2. the engine tests and the on-device stream tests on the GPU (JAX_PLATFORMS=cuda,cpu);
#   3. benchmarks/on_device.py: host pipeline vs data.on_device, whole digits quick configs.
# Every stage is bounded by `timeout`; the whole script ends in under ~400 s.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh" gpu_suite_3
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import jax, flax; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__)"
} 2>&1 | tee "$OUT/env.txt"

JAX_PLATFORMS=cuda,cpu timeout -s INT -k 10 120 python3 -m pytest -q -rfEs --tb=short \
  -p no:cacheprovider -n 8 tests/train/loop_test.py tests/data/on_device_test.py 2>&1 \
  | tee "$OUT/pytest.txt" | tail -n 25
echo "pytest wall ${SECONDS}s"

timeout -k 10 240 python3 benchmarks/on_device.py --reps 1 2>&1 | tee "$OUT/on_device.txt"
echo "all done at ${SECONDS}s"
