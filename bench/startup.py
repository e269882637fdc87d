"""Stage start-up: the CPU seconds a stage process spends before its work, importing Keras
and the pipeline's model modules after ``backend.select()`` as every model stage does,
against the same imports with the optional integrations that ``select()`` leaves out
(scikit-learn, and jax on TensorFlow) imported as Keras would import them.

    python bench/startup.py [--runs 5] [--backend tensorflow|jax]

Each run is a fresh interpreter; the two kinds alternate, so a busy spell of the machine
falls on both. CPU time (user + system, from the operating system), not wall time: it is what
two pytest workers on two cores compete for.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What a model stage imports before its work (stages/fine_tune.py's set).
STAGE = """
import sys
from transfer_pipeline.running.backend import select
select(sys.argv[1], needs=() if sys.argv[2] == "select" else ("sklearn", "jax"))
import keras
from transfer_pipeline.running import callbacks, compute, live, resume
from transfer_pipeline.data import feeding
from transfer_pipeline.models import model, optimizers, saving
"""


def cpu_seconds(backend: str, kind: str) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [sys.executable, "-c", STAGE, backend, kind],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=True,
        capture_output=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backend", choices=["tensorflow", "jax"], default="tensorflow")
    args = parser.parse_args()
    kinds = {"select": "as the stages start (select)", "all": "with the optional imports"}
    seconds = {kind: [] for kind in kinds}
    for _ in range(args.runs):
        for kind in kinds:
            seconds[kind].append(cpu_seconds(args.backend, kind))
    print(f"stage start-up on {args.backend}, {os.cpu_count()} cores, {cpu_model()}")
    print(f"{'imports':<32} {'CPU s per process (mean)':>25} {'min':>6} {'max':>6}")
    for kind, label in kinds.items():
        values = seconds[kind]
        mean = sum(values) / len(values)
        print(f"{label:<32} {mean:>25.2f} {min(values):>6.2f} {max(values):>6.2f}")
    ratio = sum(seconds["select"]) / sum(seconds["all"])
    print(f"ratio (select / with the optional imports): {ratio:.2f} over {args.runs} runs each")


if __name__ == "__main__":
    main()
