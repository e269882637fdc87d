"""The real pipeline, timed stage by stage, without DVC: run by bench/gpu.sh on the device.

    python bench/gpu_pipeline.py [--recipe seed|dinov2_head_only] [--smoke] [--out DIR]

Writes a CIFAR-10-format tarball (60,000 synthetic images; --smoke: 240) into a fresh project
folder holding this checkout's stages, package, dvc.yaml and params.yaml, sets a recipe with
random weights and compute.backend jax (--smoke: tiny sizes, any CPU):

  seed              Xception 224, 15 + 15 epochs, batch 32, 35,000/15,000/10,000 (the default)
  dinov2_head_only  DINOv2 small (KerasHub) 224, 15 head epochs, fine_tune.epochs 0: the
                    recommended recipe of docs/backbones.md

and runs each stage's own `cmd` from
dvc.yaml in the pipeline's order, each under bench/stage_clock.py, with a cold JAX compilation
cache shared by the stage processes. The export stages convert on TensorFlow, which the device
does not have, and the report follows them: both are left out. Per stage:

  start-up  launch to the first compiled step: interpreter, imports, data, building or loading
            the models
  compile   tracing, lowering and XLA compilation of every jitted function from then on
  work      the rest: the steps, callbacks, writing the outputs
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from synthetic import write_cifar10_tarball  # noqa: E402

from transfer_pipeline.plumbing.dvcfile import written_paths  # noqa: E402

LEFT_OUT = {
    "export": "converts on TensorFlow (not on the device)",
    "report": "follows the export stages",
}
TARBALL = "data/raw/cifar-10-python.tar.gz"
# The seed's recipe as shipped, with what the device can run: no weights download, JAX.
RECIPE = {
    "data": {"source": TARBALL, "md5": None},
    "model": {"weights": None},
    "compute": {"backend": "jax"},
}
SMOKE = {  # seconds on a CPU; every stage still runs its real code
    "data": {"train_size": 120, "val_size": 40, "test_size": 40},
    "model": {"backbone": "mobilenet_v2", "image_size": 32},
    "features": {"batch_size": 32},
    "train_head": {"epochs": 2, "batch_size": 8},
    "fine_tune": {"epochs": 1, "batch_size": 16, "unfreeze": 2},  # blocks, from the cache
    # auto on a CPU times both precisions first (precision.py); on the device it is the GPU
    # rule, which needs no timing: the smoke leaves the CPU timing out.
    "compute": {"precision": "float32"},
}
# Each recipe's changes to the seed's, at full size and in the smoke.
RECIPES = {
    "seed": ({}, {}),
    "dinov2_head_only": (
        {"model": {"backbone": "dinov2_small", "image_size": 224}, "fine_tune": {"epochs": 0}},
        {"model": {"backbone": "dinov2_small", "image_size": 28}, "fine_tune": {"epochs": 0}},
    ),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=list(RECIPES), default="seed")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a CPU check")
    parser.add_argument("--out", type=Path, default=Path("/tmp/gpu-bench"))
    return parser.parse_args()


def merged(tree: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        tree[key] = merged(tree.get(key, {}), value) if isinstance(value, dict) else value
    return tree


def make_project(folder: Path, smoke: bool, recipe: str = "seed") -> float:
    """The project folder; returns the seconds spent writing the tarball."""
    shutil.rmtree(folder, ignore_errors=True)
    for name in ("stages", "transfer_pipeline"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "dvc.yaml", folder / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    merged(params, RECIPE)
    if smoke:
        merged(params, SMOKE)
    merged(params, RECIPES[recipe][smoke])
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    started = time.perf_counter()
    write_cifar10_tarball(folder / TARBALL, n_per_class=24 if smoke else 6000)
    return time.perf_counter() - started


def in_dependency_order(stages: dict) -> list[str]:
    """The stages DVC would run, in the order of their dependencies (dvc.yaml lists evaluate
    first, for `dvc exp show`'s columns): a stage comes after every stage whose outputs it
    reads."""

    def reads(later: str, earlier: str) -> bool:
        return any(
            dep == out or dep.startswith(f"{out}/") or out.startswith(f"{dep}/")
            for dep in stages[later].get("deps") or []
            for out in written_paths(stages[earlier])
        )

    remaining, order = [name for name in stages if name not in LEFT_OUT], []
    while remaining:
        ready = next(n for n in remaining if not any(reads(n, m) for m in remaining if m != n))
        order.append(ready)
        remaining.remove(ready)
    return order


def stage_commands(folder: Path) -> dict[str, list[str]]:
    """Each stage's `cmd` from dvc.yaml, in order, run by this interpreter under the clock."""
    stages = yaml.safe_load((folder / "dvc.yaml").read_text())["stages"]
    commands = {}
    for name in in_dependency_order(stages):
        # One process per stage here: the launcher prefix (empty in params.yaml) is left out.
        cmd = stages[name]["cmd"].replace("${compute.launcher}", "")
        python, *arguments = shlex.split(cmd)
        assert python == "python" and arguments[0] == "-m", stages[name]["cmd"]
        commands[name] = [sys.executable, str(ROOT / "bench/stage_clock.py"), *arguments]
    return commands


def run_stage(folder: Path, command: list[str]) -> dict:
    clock = folder / ".stage-clock.json"
    launched = time.time()
    env = {**os.environ, "STAGE_LAUNCHED": repr(launched), "STAGE_CLOCK": str(clock)}
    subprocess.run(command, cwd=folder, env=env, check=True)
    row = {"wall_s": time.time() - launched, **json.loads(clock.read_text())}
    row["work_s"] = row["wall_s"] - (row["startup_s"] or 0) - (row["compile_s"] or 0)
    return row


TIMES = ("wall_s", "startup_s", "compile_s", "work_s")


def table(rows: dict[str, dict]) -> str:
    def seconds(value):
        return f"{value:10.1f}" if value is not None else f"{'-':>10}"

    lines = [f"{'stage':11} {'wall s':>10} {'start-up s':>10} {'compile s':>10} {'work s':>10}"]
    for name, row in rows.items():
        steps = ", ".join(f"{step} x{count}" for step, count in row["compiled_steps"].items())
        lines.append(
            f"{name:11} {seconds(row['wall_s'])} {seconds(row['startup_s'])} "
            f"{seconds(row['compile_s'])} {seconds(row['work_s'])}  {steps}"
        )
    total = {key: sum(row[key] or 0 for row in rows.values()) for key in TIMES}
    lines.append(
        f"{'total':11} {seconds(total['wall_s'])} {seconds(total['startup_s'])} "
        f"{seconds(total['compile_s'])} {seconds(total['work_s'])}"
    )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    folder = args.out / "project"
    tarball_s = make_project(folder, args.smoke, args.recipe)
    # Cold, and shared by the stage processes as in a real run.
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(folder / ".jax-cache")
    size = "smoke" if args.smoke else "60,000 images"
    print(f"recipe {args.recipe}; tarball ({size}): {tarball_s:.1f} s", flush=True)
    rows = {}
    for name, command in stage_commands(folder).items():
        print(f"--- {name}: python {shlex.join(command[2:])}", flush=True)
        rows[name] = run_stage(folder, command)
    for name, reason in LEFT_OUT.items():
        print(f"left out: {name} ({reason})")
    print("\npipeline, stage by stage:\n" + table(rows), flush=True)
    name = "pipeline.json" if args.recipe == "seed" else f"pipeline-{args.recipe}.json"
    (args.out / name).write_text(json.dumps({"tarball_s": tarball_s, **rows}, indent=1))


if __name__ == "__main__":
    main()
