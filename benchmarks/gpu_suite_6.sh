#!/usr/bin/env bash
# Sixth lent-GPU check: where the BNAS digits search's start-up goes on XLA:GPU (gpu_suite_5.sh saw
# no training row within 200 s on an H100). `benchmarks/search_compile.py` times trace / lower /
# compile / first run of init, on_epoch_start, train_step and eval_step. Four processes run side by
# side (16 host cores, one GPU; compile is host-bound), each bounded:
#   A. 4-op quick search, default XLA options, GpuCompiler's phase timers logged;
#   B. 8-op search, default XLA options, phase timers logged;
#   C. 8-op search, --xla_gpu_autotune_level=0 (no conv/GEMM autotuning);
#   D. 8-op search, autotuning off and Triton GEMM fusions off.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh" gpu_suite_6
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
LIMIT=${LIMIT:-270}
run() {  # run <name> <XLA_FLAGS> <config> [vmodule]
  local name=$1 flags=$2 config=$3 vmodule=${4:-}
  XLA_FLAGS="$flags" TF_CPP_MIN_LOG_LEVEL=${vmodule:+0} TF_CPP_VMODULE="$vmodule" \
    timeout -s INT -k 10 "$LIMIT" python3 benchmarks/search_compile.py --xla-defaults --config "$config" \
    > "$OUT/$name.txt" 2> "$OUT/$name.log"
  echo "$name rc=$? at ${SECONDS}s" >> "$OUT/$name.txt"
}
run A_quick_default "" bnas_quick gpu_compiler=1 &
run B_full_default "" bnas gpu_compiler=1 &
run C_full_autotune0 "--xla_gpu_autotune_level=0" bnas &
run D_full_autotune0_notriton "--xla_gpu_autotune_level=0 --xla_gpu_enable_triton_gemm=false" bnas &
wait
for f in "$OUT"/*.txt; do echo "== $(basename "$f")"; cat "$f"; done
for f in "$OUT"/*.log; do
  echo "== $(basename "$f") (timer lines)"; grep -E "took|GpuCompiler::" "$f" | cut -c1-220 | tail -n 25
  gzip -f "$f"
done
echo "all done at ${SECONDS}s"
