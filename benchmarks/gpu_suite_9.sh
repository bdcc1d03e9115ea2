#!/usr/bin/env bash
# Ninth lent-GPU check, after the CPU oneDNN convolutions (`jaxcompress/ops/onednn_conv.py`):
#   1. the ops tests on the GPU machine (JAX_PLATFORMS=cuda,cpu): the conv layer must stay
#      `lax.conv_general_dilated` on the GPU, and the new module must import and behave under
#      this image's jax/jaxlib (0.11, a minor version the custom-call contract was not checked
#      on, so `available()` must say False there);
#   2. whether jaxlib 0.11's XLA:CPU runs the same `__onednn$convolution` contract: the probe
#      alone, in its own process (a rejected config aborts the process), on the host CPU.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh" gpu_suite_9
JAX_PLATFORMS=cuda,cpu timeout -s INT -k 10 240 python3 -m pytest -q -rfE --tb=short \
  -p no:cacheprovider -n 8 tests/ops 2>&1 | tee "$OUT/pytest_ops.txt" | tail -n 12
echo "pytest done at ${SECONDS}s"
JAX_PLATFORMS=cuda,cpu timeout 60 python3 -c "
import jax, jaxlib
from jaxcompress.ops import onednn_conv as oc
print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, jax.default_backend(), 'available()', oc.available())
" 2>&1 | grep -v "^[IW][0-9]" | tee "$OUT/available.txt"
JAX_PLATFORMS=cpu timeout 60 python3 -c "
from jaxcompress.ops import onednn_conv as oc
print('probe on jaxlib 0.11 CPU:', oc._probe())
" 2>&1 | grep -v "^[IW][0-9]" | tail -3 | tee "$OUT/probe.txt"
echo "all done at ${SECONDS}s"
