#!/usr/bin/env bash
# Eighth lent-GPU check (not yet run): the engine's GPU start-up choices end to end, after
# gpu_suite_6/7.sh measured them one by one (`jaxcompress/train/compile_options.py`: threefry as
# one kernel inside `loop.run`; `xla_gpu_autotune_level=0` in the digits search configs):
#   1. search_compile.py on the 8-op BNAS search with the engine's choices (expected: init compile
#      ~5 s instead of 107 s, first train step well under a second instead of ~40-60 s);
#   2. the whole BNAS digits search through the launcher, bounded at 300 s (gpu_suite_5.sh: no
#      training row within 200 s).
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh" gpu_suite_8
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout -s INT -k 10 200 python3 benchmarks/search_compile.py --config bnas 2>&1 \
  | grep -v "^[IW][0-9]" | tee "$OUT/search_compile_bnas.txt"
echo "search_compile done at ${SECONDS}s"
t0=$SECONDS
timeout -s INT -k 10 300 python3 -m launch.main --config=configs/bnas/digits_search.py \
  --workdir=/tmp/bnas_gpu --config.progress=lines 2>&1 | tail -n 15 | tee "$OUT/bnas.txt"
echo "bnas wall $((SECONDS - t0))s"
cp /tmp/bnas_gpu/metrics.jsonl /tmp/bnas_gpu/final_report.json "$OUT/" 2>/dev/null
echo "all done at ${SECONDS}s"
