#!/usr/bin/env bash
# Eighth lent-GPU check (run in the ninth session, results in BENCHMARKS.md): the engine's GPU start-up choices end to end, after
# gpu_suite_6/7.sh measured them one by one (`jaxcompress/train/compile_options.py`: threefry as
# one kernel inside `loop.run`; `xla_gpu_autotune_level=0` in the digits search configs):
#   1. search_compile.py on the 8-op BNAS search with the engine's choices (expected: init compile
#      ~5 s instead of 107 s, first train step well under a second instead of ~40-60 s);
#   2. the whole BNAS digits search through the launcher, bounded at 300 s (gpu_suite_5.sh: no
#      training row within 200 s).
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh" gpu_suite_8
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
# 0. Are the threefry kernel's draws bit-equal to the expanded lowering's? (JAX documents the
#    same function; loop.run relies on it so a search's draws do not depend on the setting.)
timeout 60 python3 - <<'PY' 2>&1 | grep -v "^[IW][0-9]" | tee "$OUT/threefry_equal.txt"
import jax, numpy as np
def draws():
    key = jax.random.key(7)
    fns = [lambda k: jax.random.normal(k, (257, 33)), lambda k: jax.random.uniform(k, (4099,)),
           lambda k: jax.random.bits(k, (1000,)), lambda k: jax.random.split(k, 17)]
    return [np.asarray(jax.random.key_data(o) if jax.dtypes.issubdtype(o.dtype, jax.dtypes.prng_key)
                       else o) for o in (jax.jit(f)(key) for f in fns)]
jax.config.update("jax_threefry_gpu_kernel_lowering", False); a = draws()
jax.config.update("jax_threefry_gpu_kernel_lowering", True); jax.clear_caches(); b = draws()
print("threefry kernel bit-equal:", all(np.array_equal(x, y) for x, y in zip(a, b)))
PY
timeout -s INT -k 10 200 python3 benchmarks/search_compile.py --config bnas 2>&1 \
  | grep -v "^[IW][0-9]" | tee "$OUT/search_compile_bnas.txt"
echo "search_compile done at ${SECONDS}s"
t0=$SECONDS
timeout -s INT -k 10 300 python3 -m launch.main --config=configs/bnas/digits_search.py \
  --workdir=/tmp/bnas_gpu --config.progress=lines 2>&1 | tail -n 15 | tee "$OUT/bnas.txt"
echo "bnas wall $((SECONDS - t0))s"
cp /tmp/bnas_gpu/metrics.jsonl /tmp/bnas_gpu/final_report.json "$OUT/" 2>/dev/null
echo "all done at ${SECONDS}s"
