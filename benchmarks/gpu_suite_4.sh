#!/usr/bin/env bash
# Fourth lent-GPU check (one H100/H200; its image has JAX, flax, optax, orbax, torch, pytest,
# pytest-xdist; the other packages travel as wheels in .whl/):
#   1. device and versions;
#   2. benchmarks/train_step.py on the GPU for both models, after the sixth session's CPU changes
#      (rotation.pad_and_conv now pads inside the convolution on every backend);
#   3. the whole not-slow unit suite on the GPU (JAX_PLATFORMS=cuda,cpu; colabs and the
#      tensorflow-datasets pipeline tests excluded: that package is not in the image), to check the
#      fourth session's GPU test fixes, which were only checked on CPU.
# Every stage is bounded by `timeout`; the whole script ends in under ~470 s.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh" gpu_suite_4
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import jax, flax, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'torch', torch.__version__)"
} 2>&1 | tee "$OUT/env.txt"
for model in rbnn_resnet20 resnet20; do
  timeout -s INT -k 10 80 python3 benchmarks/train_step.py --model $model --device cuda \
    --reps 8 --steps 20 2>&1 | tee "$OUT/train_step_$model.txt" | tail -n 4
  echo "$model done at ${SECONDS}s"
done
left=$((440 - SECONDS))
JAX_PLATFORMS=cuda,cpu timeout -s INT -k 10 $left python3 -m pytest -q -rfEs --tb=short \
  -p no:cacheprovider -n 14 -m "not slow" --ignore=tests/colabs \
  --ignore=tests/data/pipeline_test.py tests 2>&1 | tee "$OUT/pytest.txt" | tail -n 40
echo "all done at ${SECONDS}s"
