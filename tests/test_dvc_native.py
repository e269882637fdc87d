"""DVC does the bookkeeping: run-cache restores, DVCLive curves while a stage runs, exact
dependencies, a metrics table that fits a terminal."""

import json

import yaml
from conftest import REPO_ROOT, copy_of
from stage_imports import code_dependencies

DVC_YAML = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())


def _stages():
    """(name, definition) of every dvc.yaml stage; a foreach stage by its `do` part."""
    return [(name, stage.get("do", stage)) for name, stage in DVC_YAML["stages"].items()]


def test_every_stage_can_use_the_run_cache():
    for name, stage in _stages():
        for out in stage["outs"] + stage.get("metrics", []) + stage.get("plots", []):
            options = next(iter(out.values())) if isinstance(out, dict) else {}
            assert not options.get("persist"), (name, out)
        for out in stage["outs"]:
            assert not isinstance(out, dict), f"{name}: {out} (plain outs are cached)"


def test_code_dependencies_are_the_import_closure_of_each_stage():
    for name, stage in _stages():
        declared = {dep for dep in stage["deps"] if dep.endswith(".py")}
        expected = code_dependencies(REPO_ROOT / f"stages/{name}.py", REPO_ROOT)
        assert declared == expected, name


def test_readmes_in_dependency_folders_are_not_dependencies():
    ignored = (REPO_ROOT / ".dvcignore").read_text().split()
    assert "README.md" in ignored


def test_metrics_show_fits_a_terminal(pipeline):
    table = pipeline.dvc("metrics", "show").stdout.splitlines()
    columns = table[0].split()
    # Path + 20 metrics: the stages' own, plus latency_ms and size_mb of the exported formats.
    assert "test_accuracy" in columns and len(columns) <= 21, columns
    assert not any("precision" in column for column in columns)


def test_a_queued_experiment_sees_a_dvc_added_weights_file(pipeline, tmp_path):
    repo = copy_of(pipeline, tmp_path / "repo")
    weights = repo.path / "weights/resnet50_notop.weights.h5"
    # A real Keras weights file for this backbone (made here, in the test's own process).
    import keras

    keras.utils.set_random_seed(7)
    keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    ).save_weights(weights)
    repo.dvc("add", "-q", "weights/resnet50_notop.weights.h5")
    repo.commit("weights for air-gapped runs")
    chosen = f"model.weights={weights.relative_to(repo.path)}"
    repo.dvc("exp", "run", "--queue", "-S", chosen, "features")
    try:
        repo.dvc("exp", "run", "--run-all", "--jobs", "1")  # starts a worker, waits for it
    finally:
        repo.dvc("queue", "stop", check=False)
    status = repo.dvc("queue", "status").stdout
    assert "Failed" not in status and "Success" in status, status
    rows = json.loads(repo.dvc("exp", "show", "--json").stdout)
    widths = [
        revision["data"]["metrics"]["metrics/features.json"]["data"]["feature_width"]
        for baseline in rows
        for experiment in baseline.get("experiments") or []
        for revision in experiment.get("revs", [])
        if revision.get("data", {}).get("metrics", {}).get("metrics/features.json")
    ]
    assert widths == [2048], rows
