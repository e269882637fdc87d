"""The pipeline driven through the real `dvc` CLI: what runs, what is skipped, what is stored."""

import json

import numpy as np
import pytest
from conftest import EXPORTS, METRICS, STAGES, TF_STARTUP, copy_of


def test_repro_runs_every_stage_and_writes_every_metrics_file(pipeline):
    assert pipeline.ran_stages(pipeline.first_repro_log) == STAGES
    for name, path in METRICS.items():
        assert pipeline.json(path), name
    evaluation = pipeline.json(METRICS["evaluate"])
    assert 0.0 <= evaluation["test_accuracy"] <= 1.0
    assert set(evaluation["head_only"]) == {"validation_accuracy", "test_accuracy", "test_loss"}
    images = pipeline.params()["data"]
    assert evaluation["images"] == {"validation": images["val_size"], "test": images["test_size"]}
    interval = evaluation["interval95"]["test_accuracy"]
    assert interval["low"] <= evaluation["test_accuracy"] <= interval["high"]
    # The shipped weights' validation accuracy: fine_tune's best epoch's, as it measured it.
    fine_tune = pipeline.json(METRICS["fine_tune"])
    assert evaluation["validation_accuracy"] == fine_tune["best_val_accuracy"]
    per_class = (pipeline.path / "eval/per_class.csv").read_text().splitlines()
    assert per_class[0] == "class,precision,recall,f1,support" and len(per_class) == 11
    assert (pipeline.path / "report/report.md").stat().st_size > 0


def test_second_repro_runs_nothing_and_status_is_clean(pipeline):
    result = pipeline.dvc("repro")
    assert pipeline.ran_stages(result.stdout) == set()
    status = pipeline.dvc("status", "--json")
    assert json.loads(status.stdout) == {}


def test_tiny_pipeline_learns_more_than_chance(pipeline):
    # 10 classes: chance is 10 %. Proves the stages really train, not only that they run.
    evaluation = pipeline.json(METRICS["evaluate"])
    assert evaluation["head_only"]["test_accuracy"] > 0.5
    assert evaluation["test_accuracy"] > 0.5


def test_dvc_plots_show_gives_curves_per_phase_and_a_named_confusion_matrix(pipeline):
    plots = json.loads(pipeline.dvc("plots", "show", "--json").stdout)["data"]
    views = {"Loss per epoch", "Accuracy per epoch", "Confusion matrix (test set)"}
    assert views | {"F1 per class (test set)"} <= set(plots)
    loss_rows = plots["Loss per epoch"][0]["content"]["data"]["values"]
    series = {row["filename::field"] for row in loss_rows}
    assert series == {
        f"{phase}/plots/metrics/{field}.tsv::{field}"
        for phase in ("train_head", "fine_tune")
        for field in ("loss", "val_loss")
    }
    confusion = plots["Confusion matrix (test set)"][0]["content"]["data"]["values"]
    assert len(confusion) == pipeline.params()["data"]["test_size"]
    assert {row["actual"] for row in confusion} == set(
        (pipeline.path / "data/prepared/classes.json").read_text().split('"')[1::2]
    )


@pytest.fixture(scope="module")
def status_copy(pipeline, tmp_path_factory):
    """One copy for every case below: DVC hashes a copy's files once, not once per case."""
    return copy_of(pipeline, tmp_path_factory.mktemp("status") / "repo", with_cache=False)


@pytest.mark.parametrize(
    "overrides, invalidated",
    [
        # The report shows the learning rates, epochs, backbone, input size and split sizes,
        # so it reads (and declares) them too.
        ({"lr": 0.01}, {"train_head", "report"}),
        ({"model": {"head_units": [32]}, "train_head": {"epochs": 3}}, {"train_head", "report"}),
        ({"model": {"dropout": 0.1}}, {"train_head"}),
        # fine_tune times its model by backbone and size (compute.precision auto on a CPU).
        # boundary builds its trunk's faster twin from model.image_size and model.weights.
        ({"model": {"image_size": 48}}, {"features", "boundary", "fine_tune", "report"}),
        ({"model": {"backbone": "mobilenet_v2"}}, {"features", "boundary", "fine_tune", "report"}),
        ({"fine_tune": {"lr": 1e-4}}, {"fine_tune", "report"}),
        # The cached part: another count of top blocks reruns the cache, never features.
        ({"fine_tune": {"unfreeze": 1}}, {"boundary", "fine_tune", "report"}),
        ({"fine_tune": {"augment": True}}, {"boundary", "fine_tune"}),
        ({"report": {"wrong_examples": 3}}, {"report"}),
        # evaluate stores the data params with its predictions (which test split they are of)
        ({"data": {"val_size": 50}}, {"prepare", "evaluate", "report"}),
        # The training seed leaves the split, and so the test images, alone (issue 45).
        ({"seed": 7}, {"train_head", "fine_tune", "evaluate"}),
        ({"data": {"split_seed": 7}}, {"prepare", "features", "evaluate"}),
        ({"train_head": {"optimizer": "sgd"}}, {"train_head", "report"}),
        ({"compute": {"jit_compile": False}}, {"train_head", "fine_tune"}),
        ({"compute": {"distribute": "none"}}, {"train_head", "fine_tune"}),
        (
            {"compute": {"backend": "jax"}},
            {"features", "train_head", "boundary", "fine_tune", "evaluate"},
        ),
        (  # the launcher is in the model stages' command too
            {"compute": {"backend": "jax", "distribute": "multi_host", "launcher": "srun"}},
            {"features", "train_head", "boundary", "fine_tune", "evaluate"},
        ),
        ({"export": {"latency_runs": 5}}, EXPORTS),
        # A format removed: its stage is gone, the others stay valid; only the report changes.
        ({"export": {"formats": ["onnx"]}}, {"report"}),
    ],
)
def test_each_param_invalidates_exactly_the_stages_that_read_it(
    status_copy, overrides, invalidated
):
    """`dvc status` names the stages whose own params changed (downstream ones follow)."""
    repo = status_copy
    repo.git("checkout", "-q", "params.yaml")  # the baseline's params, then these changes
    repo.set_params(overrides)
    status = json.loads(repo.dvc("status", "--json").stdout)
    changed = {
        name.split(":")[-1]
        for name, entries in status.items()
        if any("changed deps" in entry for entry in entries if isinstance(entry, dict))
    }
    assert changed == invalidated, status


def test_logs_show_epochs_with_eta_and_stay_short_in_ci(pipeline):
    log = pipeline.first_repro_log  # the fixture runs with CI=true
    assert "train_head epoch 15/15" in log and "fine_tune epoch 2/2" in log
    assert all("ETA" in line for line in log.splitlines() if " epoch " in line and "/" in line)
    assert "features train: 150/150 images (100%" in log
    assert "\r" not in log  # no redrawn progress bars in CI logs
    # No TensorFlow start-up noise but the two lines TF 2.21 prints before it reads
    # TF_CPP_MIN_LOG_LEVEL on CPUs with oneDNN (AVX512_VNNI/BF16, AMX; TF_STARTUP), and no
    # absl-level lines at all (Keras' array feeding on TensorFlow once logged a MapDataset
    # op-definition error from evaluate; every stage now feeds through ArrayBatches).
    ours = "\n".join(line for line in log.splitlines() if not TF_STARTUP.match(line))
    assert "oneDNN" not in ours and "absl::InitializeLog" not in ours and "E0000" not in ours
    assert len(log) < 50_000


def test_fine_tune_trains_the_top_blocks_from_the_boundary_cache_which_the_run_cache_restores(
    pipeline, pipeline_copy
):
    """The tiny pipeline's unfreeze 2 (blocks) without augmentation: the boundary stage caches
    the frozen blocks' output in float16, fine_tune trains from it; another unfreeze reruns the
    cache, the old one comes back from the run-cache; augmentation caches nothing."""
    log = pipeline.first_repro_log
    assert "features: expected here: features about " in log
    assert "of the top 2 blocks from the cache about " in log
    assert "boundary: the cache below the top 2 blocks of resnet50 (1 x 1 x 2048 float16" in log
    assert "fine_tune: the top 2 block(s) and the head train from data/boundary" in log
    plan = pipeline.json("data/boundary/cache.json")
    assert (plan["cached"], plan["blocks"], plan["dtype"]) == (True, 2, "float16")
    cache = np.load(pipeline.path / "data/boundary/train.npy", mmap_mode="r")
    assert cache.shape == (150, 1, 1, 2048) and cache.dtype == np.float16
    assert np.isfinite(cache).all() and np.abs(cache).max() > 0

    repo = pipeline_copy
    repo.set_params({"fine_tune": {"unfreeze": 1}})
    assert repo.ran_stages(repo.dvc("repro", "boundary").stdout) == {"boundary"}
    assert repo.json("data/boundary/cache.json")["blocks"] == 1
    repo.git("checkout", "-q", "params.yaml")
    back = repo.dvc("repro", "boundary")
    assert repo.ran_stages(back.stdout) == set() and repo.restored_stages(back.stdout) == {
        "boundary"
    }
    assert repo.json("data/boundary/cache.json") == plan

    repo.set_params({"fine_tune": {"augment": True}})
    augmented = repo.dvc("repro", "boundary")
    assert "boundary: no cache (fine_tune.augment" in augmented.stdout
    kept = [p.name for p in (repo.path / "data/boundary").iterdir() if not p.name.startswith(".")]
    assert kept == ["cache.json"]  # and the stage's own marker
