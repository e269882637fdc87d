"""The seed's backbone x optimizer sweep through the real DVC queue.

Every registered backbone's own code path (build, preprocessing, feature width) is checked in
process by test_backbones.py; here the queue runs a backbone other than the baseline's with two
optimizers (the baseline's backbone already has its features).
"""

import json


def test_seed_style_sweep_computes_features_once_per_backbone(pipeline_copy):
    """Backbone x optimizer for the head, as the seed explored it: the queue runs features
    once for the new backbone; its other run restores them from the run-cache."""
    repo = pipeline_copy
    repo.dvc(
        "exp",
        "run",
        "--queue",
        "-S",
        "model.backbone=mobilenet_v2",
        "-S",
        "train_head.optimizer=sgd,rmsprop",
        "-S",
        "train_head.epochs=3",
        "train_head",
    )
    try:
        repo.dvc("exp", "run", "--run-all", "--jobs", "1")  # one worker, in queue order
    finally:
        repo.dvc("queue", "stop", check=False)  # no idle worker left behind
    status = repo.dvc("queue", "status").stdout
    assert status.count("Success") == 2, status
    names = [line.split()[0] for line in status.splitlines() if "Success" in line]
    logs = [repo.dvc("queue", "logs", name).stdout for name in names]
    ran_features = sum("Running stage 'features'" in log for log in logs)
    restored = sum("Stage 'features' is cached - skipping run" in log for log in logs)
    assert (ran_features, restored) == (1, 1), logs

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
        ("mobilenet_v2", optimizer) for optimizer in ("sgd", "rmsprop")
    }
    assert all(isinstance(accuracy, float) for _, _, accuracy in runs), runs
