#!/usr/bin/env bash
# jaxcompress's checks on one GPU machine (written for one H100/H200), in named parts.
#
#   bash benchmarks/gpu_suite.sh                    # every part, in the order listed below
#   bash benchmarks/gpu_suite.sh env train_step     # only these parts, in this order
#   bash benchmarks/gpu_suite.sh list               # the part names
#
# Parts (each a shell function below, each bounded by `timeout`; BENCHMARKS.md has the results):
#   env             GPU, driver, host cores, library versions
#   train_step      benchmarks/train_step.py on the GPU, float and RBNN ResNet-20, against PyTorch
#   rbnn_digits     configs/rbnn/digits_resnet20.py trained for 100 epochs
#   pams            the PAMS pipeline at EDSR-baseline size (configs/pams/quick.py:baseline)
#   bnas_search     the 8-op BNAS digits search through the launcher
#   search_compile  trace / lower / compile / first-run times of that search's programs
#   threefry        JAX's threefry GPU kernel gives the same draws as the expanded lowering
#   on_device       benchmarks/on_device.py: host pipeline vs data.on_device, digits quick configs
#   ieee_div        XLA:GPU float32 division with -nvptx-prec-divf32=2 (PAMS rounding ties)
#   ops             tests/ops on the GPU machine, and the oneDNN custom call on its host CPU
#   tests           the not-slow unit suite with JAX_PLATFORMS=cuda,cpu (colab runs excluded)
#
# Needs the repository (any working directory: the script moves to its root) and a Python with
# jaxcompress's requirements, a CUDA jaxlib, torch (train_step) and pytest + pytest-xdist (ops,
# tests): `pip install -e ".[test]"`. Packages the machine's image lacks can come as wheel files:
# WHEELS=<folder of .whl files> installs them without an index into the scratch folder first.
# Writes results to $OUT (default: workdir_gpu_suite/ in the repository) and run directories to
# $SCRATCH (default: workdir_gpu_suite_scratch/); both are created here and ignored by git.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
PY=${PYTHON:-python3}
OUT=${OUT:-$ROOT/workdir_gpu_suite}
SCRATCH=${SCRATCH:-$ROOT/workdir_gpu_suite_scratch}
mkdir -p "$OUT" "$SCRATCH"
export OUT PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
TIMES="$OUT/times.txt"
stamp() { echo "$1 at ${SECONDS}s" | tee -a "$TIMES"; }
# XLA's C++ log lines ("I0000 ...", "W0000 ...") are noise in the result files.
quiet() { grep --line-buffered -v "^[IW][0-9]"; }

setup() {
  if [[ -n "${WHEELS:-}" ]]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SCRATCH/site" "$WHEELS"/*.whl || return 1
    export PYTHONPATH=$SCRATCH/site:$PYTHONPATH
  fi
  if ! "$PY" -c "import jaxcompress" 2>/dev/null; then
    echo "jaxcompress does not import with $PY: run \`pip install -e \".[test]\"\` in the repository" \
      "(or set WHEELS to a folder of the missing wheels), then rerun." >&2
    return 1
  fi
}

env() {
  {
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    echo "host cores: $(nproc)"
    "$PY" - <<'PY'
import importlib
import jax
for name in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "grain", "torch"):
  try:
    print(name, getattr(importlib.import_module(name), "__version__", "?"))
  except ImportError:
    print(name, "not installed")
print("devices", jax.devices())
PY
  } 2>&1 | quiet | tee "$OUT/env.txt"
}

train_step() {
  local model
  for model in resnet20 rbnn_resnet20; do
    timeout -s INT -k 10 120 "$PY" benchmarks/train_step.py --model $model --device cuda \
      --reps 8 --steps 20 2>&1 | quiet | tee "$OUT/train_step_$model.txt" | tail -n 4
  done
}

rbnn_digits() {
  rm -rf "$SCRATCH/rbnn_digits"
  timeout -s INT -k 10 600 "$PY" -m launch.main --config=configs/rbnn/digits_resnet20.py \
    --workdir="$SCRATCH/rbnn_digits" --config.num_epochs=100 --config.progress=lines 2>&1 \
    | quiet | tail -n 5 | tee "$OUT/rbnn_digits_100ep.txt"
  cp "$SCRATCH/rbnn_digits/metrics.jsonl" "$OUT/rbnn_digits_100ep_metrics.jsonl" 2>/dev/null
}

pams() {
  # FP EDSR-baseline x2 teacher (16 blocks x 64 features), then 8-bit and 4-bit students, scored
  # on the held-out photographs (configs/pams/quick.py, variant `baseline`).
  local work=$SCRATCH/pams t0=$SECONDS
  rm -rf "$work"
  timeout -k 10 300 "$PY" -m launch.main --config=configs/pams/quick.py:baseline \
    --workdir="$work" 2>&1 | quiet | tail -n 30 | tee "$OUT/pams.txt"
  echo "pams rc=${PIPESTATUS[0]} wall=$((SECONDS - t0))s" | tee -a "$TIMES"
  cp "$work"/pams_table.* "$OUT/" 2>/dev/null
  # Every stage's metrics in one file (a "stage" key added), and each stage's steady rate.
  WORK=$work "$PY" - 2>&1 <<'PY' | tee -a "$OUT/pams.txt"
import glob, json, os
work = os.environ["WORK"]
with open(os.path.join(os.environ["OUT"], "pams_metrics.jsonl"), "w") as out:
  for path in sorted(glob.glob(os.path.join(work, "*", "metrics.jsonl"))):
    stage = os.path.basename(os.path.dirname(path))
    rows = [json.loads(line) for line in open(path)]
    for r in rows:
      out.write(json.dumps({"stage": stage, **r}) + "\n")
    tr = [r for r in rows if r.get("split") == "train" and r.get("steps_per_second")]
    if len(tr) >= 2:
      t = [r["step"] / r["steps_per_second"] for r in tr]  # seconds since the stage's start
      steady = (tr[-1]["step"] - tr[0]["step"]) / (t[-1] - t[0])
      print(f"{stage}: {tr[-1]['step']} steps, {tr[-1]['steps_per_second']:.1f} steps/s overall "
            f"(compile included), {steady:.1f} steps/s from step {tr[0]['step']} on")
PY
}

bnas_search() {
  local t0=$SECONDS
  rm -rf "$SCRATCH/bnas_search"
  timeout -s INT -k 10 300 "$PY" -m launch.main --config=configs/bnas/digits_search.py \
    --workdir="$SCRATCH/bnas_search" --config.progress=lines 2>&1 | quiet | tail -n 15 \
    | tee "$OUT/bnas_search.txt"
  echo "bnas_search rc=${PIPESTATUS[0]} wall=$((SECONDS - t0))s" | tee -a "$TIMES"
  cp "$SCRATCH/bnas_search/metrics.jsonl" "$OUT/bnas_search_metrics.jsonl" 2>/dev/null
  cp "$SCRATCH/bnas_search/final_report.json" "$OUT/bnas_search_final_report.json" 2>/dev/null
}

search_compile() {
  # The engine's own GPU choices (threefry kernel, the config's compiler_options); add
  # `--xla-defaults` by hand to time XLA's defaults instead.
  timeout -s INT -k 10 240 "$PY" benchmarks/search_compile.py --config bnas 2>&1 | quiet \
    | tee "$OUT/search_compile_bnas.txt"
}

threefry() {
  # loop.run turns jax_threefry_gpu_kernel_lowering on; JAX documents both lowerings as the same
  # function, so a search's draws must not depend on the setting.
  timeout 120 "$PY" - 2>&1 <<'PY' | quiet | tee "$OUT/threefry_equal.txt"
import jax
import numpy as np

def draws():
  key = jax.random.key(7)
  fns = [lambda k: jax.random.normal(k, (257, 33)), lambda k: jax.random.uniform(k, (4099,)),
         lambda k: jax.random.bits(k, (1000,)), lambda k: jax.random.split(k, 17)]
  outs = [jax.jit(f)(key) for f in fns]
  return [np.asarray(jax.random.key_data(o) if jax.dtypes.issubdtype(o.dtype, jax.dtypes.prng_key)
                     else o) for o in outs]

jax.config.update("jax_threefry_gpu_kernel_lowering", False)
a = draws()
jax.config.update("jax_threefry_gpu_kernel_lowering", True)
jax.clear_caches()
b = draws()
print(jax.devices(), "threefry kernel bit-equal:", all(np.array_equal(x, y) for x, y in zip(a, b)))
PY
}

on_device() {
  timeout -k 10 300 "$PY" benchmarks/on_device.py --reps 1 2>&1 | quiet | tee "$OUT/on_device.txt"
}

ieee_div() {
  # XLA:GPU lowers float32 division to PTX div.full.f32 (up to 2 ulp); this flag asks for IEEE
  # division, which PyTorch and XLA:CPU use (PAMS's `x * qmax / alpha` ties).
  XLA_FLAGS=--xla_backend_extra_options=-nvptx-prec-divf32=2 timeout 120 "$PY" - 2>&1 <<'PY' \
    | quiet | tee "$OUT/ieee_div.txt"
import jax
import jax.numpy as jnp
import numpy as np
from jaxcompress.quant import quantizers as qz
w = np.float32([7.0, 6.5, 0.0, 0.0, -2.5, 1.5])
print(jax.devices(), "weight levels", np.asarray(qz.pams_quantize_weight(jnp.asarray(w), 4)))
div = jax.jit(lambda a, b: a / b)(jnp.float32(45.5), jnp.float32(7.0))
print("45.5/7 =", repr(float(div)), "(IEEE: 6.5)")
PY
}

ops() {
  # On the GPU the conv layer must stay lax.conv_general_dilated; the oneDNN custom call is a
  # CPU path, probed in its own process (a rejected config aborts the process).
  JAX_PLATFORMS=cuda,cpu timeout -s INT -k 10 300 "$PY" -m pytest -q -rfE --tb=short \
    -p no:cacheprovider -p no:randomly -n 8 tests/ops 2>&1 | tee "$OUT/pytest_ops.txt" | tail -n 12
  JAX_PLATFORMS=cuda,cpu timeout 120 "$PY" -c "
import jax, jaxlib
from jaxcompress.ops import onednn_conv as oc
print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, jax.default_backend(), 'available()', oc.available())
" 2>&1 | quiet | tee "$OUT/onednn_available.txt"
  JAX_PLATFORMS=cpu timeout 120 "$PY" -c "
import jaxlib
from jaxcompress.ops import onednn_conv as oc
print('oneDNN probe on the host CPU, jaxlib', jaxlib.__version__, ':', oc._probe())
" 2>&1 | quiet | tail -n 3 | tee "$OUT/onednn_probe.txt"
}

tests() {
  # TESTS_LIMIT seconds at most (default 440); the per-test lines say how far an interrupted run got.
  local ignore=(--ignore=tests/colabs)
  "$PY" -c "import tensorflow_datasets" 2>/dev/null || ignore+=(--ignore=tests/data/pipeline_test.py)
  JAX_PLATFORMS=cuda,cpu timeout -s INT -k 15 "${TESTS_LIMIT:-440}" "$PY" -m pytest -q -rfEs \
    --tb=short -p no:cacheprovider -p no:randomly -n "${TESTS_WORKERS:-12}" -m "not slow" \
    "${ignore[@]}" tests 2>&1 | tee "$OUT/pytest.txt" | tail -n 40
}

PARTS=(env train_step rbnn_digits pams bnas_search search_compile threefry on_device ieee_div ops tests)
if [[ "${1:-}" == list ]]; then
  printf '%s\n' "${PARTS[@]}"
  exit 0
fi
(($#)) && chosen=("$@") || chosen=("${PARTS[@]}")
for part in "${chosen[@]}"; do
  [[ " ${PARTS[*]} " == *" $part "* ]] || { echo "unknown part '$part'; parts: ${PARTS[*]}" >&2; exit 2; }
done
setup || exit 1
status=0
for part in "${chosen[@]}"; do
  stamp "$part start"
  "$part" || status=1
  stamp "$part done"
done
exit $status
