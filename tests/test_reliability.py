"""Faults through the real CLI: a killed fine_tune resumes exactly, a NaN loss stops cleanly."""

import pandas as pd
import pytest
from conftest import copy_of

# Every fine-tuning option on: the optimizer state (AdamW moments, schedule step), the
# augmentation and dropout random state and the data order must all survive the kill.
ALL_OPTIONS = {
    "fine_tune": {
        "epochs": 3,
        "augment": True,
        "label_smoothing": 0.1,
        "schedule": "cosine",
        "warmup_epochs": 1,
        "weight_decay": 0.01,
        "unfreeze": 40,
    }
}
TIMINGS = ("seconds", "train_images_per_s", "resumed_after_epoch")


def test_fine_tune_killed_after_an_epoch_resumes_and_equals_an_uninterrupted_run(
    pipeline, tmp_path
):
    killed = copy_of(pipeline, tmp_path / "killed")
    killed.set_params(ALL_OPTIONS)
    # The stage process is killed (SIGKILL) right after epoch 1 and its checkpoint completed.
    result = killed.dvc(
        "repro", check=False, env={"TL_AFTER_EPOCH": "fine_tune:1:kill -KILL $PPID"}
    )
    assert result.returncode != 0
    assert killed.json(".resume/fine_tune/state.json")["epochs_done"] == 1

    result = killed.dvc("repro")
    assert "fine_tune: resuming after epoch 1" in result.stdout
    resumed = killed.json("metrics/fine_tune.json")
    assert resumed["epochs_run"] == 3 and resumed["resumed_after_epoch"] == 1
    history = (killed.path / "plots/fine_tune.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["1", "2", "3"]
    assert not (killed.path / ".resume/fine_tune").exists(), "a finished run clears its checkpoint"
    assert killed.dvc("status", "--json").stdout.strip() == "{}"

    whole = copy_of(pipeline, tmp_path / "whole")
    whole.set_params(ALL_OPTIONS)
    whole.dvc("repro")
    uninterrupted = whole.json("metrics/fine_tune.json")
    for key, value in uninterrupted.items():
        if key not in TIMINGS:
            assert resumed[key] == pytest.approx(value, abs=1e-6), key
    expected = pd.read_csv(whole.path / "plots/fine_tune.csv")
    pd.testing.assert_frame_equal(
        pd.read_csv(killed.path / "plots/fine_tune.csv"), expected, atol=1e-6
    )
    assert killed.json("metrics/evaluate.json")["test_accuracy"] == pytest.approx(
        whole.json("metrics/evaluate.json")["test_accuracy"], abs=1e-6
    )


def test_nan_loss_stops_with_the_epoch_named_and_nothing_replaced(pipeline_copy):
    repo = pipeline_copy
    good = repo.snapshot()
    repo.set_params({"lr": 1e30})
    result = repo.dvc("repro", check=False)
    ours = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0
    assert len(ours) == 1 and "train_head: the loss became nan in epoch 1" in ours[0], ours
    assert "Lower lr" in ours[0]
    assert repo.snapshot() == good
