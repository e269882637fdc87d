"""Sweeps through the real DVC queue: every backbone; the seed's backbone x optimizer choice.

Both sweeps share one copy and its run-cache, and stop at train_head: every backbone-specific
code path (build, preprocessing, features, head on its feature width) runs for each backbone;
fine_tune is backbone-agnostic and is covered by the main run. 75 px is the smallest size all
registered backbones accept; the split is shrunk to 20/10/10 images (the smallest sizes with
every class in every split) because no accuracy is asserted here, only what runs and its rows.
"""

import json

import pytest
from conftest import copy_of

from transfer_pipeline.backbones import BACKBONES

SMALL = [
    "-S",
    "model.image_size=75",
    "-S",
    "data.train_size=20",
    "-S",
    "data.val_size=10",
    "-S",
    "data.test_size=10",
    "-S",
    "train_head.epochs=1",
]
SEED_BACKBONES = ("mobilenet_v2", "efficientnet_b0")
SEED_OPTIMIZERS = ("sgd", "rmsprop")  # the first is the every-backbone sweep's


def _run_queue(repo) -> dict[str, str]:
    """Run every queued experiment, two at a time; each task's log by experiment name."""
    before = _task_names(repo)
    try:
        repo.dvc("exp", "run", "--run-all", "--jobs", "2")
    finally:
        repo.dvc("queue", "stop", check=False)  # no idle worker left behind
    status = repo.dvc("queue", "status").stdout
    assert "Failed" not in status, status
    return {name: repo.dvc("queue", "logs", name).stdout for name in _task_names(repo) - before}


def _task_names(repo) -> set[str]:
    rows = [line.split() for line in repo.dvc("queue", "status").stdout.splitlines()]
    return {row[1] for row in rows if row and row[-1] in ("Queued", "Running", "Success", "Failed")}


@pytest.fixture(scope="module")
def sweeps(pipeline, tmp_path_factory):
    """First every backbone with the head's first optimizer, then the seed's backbones with the
    second on the same copy (by then their features are in the run-cache): together the seed's
    backbone x optimizer grid."""
    repo = copy_of(pipeline, tmp_path_factory.mktemp("sweeps") / "repo")
    first, second = SEED_OPTIMIZERS
    repo.dvc(
        "exp",
        "run",
        "--queue",
        "-S",
        f"model.backbone={','.join(BACKBONES)}",
        "-S",
        f"train_head.optimizer={first}",
        *SMALL,
        "train_head",
    )
    repo.every_backbone = _run_queue(repo)
    repo.dvc(
        "exp",
        "run",
        "--queue",
        "-S",
        f"model.backbone={','.join(SEED_BACKBONES)}",
        "-S",
        f"train_head.optimizer={second}",
        *SMALL,
        "train_head",
    )
    repo.second_optimizer = _run_queue(repo)
    repo.rows = json.loads(repo.dvc("exp", "show", "--json").stdout)
    return repo


def _revisions(rows):
    for baseline in rows:
        for experiment in baseline.get("experiments") or []:
            yield from experiment.get("revs", [])


def test_queued_sweep_over_every_backbone_gives_one_row_each(sweeps):
    assert len(sweeps.every_backbone) == len(BACKBONES)
    swept = {}
    for revision in _revisions(sweeps.rows):
        if revision["name"] not in sweeps.every_backbone:
            continue
        data = revision.get("data", {})
        params = data.get("params", {}).get("params.yaml", {}).get("data", {})
        metrics = data.get("metrics", {}).get("metrics/features.json", {}).get("data", {})
        swept[params.get("model", {}).get("backbone")] = metrics.get("feature_width")
    assert swept == {name: b.feature_width for name, b in BACKBONES.items()}, swept


def test_seed_style_sweep_computes_features_once_per_backbone(sweeps):
    """Backbone x optimizer for the head, as the seed explored it: the queue computes features
    once per backbone; every other run of that backbone restores them from the run-cache."""
    assert len(sweeps.second_optimizer) == len(SEED_BACKBONES)
    logs = {**sweeps.every_backbone, **sweeps.second_optimizer}
    runs, features = set(), {name: [0, 0] for name in SEED_BACKBONES}  # [ran, restored]
    for revision in _revisions(sweeps.rows):
        data = revision.get("data", {})
        params = data.get("params", {}).get("params.yaml", {}).get("data", {})
        backbone = params.get("model", {}).get("backbone")
        if revision["name"] not in logs or backbone not in SEED_BACKBONES:
            continue
        log = logs[revision["name"]]
        features[backbone][0] += "Running stage 'features'" in log
        features[backbone][1] += "Stage 'features' is cached - skipping run" in log
        metrics = data.get("metrics", {}).get("dvclive/train_head/metrics.json", {})
        accuracy = metrics.get("data", {}).get("val_accuracy")
        runs.add((backbone, params["train_head"]["optimizer"], accuracy))
    assert features == {name: [1, 1] for name in SEED_BACKBONES}, features
    assert {(b, o) for b, o, _ in runs} == {(b, o) for b in SEED_BACKBONES for o in SEED_OPTIMIZERS}
    assert all(isinstance(accuracy, float) for _, _, accuracy in runs), runs
