"""Run a stage module as `python -m` does and say where its wall time went (gpu_pipeline.py).

    STAGE_LAUNCHED=<time.time() at launch> STAGE_CLOCK=<file.json> \
        python bench/stage_clock.py -m stages.features <the stage's arguments>

Listens to JAX's compile events (jax.monitoring) once the stage imports JAX: the first trace
of a Keras step (train_step, test_step, predict_step) ends the start-up; tracing, lowering and
XLA compilation (or loading from JAX's persistent cache) of every function from then on count
as compilation. Writes {"startup_s", "compile_s", "compiled_steps"} to STAGE_CLOCK when the
stage ends; a stage that never imports JAX has no start-up or compilation figure.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import runpy
import sys
import time
from collections import Counter

LAUNCHED = float(os.environ["STAGE_LAUNCHED"])
TRACE, LOWER, COMPILE = (
    f"/jax/core/compile/{name}_duration"
    for name in ("jaxpr_trace", "jaxpr_to_mlir_module", "backend_compile")
)
clock = {"startup_s": None, "compile_s": None, "compiled_steps": Counter()}


def on_event(event: str, seconds: float, **metadata) -> None:
    name = str(metadata.get("fun_name", ""))
    if event not in (TRACE, LOWER, COMPILE):
        return
    if clock["startup_s"] is None:
        if event != TRACE or not name.endswith("_step"):
            return  # before the first step: building the model, part of the start-up
        clock["startup_s"], clock["compile_s"] = time.time() - seconds - LAUNCHED, 0.0
    clock["compile_s"] += seconds
    if event == COMPILE and name.endswith("_step)"):
        clock["compiled_steps"][name] += 1


class _ListenWhenJaxLoads(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "jax":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            module.monitoring.register_event_duration_secs_listener(on_event)

        spec.loader.exec_module = exec_module
        return spec


def main() -> None:
    if sys.argv[1] != "-m":
        raise SystemExit("usage: stage_clock.py -m <module> [arguments]")
    module, sys.argv = sys.argv[2], [sys.argv[2], *sys.argv[3:]]
    sys.path.insert(0, os.getcwd())  # as `python -m` does
    sys.meta_path.insert(0, _ListenWhenJaxLoads())
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        with open(os.environ["STAGE_CLOCK"], "w") as out:
            json.dump(clock, out)


if __name__ == "__main__":
    main()
