"""DVC does the bookkeeping: run-cache restores, DVCLive curves while a stage runs, exact
dependencies, a metrics table that fits a terminal, an experiments table that leads with the
test accuracies."""

import csv
import io
import json
import shlex
import shutil

import numpy as np
import yaml
from conftest import REPO_ROOT, Repo, copy_of
from stage_imports import code_dependencies

from transfer_pipeline.judging.evaluation import summarize
from transfer_pipeline.plumbing.param_schema import flatten
from transfer_pipeline.running.live import log_summary, open_live

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


def test_metrics_show_has_every_accuracy_with_its_interval_and_count(pipeline):
    table = pipeline.dvc("metrics", "show").stdout.splitlines()
    columns = table[0].split()
    for accuracy in ("validation_accuracy", "test_accuracy", "head_only.test_accuracy"):
        assert accuracy in columns, columns
        assert {f"interval95.{accuracy}.low", f"interval95.{accuracy}.high"} <= set(columns)
    assert {"images.validation", "images.test"} <= set(columns), columns
    # Path + the stages' own metrics: a bound, so that no stage adds columns unnoticed (the
    # everyday table is `dvc exp show` with README's flags: a few columns).
    assert len(columns) <= 40, columns
    assert not any("precision" in column for column in columns)


# The keys each stage writes besides evaluate's (as in the tiny pipeline's metrics files).
STAGE_METRICS_KEYS = {
    "metrics/prepare.json": ["images_available", "classes"],
    "metrics/features.json": ["feature_width", "images_per_s"],
    "dvclive/train_head/metrics.json": [
        *("loss", "accuracy", "val_loss", "val_accuracy", "step", "seconds")
    ],
    "dvclive/fine_tune/metrics.json": [
        *("loss", "accuracy", "val_loss", "val_accuracy", "step", "best_epoch"),
        *("best_val_accuracy", "resumed_after_epoch", "seconds", "images_per_s"),
    ],
    "metrics/export/saved_model.json": [
        *("runtime_test_accuracy", "keras_test_accuracy", "parity_images", "changed_class"),
        *("near_ties", "latency_ms", "images_per_s", "size_mb"),
    ],
    "metrics/export/onnx.json": [
        *("runtime_test_accuracy", "keras_test_accuracy", "parity_images", "changed_class"),
        *("near_ties", "latency_ms", "images_per_s", "size_mb"),
    ],
}


def _exp_show_columns(repo: Repo, *options: str) -> list[str]:
    """The columns of `dvc exp show` after Experiment, Created and the like (--csv keeps rev,
    typ and parent: the columns asked for start after parent)."""
    header = next(csv.reader(io.StringIO(repo.dvc("exp", "show", "--csv", *options).stdout)))
    first = "parent" if "parent" in header else "Experiment"  # README's command drops parent
    return header[header.index(first) + 1 :]


def test_dvc_exp_show_leads_with_the_validation_and_the_test_accuracy(tmp_path):
    """`dvc exp show` orders metric columns by stage order in dvc.yaml, then by key order in
    each file: with evaluate first and its summary written as the stage writes it, the columns
    after Experiment and Created are the shipped model's validation accuracy (what runs are
    chosen on) and its test accuracy (what a 120-column pager shows first). The command of
    docs/experiments.md ("Which run is best") keeps those two and the params. Metrics files
    only: no stage runs."""
    repo = Repo(tmp_path)
    repo.git("init", "-q")
    repo.dvc("init", "-q")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO_ROOT / name, tmp_path / name)
    labels = np.array([0, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    live = open_live(tmp_path / "dvclive/evaluate")
    validation = {"shipped": 0.5, "head_only": 0.5}
    log_summary(live, summarize(labels, probabilities, probabilities, validation, 4))
    live.end()
    for relative, keys in STAGE_METRICS_KEYS.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(json.dumps(dict.fromkeys(keys, 1)))
    repo.commit("metrics only")
    accuracies = ["validation_accuracy", "test_accuracy"]
    assert _exp_show_columns(repo)[:2] == accuracies

    docs = (REPO_ROOT / "docs/experiments.md").read_text()
    command = docs.split("## Which run is best")[1].split("```bash\n")[1].split("```")[0]
    words = shlex.split(command.replace("\\\n", " "))
    assert words[:3] == ["dvc", "exp", "show"] and "--only-changed" in words
    # One commit: --only-changed would drop every column; the other options are checked here.
    options = [word for word in words[3:] if word != "--only-changed"]
    params = list(flatten(yaml.safe_load((tmp_path / "params.yaml").read_text())))
    assert _exp_show_columns(repo, *options) == accuracies + params


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
