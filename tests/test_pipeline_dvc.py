"""The pipeline driven through the real `dvc` CLI: what runs, what is skipped, what is stored."""

import json

STAGES = {"prepare", "features", "train_head", "fine_tune", "evaluate", "report"}
METRICS = ["prepare", "features", "train_head", "fine_tune", "evaluate"]


def test_repro_runs_every_stage_and_writes_every_metrics_file(pipeline):
    assert pipeline.ran_stages(pipeline.first_repro_log) == STAGES
    for name in METRICS:
        assert pipeline.json(f"metrics/{name}.json"), name
    evaluation = pipeline.json("metrics/evaluate.json")
    assert 0.0 <= evaluation["test_accuracy"] <= 1.0
    assert set(evaluation["head_only"]) == {"test_accuracy", "test_loss"}
    assert len(evaluation["per_class"]) == 10
    assert (pipeline.path / "report/report.md").stat().st_size > 0


def test_second_repro_runs_nothing_and_status_is_clean(pipeline):
    result = pipeline.dvc("repro")
    assert pipeline.ran_stages(result.stdout) == set()
    status = pipeline.dvc("status", "--json")
    assert json.loads(status.stdout) == {}


def test_tiny_pipeline_learns_more_than_chance(pipeline):
    # 10 classes: chance is 10 %. Proves the stages really train, not only that they run.
    assert pipeline.json("metrics/evaluate.json")["test_accuracy"] > 0.3


def test_params_changes_rerun_only_the_stages_that_read_them(pipeline_copy):
    repo = pipeline_copy
    head_lr = repo.dvc("exp", "run", "-S", "lr=1e-4")
    assert repo.ran_stages(head_lr.stdout) == {"train_head", "fine_tune", "evaluate", "report"}

    fine_tune_lr = repo.dvc("exp", "run", "-S", "fine_tune.lr=3e-5")
    assert repo.ran_stages(fine_tune_lr.stdout) == {"fine_tune", "evaluate", "report"}

    report_only = repo.dvc("exp", "run", "-S", "report.wrong_examples=4")
    assert repo.ran_stages(report_only.stdout) == {"report"}

    shown = json.loads(repo.dvc("exp", "show", "--json").stdout)
    assert shown, "dvc exp show lists the baseline and its experiments"


def test_metrics_diff_between_commits_lists_changed_accuracy_keys(pipeline_copy):
    repo = pipeline_copy
    before = repo.json("metrics/train_head.json")
    repo.dvc("exp", "run", "-S", "lr=0.01")
    repo.commit("head lr 0.01")
    diff = json.loads(repo.dvc("metrics", "diff", "HEAD~1", "HEAD", "--json").stdout)
    head_diff = diff["metrics/train_head.json"]
    changed_accuracy = {key for key in head_diff if "accuracy" in key}
    assert changed_accuracy, head_diff
    for key in changed_accuracy:
        assert head_diff[key]["old"] == before[key]
        assert head_diff[key]["new"] == repo.json("metrics/train_head.json")[key]
