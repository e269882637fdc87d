"""One fine-tuning epoch as 1 process x 2 devices against 2 processes x 1 device, on this CPU.

    python bench/multi_host.py [--out DIR]

Both runs are the fine_tune stage's own command from dvc.yaml (its loop, callbacks and
feeding) on the same generated project and the same global batch, on the jax backend:
  one process   compute.distribute mirrored, XLA_FLAGS forcing 2 CPU devices
  two processes compute.distribute multi_host, started by tests/launch_local.sh (127.0.0.1,
                gloo collectives), 1 CPU device each
prepare, features and train_head run once before, as one process. The figure per run is the
fastest epoch (validation included, compilation excluded: the first epoch compiles) from the
stage's own metrics; the ratio shows what the multi-process runtime costs on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench")]
from gpu_pipeline import TARBALL, make_project, merged, write_cifar10_tarball  # noqa: E402

SIZES = {  # a few minutes on a 2-core CPU; every stage runs its real code
    "data": {"train_size": 640, "val_size": 64, "test_size": 64},
    "model": {"backbone": "mobilenet_v2", "image_size": 32},
    "features": {"batch_size": 64},
    "train_head": {"epochs": 1, "batch_size": 32},
    "fine_tune": {"epochs": 3, "batch_size": 32, "unfreeze": "all"},
}
RUNS = {
    "1 process x 2 devices": ("mirrored", "", 2),
    "2 processes x 1 device": ("multi_host", f"bash {ROOT}/tests/launch_local.sh 2", 1),
}


def command(folder: Path, stage: str, launcher: str = "") -> list[str]:
    cmd = yaml.safe_load((folder / "dvc.yaml").read_text())["stages"][stage]["cmd"]
    _python, *arguments = shlex.split(cmd.replace("${compute.launcher}", ""))
    return [*shlex.split(launcher), sys.executable, *arguments]


def set_params(folder: Path, overrides: dict) -> None:
    params = yaml.safe_load((folder / "params.yaml").read_text())
    (folder / "params.yaml").write_text(yaml.safe_dump(merged(params, overrides), sort_keys=False))


def run(folder: Path, argv: list[str], devices: int) -> None:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    subprocess.run(argv, cwd=folder, env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/multi-host-bench"))
    folder = parser.parse_args().out / "project"
    make_project(folder, smoke=True)
    write_cifar10_tarball(folder / TARBALL, n_per_class=80)  # 800 images: the sizes below
    set_params(folder, SIZES)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(folder / ".jax-cache")
    for stage in ("prepare", "features", "train_head"):
        run(folder, command(folder, stage), devices=1)
    rows = {}
    for name, (distribute, launcher, devices) in RUNS.items():
        set_params(folder, {"compute": {"distribute": distribute, "launcher": launcher}})
        print(f"--- fine_tune, {name}", flush=True)
        started = time.monotonic()
        run(folder, command(folder, "fine_tune", launcher), devices)
        metrics = json.loads((folder / "dvclive/fine_tune/metrics.json").read_text())
        rows[name] = {
            "wall_s": round(time.monotonic() - started, 1),
            "images_per_s": metrics["images_per_s"],
            "epoch_s": round(SIZES["data"]["train_size"] / metrics["images_per_s"], 2),
            "val_accuracy": metrics["val_accuracy"],
            "compute": metrics["compute"],
        }
    print(f"\nfine_tune, {SIZES['data']['train_size']} images per epoch, batch 32 (global):")
    for name, row in rows.items():
        print(
            f"{name:24} fastest epoch {row['epoch_s']:6.2f} s  {row['images_per_s']:7.1f} img/s"
            f"  stage wall {row['wall_s']:6.1f} s  val_accuracy {row['val_accuracy']}"
        )
    one, two = (row["images_per_s"] for row in rows.values())
    print(f"2 processes / 1 process, images/s: {two / one:.2f}")


if __name__ == "__main__":
    main()
