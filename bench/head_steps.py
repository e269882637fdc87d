"""train_head's own stage on cached features at the seed's sizes, timed per epoch for several
train_head.steps_per_execution values and both backends.

    python bench/head_steps.py [--values 1 32 256] [--backends tensorflow jax] [--epochs 3]

A project folder holds this checkout's stages, package, dvc.yaml and params.yaml, CIFAR-sized
stored splits (35,000 / 15,000 / 10,000, random pixels: train_head never reads them) and
random 2,048-wide features (Xception's width); the seed's head, Adam, batch 32. Each run is
the stage's command from dvc.yaml (its feeding, callbacks and DVCLive logging included), by
hand, not through DVC. Per run: the stage's own `seconds` (fit, from its DVCLive metrics, the
first epoch's compilation included), each epoch's seconds from its epoch line (validation
included), and the whole process's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"train": 35000, "val": 15000, "test": 10000}
WIDTH, CLASSES = 2048, 10
EPOCH_LINE = re.compile(r"train_head epoch \d+/\d+ .*\((\d+) img/s, validation included\)")


def make_project(folder: Path) -> None:
    for name in ("stages", "transfer_pipeline"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(ROOT / name, folder / name)
    prepared, features = folder / "data/prepared", folder / "data/features"
    prepared.mkdir(parents=True)
    features.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in SIZES.items():
        np.save(prepared / f"{split}_x.npy", np.zeros((n, 32, 32, 3), np.uint8))
        np.save(prepared / f"{split}_y.npy", rng.integers(0, CLASSES, n).astype(np.int64))
        np.save(features / f"{split}.npy", rng.standard_normal((n, WIDTH)).astype(np.float32))
    names = [f"class_{i}" for i in range(CLASSES)]
    (prepared / "classes.json").write_text(json.dumps(names))


def command(folder: Path) -> list[str]:
    stage = yaml.safe_load((folder / "dvc.yaml").read_text())["stages"]["train_head"]
    words = stage["cmd"].replace("${compute.launcher}", "").split()
    return [sys.executable if w == "python" else w for w in words]


def run(folder: Path, backend: str, steps: int, epochs: int) -> dict:
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["compute"]["backend"] = backend
    params["train_head"] |= {"epochs": epochs, "steps_per_execution": steps}
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for output in ("models/head.keras", "dvclive/train_head", "compute/train_head.json"):
        path = folder / output
        if path.is_dir():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
    env = {**os.environ, "CI": "true", "KERAS_BACKEND": ""}
    started = time.monotonic()
    result = subprocess.run(command(folder), cwd=folder, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if result.returncode:
        raise SystemExit(result.stderr[-2000:])
    metrics = json.loads((folder / "dvclive/train_head/metrics.json").read_text())
    rates = [int(m.group(1)) for m in EPOCH_LINE.finditer(result.stdout + result.stderr)]
    epochs_s = [SIZES["train"] / rate for rate in rates]  # validation included
    return {"fit_s": metrics["seconds"], "epoch_s": epochs_s, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    cpu = next(
        line.partition(":")[2].strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("model name")
    )
    print(f"CPU: {cpu}, {os.cpu_count()} cores; {SIZES['train']:,} features of {WIDTH}, batch 32")
    print("\n| backend | steps_per_execution | fit s | epochs s | stage wall s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        make_project(folder)
        for backend in args.backends:
            for steps in args.values:
                r = run(folder, backend, steps, args.epochs)
                epochs = ", ".join(f"{s:.1f}" for s in r["epoch_s"]) or "?"
                print(
                    f"| {backend} | {steps} | {r['fit_s']:.1f} | {epochs} | {r['wall_s']:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
