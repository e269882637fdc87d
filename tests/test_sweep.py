"""Sweeps through the real DVC queue: every backbone; the seed's backbone x optimizer choice."""

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
    status = _wait(repo)
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


def test_seed_style_sweep_computes_features_once_per_backbone(pipeline_copy):
    """Backbone x optimizer for the head, as the seed explored it: the queue runs features
    once per backbone; every other run of that backbone restores them from the run-cache."""
    repo = pipeline_copy
    repo.dvc(
        "exp",
        "run",
        "--queue",
        "-S",
        "model.backbone=mobilenet_v2,efficientnet_b0",
        "-S",
        "train_head.optimizer=sgd,rmsprop",
        "-S",
        "train_head.epochs=3",
        "train_head",
    )
    repo.dvc("queue", "start", "-j", "1")
    status = _wait(repo)
    assert status.count("Success") == 4, status
    names = [line.split()[0] for line in status.splitlines() if "Success" in line]
    logs = [repo.dvc("queue", "logs", name).stdout for name in names]
    ran_features = sum("Running stage 'features'" in log for log in logs)
    restored = sum("Stage 'features' is cached - skipping run" in log for log in logs)
    assert (ran_features, restored) == (2, 2), logs

    rows = json.loads(repo.dvc("exp", "show", "--json").stdout)
    runs = set()
    for baseline in rows:
        for experiment in baseline.get("experiments") or []:
            for revision in experiment.get("revs", []):
                data = revision.get("data", {})
                params = data.get("params", {}).get("params.yaml", {}).get("data", {})
                metrics = data.get("metrics", {}).get("dvclive/train_head/metrics.json", {})
                accuracy = metrics.get("data", {}).get("val_accuracy")
                runs.add((params["model"]["backbone"], params["train_head"]["optimizer"], accuracy))
    assert {(b, o) for b, o, _ in runs} == {
        (b, o) for b in ("mobilenet_v2", "efficientnet_b0") for o in ("sgd", "rmsprop")
    }
    assert all(isinstance(accuracy, float) for _, _, accuracy in runs), runs


def _wait(repo) -> str:
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = repo.dvc("queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        time.sleep(3)
    return status


def _first_failed(status: str) -> str:
    for line in status.splitlines():
        if "Failed" in line:
            return line.split()[0]
    return ""
