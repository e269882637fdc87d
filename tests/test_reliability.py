"""Faults through the real CLI: a killed fine_tune resumes exactly, a NaN loss stops cleanly."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import copy_of

from transfer_pipeline.models.model import load_model
from transfer_pipeline.running.live import read_history

TIMINGS = ("seconds", "images_per_s", "resumed_after_epoch")


def test_fine_tune_killed_after_an_epoch_resumes_and_equals_an_uninterrupted_run(
    pipeline, tmp_path
):
    """The session pipeline's own fine_tune is the uninterrupted run. A copy runs it again
    (forced: the run-cache would restore it), killed right after epoch 1, and resumes: the
    optimizer state (Adam's moments and step), the dropout random state and the data order must
    all survive the kill."""
    killed = copy_of(pipeline, tmp_path / "killed")
    # The stage process is killed (SIGKILL) once epoch 1 and its checkpoint are complete;
    # before that, DVCLive's files (in the partial folder until the run ends) already hold the
    # finished epoch.
    seen, live = tmp_path / "seen", "dvclive/fine_tune/plots/.partial-fine_tune/fine_tune"
    seen.mkdir()
    copy = f"cp {live}/metrics.json {live}/plots/metrics/val_accuracy.tsv {seen}/"
    forced = ("repro", "-f", "-s", "fine_tune")
    result = killed.dvc(
        *forced, check=False, env={"TL_AFTER_EPOCH": f"fine_tune:1:{copy} && kill -KILL $PPID"}
    )
    assert result.returncode != 0
    assert killed.json(".resume/fine_tune/state.json")["epochs_done"] == 1
    assert (killed.path / live).is_dir()  # what the kill left: removed by the next run
    during = json.loads((seen / "metrics.json").read_text())
    assert during["step"] == 0 and "val_accuracy" in during  # DVCLive's step 0: epoch 1 of 2
    assert len((seen / "val_accuracy.tsv").read_text().splitlines()) == 1 + 1

    result = killed.dvc(*forced)
    assert "fine_tune: resuming after epoch 1" in result.stdout
    assert killed.ran_stages(result.stdout) == {"fine_tune"}
    resumed = killed.json("dvclive/fine_tune/metrics.json")
    assert resumed["resumed_after_epoch"] == 1
    history = read_history(killed.path / "dvclive/fine_tune")
    assert history["epoch"].tolist() == [1, 2]  # every epoch once: re-logged, not duplicated
    assert not (killed.path / ".resume/fine_tune").exists(), "a finished run clears its checkpoint"
    assert not list(killed.path.rglob(".partial-*")), "no partial left"
    assert killed.dvc("status", "fine_tune", "--json").stdout.strip() == "{}"  # recorded

    uninterrupted = pipeline.json("dvclive/fine_tune/metrics.json")
    assert set(resumed) == set(uninterrupted)
    for key, value in uninterrupted.items():
        if key not in TIMINGS:
            assert resumed[key] == pytest.approx(value, abs=1e-6), key
    pd.testing.assert_frame_equal(
        history, read_history(pipeline.path / "dvclive/fine_tune"), atol=1e-6
    )
    # The kept models themselves: every weight of the resumed run's equals the uninterrupted's.
    models = [load_model(repo.path / "models/fine_tuned.keras") for repo in (killed, pipeline)]
    weights = [model.get_weights() for model in models]
    assert len(weights[0]) == len(weights[1]) > 100
    for after_resume, uninterrupted_weight in zip(*weights):
        np.testing.assert_allclose(after_resume, uninterrupted_weight, rtol=1e-5, atol=1e-6)


def test_nan_loss_stops_with_the_epoch_named_and_nothing_replaced(pipeline_copy):
    repo = pipeline_copy
    good = repo.snapshot()
    repo.set_params({"lr": 1e30})
    result = repo.dvc("repro", check=False)
    ours = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0
    assert len(ours) == 1 and "train_head: the loss became nan in epoch 1" in ours[0], ours
    assert "Lower lr" in ours[0]
    repo.back_to_last_good(good)
