#!/usr/bin/env bash
# The GPU benchmark in one call on the lent device (JAX with CUDA preinstalled, no network,
# no TensorFlow). Carry .whl/ with keras, optree and namex for the device's Python
# (docs/benchmarks.md). Output: $OUT/gpu.log and $OUT/gpu.json.
#   bash bench/gpu.sh            # the real-size benchmark (about 6 minutes on an H100)
#   bash bench/gpu.sh --smoke    # a tiny check, works on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-bench}
mkdir -p "$OUT"
if ! python3 -c "import keras" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || true
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax
python3 bench/gpu.py --out "$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/gpu.log"
