# Sourced by the gpu_suite_*.sh scripts on a lent GPU machine: the wheels that travel in .whl/
# (packages its image lacks) installed into /tmp/site, unbuffered Python, no GPU preallocation.
# $OUT is where results go (the lending tool sets it; a local default otherwise).
export OUT=${OUT:-/tmp/${1:-gpu_suite}_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
