"""Faults through the real CLI: a SIGKILLed fine_tune resumes, a NaN loss stops cleanly."""

import os
import signal
import subprocess
import sys
import time

from conftest import tool_env


def test_fine_tune_killed_mid_epoch_resumes_from_the_last_completed_epoch(pipeline_copy):
    repo = pipeline_copy
    # Every fine-tuning option on: the optimizer state (AdamW moments, schedule step) and the
    # augmentation layers must survive the kill too.
    repo.set_params(
        {
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
    )
    state = repo.path / ".resume/fine_tune/state.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=repo.path,
        env=tool_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert state.exists(), "fine_tune never completed an epoch"
    time.sleep(0.5)  # into the next epoch
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    saved = repo.json(".resume/fine_tune/state.json")
    assert 1 <= saved["epochs_done"] < 3, "killed before the stage finished"

    result = repo.dvc("repro")
    assert f"resuming after epoch {saved['epochs_done']}" in result.stdout
    metrics = repo.json("metrics/fine_tune.json")
    assert metrics["epochs_run"] == 3
    assert metrics["resumed_after_epoch"] == saved["epochs_done"]
    history = (repo.path / "plots/fine_tune.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["1", "2", "3"]
    assert not (repo.path / ".resume/fine_tune").exists(), "a finished run clears its checkpoint"
    assert repo.dvc("status", "--json").stdout.strip() == "{}"


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
