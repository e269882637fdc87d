"""One fine-tuning epoch of the whole base against the top block(s) trained from the boundary
cache, on this machine, through the stages' own commands.

    python bench/finetune_epoch.py [--backbone xception] [--image-size 112] [--blocks 1]
        [--train 256] [--val 64] [--epochs 2] [--backend tensorflow] [--out DIR]

A generated project (synthetic CIFAR-format images, random weights, float32): prepare,
features and train_head run once; then, on the same images, the fine_tune stage's command from
dvc.yaml (its loop, callbacks and feeding) with fine_tune.unfreeze all, and the boundary and
fine_tune stages' commands with fine_tune.unfreeze N (no augmentation: from the cache). The
figure per run is the fastest epoch (validation included; the first compiles) from the
stage's own metrics; the cache's one pass is the boundary stage's wall time. The CPU (lscpu
model name, the flags that decide the speed) is printed beside the figures, and features'
expected time (from the rate it measured) beside what was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench")]
from gpu_pipeline import TARBALL, make_project, write_cifar10_tarball  # noqa: E402
from multi_host import command, set_params  # noqa: E402

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="xception")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--blocks", type=int, default=1, help="fine_tune.unfreeze of the cache run")
    parser.add_argument("--train", type=int, default=256)
    parser.add_argument("--val", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2, help="the fastest one counts")
    parser.add_argument("--batch", type=int, default=32, help="fine_tune.batch_size")
    parser.add_argument("--backend", default="tensorflow")
    parser.add_argument("--out", type=Path, default=Path("/tmp/finetune-epoch-bench"))
    return parser.parse_args()


def cpu() -> str:
    """lscpu's model name, the cores this process may use, and which speed flags it has."""
    fields = {}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in text.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    flags = set(fields.get("Flags", "").split())
    has = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in FLAGS)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{fields.get('Model name', 'unknown CPU')}; {cores} cores; {has}"


def stage(folder: Path, name: str) -> tuple[float, str]:
    """Run a stage's own command; its wall seconds and its output."""
    started = time.monotonic()
    result = subprocess.run(
        command(folder, name),
        cwd=folder,
        env={**os.environ, "CI": "true"},
        capture_output=True,
        text=True,
    )
    if result.returncode:
        sys.exit(f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.monotonic() - started, result.stdout


def main() -> None:
    args = parse_args()
    folder = args.out / "project"
    make_project(folder, smoke=True)
    per_class = -(-(args.train + args.val + 40) // 10)
    write_cifar10_tarball(folder / TARBALL, n_per_class=per_class)
    set_params(
        folder,
        {
            "data": {"train_size": args.train, "val_size": args.val, "test_size": 40},
            "model": {"backbone": args.backbone, "image_size": args.image_size},
            "features": {"batch_size": 32},
            "fine_tune": {"epochs": args.epochs, "batch_size": args.batch, "augment": False},
            "compute": {"backend": args.backend, "precision": "float32"},
        },
    )
    print(f"CPU: {cpu()}", flush=True)
    print(
        f"{args.backbone} at {args.image_size} px, random weights, float32, {args.backend}; "
        f"{args.train} train + {args.val} val images, batch {args.batch}, {args.epochs} epochs "
        "(the fastest counts)",
        flush=True,
    )
    expected = ""
    for name in ("prepare", "features", "train_head"):
        seconds, output = stage(folder, name)
        expected = expected or next(
            (line for line in output.splitlines() if "expected here" in line), ""
        )
        print(f"{name}: {seconds:.1f} s", flush=True)
    rows = {}
    for label, unfreeze in (
        ("whole base", "all"),
        (f"top {args.blocks} from the cache", args.blocks),
    ):
        set_params(folder, {"fine_tune": {"unfreeze": unfreeze}})
        cache_s, _ = stage(folder, "boundary")
        wall_s, output = stage(folder, "fine_tune")
        metrics = json.loads((folder / "dvclive/fine_tune/metrics.json").read_text())
        plan = json.loads((folder / "data/boundary/cache.json").read_text())
        rows[label] = {
            "epoch_s": args.train / metrics["images_per_s"],
            "images_per_s": metrics["images_per_s"],
            "cache_s": cache_s if plan["cached"] else 0.0,
            "stage_s": wall_s,
            "path": next(line for line in output.splitlines() if line.startswith("fine_tune: t")),
        }
    print()
    columns = ["fine_tune.unfreeze", "fastest epoch (s)", "train images/s", "cache, once (s)"]
    print("| " + " | ".join([*columns, "stage wall (s)"]) + " |")
    print("|---|---|---|---|---|")
    for label, row in rows.items():
        print(
            f"| {label} | {row['epoch_s']:.1f} | {row['images_per_s']:.1f} | "
            f"{row['cache_s']:.1f} | {row['stage_s']:.1f} |"
        )
    whole, top = (row["epoch_s"] for row in rows.values())
    print(f"\nepoch speed-up, top from the cache against the whole base: {whole / top:.1f}x")
    for row in rows.values():
        print(row["path"])
    if expected:
        print(expected)


if __name__ == "__main__":
    main()
