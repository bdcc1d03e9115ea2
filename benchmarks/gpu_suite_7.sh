#!/usr/bin/env bash
# Seventh lent-GPU check, after gpu_suite_6.sh found (H100, four processes side by side):
#   - BNAS quick search: init compile 40.6 s (HLO passes 30.8 s on a 56k-instruction module, mostly
#     unrolled threefry from ~300 parameter draws), train_step compile 40.7 s + first run 47.4 s;
#   - 8-op search: init compile 107 s, train_step HLO passes 1.77 min, not done within 270 s;
#   - --xla_gpu_autotune_level=0 (with or without Triton GEMMs) does not change init's compile.
# Now, again four processes side by side, all with jax_threefry_gpu_kernel_lowering on (threefry as
# one CUDA kernel: same bits, much smaller init module):
#   A. quick search, default XLA options, GpuCompiler phase timers;
#   B. quick search, command buffers (CUDA graphs) off: is the 47 s first run graph capture?
#   C. quick search, --xla_gpu_autotune_level=0: is the first run or compile conv autotuning?
#   D. 8-op search, default XLA options, phase timers.
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh" gpu_suite_7
export JAX_THREEFRY_GPU_KERNEL_LOWERING=1
run() {  # run <name> <limit> <XLA_FLAGS> <config> [vmodule]
  local name=$1 limit=$2 flags=$3 config=$4 vmodule=${5:-}
  XLA_FLAGS="$flags" TF_CPP_MIN_LOG_LEVEL=${vmodule:+0} TF_CPP_VMODULE="$vmodule" \
    timeout -s INT -k 10 "$limit" python3 benchmarks/search_compile.py --xla-defaults --config "$config" \
    > "$OUT/$name.txt" 2> "$OUT/$name.log"
  echo "$name rc=$? at ${SECONDS}s" >> "$OUT/$name.txt"
}
run A_quick_threefry 230 "" bnas_quick gpu_compiler=1 &
run B_quick_threefry_nocmdbuf 230 "--xla_gpu_enable_command_buffer=" bnas_quick &
run C_quick_threefry_autotune0 230 "--xla_gpu_autotune_level=0" bnas_quick &
run D_full_threefry 290 "" bnas gpu_compiler=1 &
wait
for f in "$OUT"/*.txt; do echo "== $(basename "$f")"; cat "$f"; done
for f in "$OUT"/*.log; do
  echo "== $(basename "$f") (timer lines, errors)"
  grep -E "GpuCompiler::|Error|error" "$f" | cut -c1-200 | tail -n 12
  gzip -f "$f"
done
echo "all done at ${SECONDS}s"
