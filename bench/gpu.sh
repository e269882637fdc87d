#!/usr/bin/env bash
# The GPU benchmark in one call on the lent device (JAX with CUDA preinstalled; no network, no
# TensorFlow, Keras, DVC or DVCLive). Carry .whl/ (bash bench/wheels.sh makes it;
# docs/benchmarks.md): the wheels the device lacks are installed into /tmp/site.
#   bash bench/gpu.sh                      # the real pipeline, then the per-component rows
#   bash bench/gpu.sh --smoke              # tiny sizes on any CPU (the tests run it)
#   bash bench/gpu.sh --pipeline-only | --components-only [--smoke]
#   bash bench/gpu.sh --recipe dinov2_head_only   # the pipeline with DINOv2 small, head only
# 1. bench/gpu_pipeline.py: the seed's recipe through the stages' own commands from dvc.yaml,
#    each stage's wall time split into start-up, compilation and work ($OUT/pipeline.*;
#    --recipe dinov2_head_only: $OUT/pipeline-dinov2_head_only.*).
# 2. bench/gpu.py: images/s, % of peak and compile time per backbone, precision and batch,
#    with the stages' callbacks and feeding, and the input overhead ($OUT/gpu.*); it starts no
#    new row after BUDGET_S seconds of the whole call (default 540: one 10-minute call).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-bench}
BUDGET_S=${BUDGET_S:-540}
mkdir -p "$OUT"
smoke=() parts=(pipeline components) recipe=seed
while [ $# -gt 0 ]; do
    case $1 in
        --smoke) smoke=(--smoke) ;;
        --recipe) recipe=${2:?--recipe needs seed or dinov2_head_only}; shift ;;
        --pipeline-only) parts=(pipeline) ;;
        --components-only) parts=(components) ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax
if ! python3 -c "import keras, dvclive, keras_hub" 2>/dev/null; then
    missing=$(python3 - <<'EOF'
import importlib.metadata, pathlib
for wheel in sorted(pathlib.Path(".whl").glob("*.whl")):
    try:
        importlib.metadata.version(wheel.name.split("-")[0])
    except importlib.metadata.PackageNotFoundError:
        print(wheel)
EOF
)
    [ -n "$missing" ] || { echo "no Keras or DVCLive here and none in .whl/" >&2; exit 1; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site $missing
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || true
for part in "${parts[@]}"; do
    if [ "$part" = pipeline ]; then
        log=pipeline; [ "$recipe" = seed ] || log=pipeline-$recipe
        python3 bench/gpu_pipeline.py --out "$OUT" --recipe "$recipe" "${smoke[@]}" 2>&1 |
            tee "$OUT/$log.log"
    else
        python3 bench/gpu.py --out "$OUT/gpu.json" --budget-s $((BUDGET_S - SECONDS)) \
            "${smoke[@]}" 2>&1 | tee "$OUT/gpu.log"
    fi
done
