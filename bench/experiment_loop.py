"""The experiment loop, timed stage by stage: `dvc exp run -S lr=1e-4` on top of a finished
head-only pipeline, for one or more revisions of this project (before and after a change).

    python bench/experiment_loop.py [--revisions f259d2e HEAD] [--train 2000 --val 250
        --test 500] [--backbone dinov2_small] [--out DIR]

For each revision: its files (`git archive`) in a fresh git + DVC project, a CIFAR-10-format
tarball of synthetic images (tests/synthetic.py, the tests' generator), the recipe of
docs/backbones.md (the backbone with random weights, 224 px, fine_tune.epochs 0, the default
params otherwise: compute.precision auto, export.formats saved_model and onnx), one
`dvc repro` (untimed), then `dvc exp run -S lr=1e-4` and, for a sweep's point,
`dvc exp run -S lr=3e-4 evaluate` (no exports). Each stage's wall time is read off DVC's own
output: from its "Running stage" line to the next stage's (or the end), start-up included.
Prints a Markdown table per revision and the stages after train_head as a multiple of it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from synthetic import write_cifar10_tarball  # noqa: E402

TARBALL = "data/raw/cifar-10-python.tar.gz"
RUNNING = re.compile(r"^Running stage '([^']+)'")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revisions", nargs="+", default=["HEAD"])
    parser.add_argument("--backbone", default="dinov2_small")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--val", type=int, default=250)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--out", type=Path, default=None, help="keep the projects here")
    return parser.parse_args()


def run(folder: Path, *command: str) -> None:
    subprocess.run(command, cwd=folder, check=True, capture_output=True, text=True)


def make_project(folder: Path, revision: str, args) -> None:
    folder.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", revision], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    run(folder, "git", "init", "-q")
    run(folder, "git", "config", "user.email", "bench@example.com")
    run(folder, "git", "config", "user.name", "bench")
    per_class = -(-(args.train + args.val + args.test) // 10)
    tarball = write_cifar10_tarball(folder / TARBALL, n_per_class=per_class)
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["data"] |= {
        "source": TARBALL,
        "md5": hashlib.md5(tarball.read_bytes()).hexdigest(),
        "train_size": args.train,
        "val_size": args.val,
        "test_size": args.test,
    }
    params["model"] |= {"backbone": args.backbone, "weights": None, "image_size": args.image_size}
    params["fine_tune"]["epochs"] = 0
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(folder, "add", "-q", TARBALL)
    run(folder, "git", "add", "-A")
    run(folder, "git", "commit", "-qm", "head-only baseline params")


def dvc(folder: Path, *args: str) -> dict[str, float]:
    """Run `dvc <args>`; the wall seconds of each stage it ran, in order."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "CI": "true"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", *args],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seconds, current, since = {}, None, time.monotonic()
    for line in process.stdout:
        match = RUNNING.match(line)
        if match:
            now = time.monotonic()
            if current:
                seconds[current] = now - since
            current, since = match.group(1), now
    if process.wait() != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed in {folder}")
    if current:
        seconds[current] = time.monotonic() - since
    return seconds


def table(title: str, seconds: dict[str, float]) -> str:
    lines = [f"{title}", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {value:.0f} |" for stage, value in seconds.items()]
    head = seconds.get("train_head")
    after = sum(v for stage, v in seconds.items() if stage not in ("train_head",))
    if head:
        lines.append(f"| after train_head | {after:.0f} ({after / head:.1f}x train_head) |")
    return "\n".join(lines)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    args = parse_args()
    base = args.out or Path(tempfile.mkdtemp(prefix="experiment-loop-"))
    print(
        f"CPU: {cpu_name()}, {os.cpu_count()} cores; {args.backbone} {args.image_size} px, "
        f"random weights, head only; {args.train}/{args.val}/{args.test} images",
        flush=True,
    )
    results = {}
    for revision in args.revisions:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", revision],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        folder = base / commit
        make_project(folder, revision, args)
        started = time.monotonic()
        dvc(folder, "repro")
        baseline = time.monotonic() - started
        loop = dvc(folder, "exp", "run", "-S", "lr=1e-4")
        sweep_point = dvc(folder, "exp", "run", "-S", "lr=3e-4", "evaluate")
        results[commit] = {"baseline_s": baseline, "lr": loop, "sweep_point": sweep_point}
        print(f"\n## {revision} ({commit}); baseline dvc repro {baseline:.0f} s\n", flush=True)
        print(table("`dvc exp run -S lr=1e-4`", loop), flush=True)
        print("\n" + table("`dvc exp run -S lr=3e-4 evaluate` (a sweep point)", sweep_point))
    (base / "experiment_loop.json").write_text(json.dumps(results, indent=1))
    print(f"\n(projects and experiment_loop.json in {base})")


if __name__ == "__main__":
    main()
