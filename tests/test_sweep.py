"""A backbone sweep through the real DVC queue: one experiment per registered backbone."""

import json
import time

from transfer_pipeline.backbones import BACKBONES


def test_queued_sweep_over_every_backbone_gives_one_row_each(pipeline_copy):
    repo = pipeline_copy
    names = ",".join(BACKBONES)
    # Up to train_head: every backbone-specific code path (build, preprocessing, features,
    # head on its feature width) runs for each; fine_tune is backbone-agnostic and is
    # covered by the main run. 75 px is the smallest size all registered backbones accept.
    repo.dvc(
        "exp",
        "run",
        "--queue",
        "-S",
        f"model.backbone={names}",
        "-S",
        "model.image_size=75",
        "-S",
        "train_head.epochs=1",
        "train_head",
    )
    repo.dvc("queue", "start", "-j", "2")
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = repo.dvc("queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            break
        time.sleep(3)
    repo.dvc("queue", "stop", check=False)
    assert "Failed" not in status, repo.dvc(
        "queue", "logs", _first_failed(status), check=False
    ).stdout
    rows = json.loads(repo.dvc("exp", "show", "--json").stdout)
    swept = {}
    for baseline in rows:
        for experiment in baseline.get("experiments") or []:
            for revision in experiment.get("revs", []):
                data = revision.get("data", {})
                params = data.get("params", {}).get("params.yaml", {}).get("data", {})
                metrics = data.get("metrics", {}).get("metrics/features.json", {}).get("data", {})
                swept[params.get("model", {}).get("backbone")] = metrics.get("feature_width")
    assert swept == {name: b.feature_width for name, b in BACKBONES.items()}, swept


def _first_failed(status: str) -> str:
    for line in status.splitlines():
        if "Failed" in line:
            return line.split()[0]
    return ""
