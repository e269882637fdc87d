"""The pipeline driven through the real `dvc` CLI: what runs, what is skipped, what is stored."""

import json

import pytest
import yaml
from conftest import Repo, copy_of

EXPORTS = {"export@saved_model", "export@onnx"}  # one stage per format in export.formats
STAGES = {"prepare", "features", "train_head", "fine_tune", "evaluate", *EXPORTS, "report"}
METRICS = {
    "prepare": "metrics/prepare.json",
    "features": "metrics/features.json",
    "train_head": "dvclive/train_head/metrics.json",
    "fine_tune": "dvclive/fine_tune/metrics.json",
    "evaluate": "dvclive/evaluate/metrics.json",
}


def test_repro_runs_every_stage_and_writes_every_metrics_file(pipeline):
    assert pipeline.ran_stages(pipeline.first_repro_log) == STAGES
    for name, path in METRICS.items():
        assert pipeline.json(path), name
    evaluation = pipeline.json(METRICS["evaluate"])
    assert 0.0 <= evaluation["test_accuracy"] <= 1.0
    assert set(evaluation["head_only"]) == {"test_accuracy", "test_loss"}
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


# Three experiments from the baseline, queued on one copy and run together by DVC's own queue
# (each in a temporary workspace sharing the copy's cache and run-cache). Each runs only as far
# as its tests look; which stages each param invalidates is checked for every param, without
# running anything, by test_each_param_invalidates_exactly_the_stages_that_read_it.
QUEUED = {
    "mirrored": ["-S", "compute.distribute=mirrored", "evaluate"],
    "rerun": ["--force", "evaluate"],  # same params and seed, every stage up to evaluate forced
    "lr": ["-S", "lr=1e-4"],
}


@pytest.fixture(scope="module")
def experiments(pipeline, tmp_path_factory):
    """The queued experiments, run by `dvc exp run --run-all -j 3`; the lr experiment is then
    applied and committed (for metrics and plots diff between commits)."""
    repo = copy_of(pipeline, tmp_path_factory.mktemp("experiments") / "repo")
    repo.before = repo.json(METRICS["train_head"])
    for name, args in QUEUED.items():
        repo.dvc("exp", "run", "--queue", "--name", name, *args)
    try:
        repo.dvc("exp", "run", "--run-all", "--jobs", "3")
    finally:
        repo.dvc("queue", "stop", check=False)  # no idle worker left behind
    repo.logs = {name: repo.dvc("queue", "logs", name).stdout for name in QUEUED}
    repo.runs = {name: repo.ran_stages(log) for name, log in repo.logs.items()}
    repo.revs = {
        revision["name"]: revision["rev"]
        for baseline in json.loads(repo.dvc("exp", "show", "--json").stdout)
        for experiment in baseline.get("experiments") or []
        for revision in experiment.get("revs", [])
    }
    repo.dvc("exp", "apply", "lr")
    repo.commit("head lr 1e-4")
    return repo


def _committed(repo, experiment: str, path: str):
    """A git-tracked file as an experiment committed it."""
    text = repo.git("show", f"{repo.revs[experiment]}:{path}")
    return yaml.safe_load(text) if path.endswith((".lock", ".yaml")) else json.loads(text)


def test_changing_lr_reruns_train_head_onwards_and_not_prepare(experiments):
    assert experiments.runs["lr"] == {"train_head", "fine_tune", "evaluate", *EXPORTS, "report"}


def test_exp_show_lists_the_experiments_with_their_params(experiments):
    # The experiments branch off the baseline, now HEAD~1: show both commits.
    shown = json.loads(experiments.dvc("exp", "show", "--json", "--num", "2").stdout)
    assert 1e-4 in {float(v) for v in _values_of(shown, "lr")}  # the committed lr experiment
    assert "mirrored" in set(_values_of(shown, "distribute"))  # the mirrored experiment
    assert list(_values_of(shown, "test_accuracy"))


def _values_of(tree, key):
    """Every value stored under `key` anywhere in a nested JSON document."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == key and not isinstance(v, (dict, list)):
                yield v
            yield from _values_of(v, key)
    elif isinstance(tree, list):
        for item in tree:
            yield from _values_of(item, key)


def test_metrics_diff_between_commits_lists_changed_accuracy_keys(experiments):
    repo = experiments
    diff = json.loads(repo.dvc("metrics", "diff", "HEAD~1", "HEAD", "--json").stdout)
    head_diff = diff[METRICS["train_head"]]
    changed_accuracy = {key for key in head_diff if "accuracy" in key}
    assert changed_accuracy, head_diff
    committed = json.loads(repo.git("show", f"HEAD:{METRICS['train_head']}"))
    for key in changed_accuracy:
        assert head_diff[key]["old"] == repo.before[key]
        assert head_diff[key]["new"] == committed[key]


def test_same_params_and_seed_give_identical_split_and_metrics(experiments, pipeline):
    """Determinism on CPU: a forced rerun of every model stage reproduces the split bit for bit
    and the metrics."""
    assert experiments.runs["rerun"] == STAGES - EXPORTS - {"report"}
    rerun_lock = _committed(experiments, "rerun", "dvc.lock")
    baseline_lock = yaml.safe_load((pipeline.path / "dvc.lock").read_text())
    split_before, split_after = (
        {out["path"]: out["md5"] for out in lock["stages"]["prepare"]["outs"]}
        for lock in (baseline_lock, rerun_lock)
    )
    assert split_after == split_before  # data/prepared: the md5 of every file
    for name in ("train_head", "fine_tune", "evaluate"):
        before = pipeline.json(METRICS[name])
        after = _committed(experiments, "rerun", METRICS[name])
        for key, value in before.items():
            if key in ("seconds", "images_per_s"):
                continue  # wall time differs; everything else must not
            if isinstance(value, float):
                assert after[key] == pytest.approx(value, abs=1e-6), (name, key)
            else:
                assert after[key] == value, (name, key)


def test_mirrored_strategy_on_two_logical_cpus_trains_a_model_of_the_same_quality(
    experiments, pipeline
):
    single = pipeline.json(METRICS["evaluate"])["test_accuracy"]
    assert "distribute=mirrored replicas=2" in experiments.logs["mirrored"]
    # compute.distribute is read by the training stages only (extraction runs on one device).
    assert experiments.runs["mirrored"] == {"train_head", "fine_tune", "evaluate"}
    mirrored = _committed(experiments, "mirrored", METRICS["evaluate"])["test_accuracy"]
    # 60 test images: one image is 1.7 %. Same recipe, same data -> same quality band.
    assert mirrored > 0.5 and abs(mirrored - single) <= 0.15, (single, mirrored)


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


def test_dvc_plots_diff_overlays_two_revisions(experiments):
    plots = json.loads(experiments.dvc("plots", "diff", "HEAD~1", "HEAD", "--json").stdout)
    revisions = plots["data"]["Accuracy per epoch"][0]["revisions"]
    assert len(revisions) == 2


@pytest.mark.parametrize(
    "overrides, invalidated",
    [
        # The report shows the learning rates, epochs, backbone, input size and split sizes,
        # so it reads (and declares) them too.
        ({"lr": 0.01}, {"train_head", "report"}),
        ({"model": {"head_units": [32]}, "train_head": {"epochs": 3}}, {"train_head", "report"}),
        ({"model": {"dropout": 0.1}}, {"train_head"}),
        ({"model": {"image_size": 48}}, {"features", "report"}),
        ({"model": {"backbone": "mobilenet_v2"}}, {"features", "report"}),
        ({"fine_tune": {"lr": 1e-4}}, {"fine_tune", "report"}),
        ({"report": {"wrong_examples": 3}}, {"report"}),
        ({"data": {"val_size": 50}}, {"prepare", "report"}),
        ({"train_head": {"optimizer": "sgd"}}, {"train_head", "report"}),
        ({"compute": {"jit_compile": False}}, {"train_head", "fine_tune"}),
        ({"compute": {"distribute": "none"}}, {"train_head", "fine_tune"}),
        (
            {"compute": {"backend": "jax"}},
            {"features", "train_head", "fine_tune", "evaluate"},
        ),
        ({"export": {"latency_runs": 5}}, EXPORTS),
        # A format removed: its stage is gone, the others stay valid; only the report changes.
        ({"export": {"formats": ["onnx"]}}, {"report"}),
    ],
)
def test_each_param_invalidates_exactly_the_stages_that_read_it(
    pipeline, tmp_path, overrides, invalidated
):
    """`dvc status` names the stages whose own params changed (downstream ones follow)."""
    repo = copy_of(pipeline, tmp_path / "repo", with_cache=False)
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
    assert "oneDNN" not in log  # no TensorFlow start-up noise
    # No absl-level lines at all (Keras' array feeding on TensorFlow once logged a MapDataset
    # op-definition error from evaluate; every stage now feeds through ArrayBatches).
    assert "absl::InitializeLog" not in log and "E0000" not in log
    assert len(log) < 50_000


# The run-cache, last in this module: these move the experiments copy's workspace.


def test_going_back_to_earlier_params_restores_from_the_run_cache(experiments):
    repo = experiments
    repo.git("checkout", "-q", "params.yaml")  # HEAD: the baseline but lr 1e-4 (applied)
    back = repo.dvc("exp", "run", "-S", "lr=0.001")  # the baseline's params again
    assert repo.ran_stages(back.stdout) == set(), back.stdout
    assert repo.restored_stages(back.stdout) == {
        "train_head",
        "fine_tune",
        "evaluate",
        *EXPORTS,
        "report",
    }
    assert "train_head epoch" not in back.stdout + back.stderr  # no stage command ran
    assert repo.dvc("status", "--json").stdout.strip() == "{}"


def test_checking_out_other_params_restores_without_dvc_checkout(experiments):
    repo = experiments
    repo.git("checkout", "-q", "--", ".")  # the last experiment is kept as an exp ref
    repo.git("checkout", "-q", "-b", "other", "HEAD~1")  # the baseline commit: lr 0.001
    result = repo.dvc("repro")  # the baseline: restored by the previous test, nothing to do
    assert repo.ran_stages(result.stdout) == set(), result.stdout
    assert repo.dvc("status", "--json").stdout.strip() == "{}"
    repo.git("checkout", "-q", "-")  # and back: lr 1e-4, restored too
    result = repo.dvc("repro")
    assert repo.ran_stages(result.stdout) == set(), result.stdout
    assert "train_head" in repo.restored_stages(result.stdout)


def test_a_fresh_clone_pulls_the_run_cache_and_runs_nothing(experiments, tmp_path):
    repo = experiments
    remote = tmp_path / "remote"
    repo.dvc("remote", "add", "-d", "store", str(remote))
    repo.commit("a DVC remote")
    repo.dvc("push", "--run-cache")
    clone = Repo(tmp_path / "clone")
    repo.run("git", "clone", "-q", str(repo.path), str(clone.path))
    clone.dvc("pull", "--run-cache")
    assert list((clone.path / ".dvc/cache/runs").rglob("*"))
    assert clone.ran_stages(clone.dvc("repro").stdout) == set()
    assert clone.snapshot() == repo.snapshot()
