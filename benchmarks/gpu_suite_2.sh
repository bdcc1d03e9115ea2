#!/usr/bin/env bash
# Second lent-GPU check (one H100/H200; its image has JAX, flax, optax, orbax, torch, pytest,
# pytest-xdist): the numbers gpu_suite.sh does not give.
#   1. device and versions;
#   2. a paper-sized PAMS pipeline: EDSR-baseline (16 blocks x 64 features) x2 FP teacher, then
#      8-bit and 4-bit students, scored on the held-out photos (configs/pams/quick.py with
#      5x the teacher steps (60 epochs x 125 steps) and 10x the student steps (6 epochs x 125));
#   3. the full BNAS digits search (8 epochs, 7 removals), wall time and steps/s;
#   4. the unit suite on the GPU (JAX_PLATFORMS=cuda,cpu; colab tests excluded), with whatever
#      time is left under a 480 s total; it may be interrupted, the per-test lines say how far.
# Every stage is bounded by `timeout`; the whole script ends in under ~500 s.
# At most 8 files go to $OUT (the lending tool's limit).
set -uo pipefail
. "$(dirname "$0")/gpu_env.sh" gpu_suite_2
TIMES="$OUT/times.txt"
stamp() { echo "$1 at ${SECONDS}s" | tee -a "$TIMES"; }

# 1. device and versions.
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  nproc
  python3 -c "import jax, flax, optax, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__)"
} 2>&1 | tee "$OUT/env.txt"
stamp "env done"

# 2. PAMS pipeline, EDSR-baseline sized.
t0=$SECONDS
timeout -k 10 240 python3 -m launch.main --config=configs/pams/quick.py:baseline \
  --workdir=/tmp/pams_gpu 2>&1 | grep --line-buffered -v '^[a-z_0-9/]* *PAMS\|^body_\|^ *[a-z_0-9/]* *Conv ' \
  | tee "$OUT/pams.txt"
echo "pams rc=${PIPESTATUS[0]} wall=$((SECONDS - t0))s" | tee -a "$TIMES"
cp /tmp/pams_gpu/pams_table.md "$OUT/pams_table.md" 2>/dev/null
# The three stages' metrics in one file (a "stage" key added), plus the steady-state rates.
python3 - >>"$TIMES" 2>&1 <<'EOF'
import json, os
out = open(os.path.join(os.environ["OUT"], "pams_metrics.jsonl"), "w")
for stage in ("fp", "8bit", "4bit"):
  path = f"/tmp/pams_gpu/{stage}/metrics.jsonl"
  if not os.path.exists(path):
    print(stage, "no metrics"); continue
  rows = [json.loads(l) for l in open(path)]
  for r in rows:
    out.write(json.dumps({"stage": stage, **r}) + "\n")
  tr = [r for r in rows if r["split"] == "train" and r.get("steps_per_second")]
  if len(tr) >= 2:
    t = [r["step"] / r["steps_per_second"] for r in tr]  # seconds since the stage's first step
    steady = (tr[-1]["step"] - tr[0]["step"]) / (t[-1] - t[0])
    print(f"{stage}: {tr[-1]['step']} steps, {tr[-1]['steps_per_second']:.1f} steps/s overall "
          f"(first step and compile included), {steady:.1f} steps/s from step {tr[0]['step']} on")
  elif tr:
    print(f"{stage}: {tr[-1]['step']} steps, {tr[-1]['steps_per_second']:.1f} steps/s overall")
if os.path.exists("/tmp/pams_gpu/metrics.jsonl"):
  for l in open("/tmp/pams_gpu/metrics.jsonl"):
    out.write(json.dumps({"stage": "table", **json.loads(l)}) + "\n")
EOF
stamp "pams done"

# 3. BNAS digits search (full config: 8 ops, 8 epochs, 7 removals).
t0=$SECONDS
timeout -k 10 90 python3 -m launch.main --config=configs/bnas/digits_search.py \
  --workdir=/tmp/bnas_gpu --config.progress=lines 2>&1 \
  | grep --line-buffered -v '^ \|^--\|^cells\|^stem\|^classifier' | tee "$OUT/bnas.txt"
echo "bnas rc=${PIPESTATUS[0]} wall=$((SECONDS - t0))s" | tee -a "$TIMES"
cat /tmp/bnas_gpu/final_report.json >>"$OUT/bnas.txt" 2>/dev/null
stamp "bnas done"

# 4. Unit suite on the GPU with the time left (total budget 480 s, at most 300 s, at least 60 s).
left=$((480 - SECONDS)); ((left > 300)) && left=300; ((left < 60)) && left=60
echo "pytest budget ${left}s" | tee -a "$TIMES"
t0=$SECONDS
JAX_PLATFORMS=cuda,cpu timeout -s INT -k 15 "$left" python3 -m pytest -v -rfE --tb=short \
  --maxfail=50 -p no:cacheprovider -n 8 tests/ -m "not slow" --ignore=tests/colabs \
  2>&1 | tee "$OUT/pytest.txt" | grep -E 'FAILED|ERROR|passed|failed|Interrupt' | tail -n 60
echo "pytest rc=${PIPESTATUS[0]} wall=$((SECONDS - t0))s" | tee -a "$TIMES"
stamp "all done"
