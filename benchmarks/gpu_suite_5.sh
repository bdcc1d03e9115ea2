#!/usr/bin/env bash
# Fifth lent-GPU check, after gpu_suite_4.sh's 17 failures (none a wrong result):
#   1. the two fixed test files on the GPU (PAMS tie tests, summary.xla_flops);
#   2. whether XLA_FLAGS=--xla_backend_extra_options=-nvptx-prec-divf32=2 gives IEEE float32
#      division (PAMS ties equal to PyTorch's), by running the tie tests' CPU assertions under it;
#   3. the BNAS digits search on the GPU, bounded at 200 s, to see whether it gets past compiling.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh" gpu_suite_5
JAX_PLATFORMS=cuda,cpu timeout -s INT -k 10 90 python3 -m pytest -q -rfE --tb=short \
  -p no:cacheprovider -n 8 tests/quant/quantizers_test.py tests/summary_test.py 2>&1 \
  | tee "$OUT/pytest.txt" | tail -n 8
echo "pytest done at ${SECONDS}s"
XLA_FLAGS=--xla_backend_extra_options=-nvptx-prec-divf32=2 timeout 60 python3 - <<'PY' 2>&1 | tee "$OUT/ieee_div.txt"
import jax, jax.numpy as jnp, numpy as np
from jaxcompress.quant import quantizers as qz
w = np.float32([7.0, 6.5, 0.0, 0.0, -2.5, 1.5])
print(jax.devices(), "weight levels", np.asarray(qz.pams_quantize_weight(jnp.asarray(w), 4)))
div = jax.jit(lambda a, b: a / b)(jnp.float32(45.5), jnp.float32(7.0))
print("45.5/7 =", repr(float(div)), "(IEEE: 6.5)")
PY
echo "flag check done at ${SECONDS}s"
t0=$SECONDS
timeout -s INT -k 10 200 python3 -m launch.main --config=configs/bnas/digits_search.py \
  --workdir=/tmp/bnas_gpu --config.progress=lines 2>&1 | tail -n 15 | tee "$OUT/bnas.txt"
echo "bnas wall $((SECONDS - t0))s"
cp /tmp/bnas_gpu/metrics.jsonl "$OUT/bnas_metrics.jsonl" 2>/dev/null
echo "all done at ${SECONDS}s"
