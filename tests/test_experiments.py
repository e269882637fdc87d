"""Experiments through DVC's own queue, compared and restored the DVC way.

Two experiments from the tiny baseline, queued on one copy and run together by
`dvc exp run --run-all` (each in a temporary workspace sharing the copy's cache and run-cache);
then `dvc exp show`, `dvc metrics diff`, `dvc plots diff` between commits, and the run-cache
taking the workspace back and forth and to a fresh clone.
"""

import json
import shlex
import subprocess
import sys

import numpy as np
import pytest
from conftest import EXPORTS, METRICS, REPO_ROOT, Repo, copy_of, tool_env

# Each experiment runs only as far as its tests look; which stages each param invalidates is
# checked for every param, without running anything, by
# test_pipeline_dvc.py::test_each_param_invalidates_exactly_the_stages_that_read_it.
QUEUED = {
    # The head is where the replicas matter: its BatchNorm trains (the backbone's never does).
    # fine_tune under tf.distribute runs the same scope and fit; jax's DataParallel fine_tune
    # runs in test_backends.py. The two heads are compared without dropout (each replica
    # draws its own masks).
    "mirrored": ["-S", "compute.distribute=mirrored", "-S", "model.dropout=0", "train_head"],
    "one-device": ["-S", "compute.distribute=none", "-S", "model.dropout=0", "train_head"],
    # A sweep point as docs/experiments.md runs it: up to evaluate, no export; the winner is
    # exported afterwards (`dvc exp apply`, then `dvc repro`).
    "lr": ["-S", "lr=1e-4", "evaluate"],
}


@pytest.fixture(scope="module")
def experiments(pipeline, tmp_path_factory):
    """The queued experiments, run by `dvc exp run --run-all -j 2`; the lr experiment is then
    applied, exported by `dvc repro` and committed (for metrics and plots diff between
    commits)."""
    repo = copy_of(pipeline, tmp_path_factory.mktemp("experiments") / "repo")
    repo.before = repo.json(METRICS["train_head"])
    for name, args in QUEUED.items():
        repo.dvc("exp", "run", "--queue", "--name", name, *args)
    try:
        repo.dvc("exp", "run", "--run-all", "--jobs", "2")
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
    # README's command for looking at experiments, in a 120-column terminal.
    repo.readme_table = repo.dvc(*readme_exp_show(), env={"COLUMNS": "120"}).stdout
    repo.dvc("exp", "apply", "lr")
    repo.export_run = repo.ran_stages(repo.dvc("repro").stdout)
    repo.commit("head lr 1e-4")
    return repo


def test_changing_lr_reruns_train_head_onwards_and_not_prepare(experiments):
    assert experiments.runs["lr"] == {"train_head", "fine_tune", "evaluate"}


def test_a_sweep_point_run_to_evaluate_is_exported_by_apply_then_repro(experiments):
    """docs/experiments.md's sweep: the points stop at evaluate; the chosen one, applied, runs
    only its exports and the report."""
    assert experiments.export_run == {*EXPORTS, "report"}
    assert experiments.dvc("status", "--json").stdout.strip() == "{}"


def test_exp_show_lists_the_experiments_with_their_params(experiments):
    # The experiments branch off the baseline, now HEAD~1: show both commits.
    shown = json.loads(experiments.dvc("exp", "show", "--json", "--num", "2").stdout)
    assert 1e-4 in {float(v) for v in _values_of(shown, "lr")}  # the committed lr experiment
    assert "mirrored" in set(_values_of(shown, "distribute"))  # the mirrored experiment
    assert list(_values_of(shown, "test_accuracy"))


def readme_exp_show() -> list[str]:
    """The `dvc exp show` command README.md gives for looking at experiments (without dvc)."""
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split("## Everyday commands")[1].split("```bash\n")[1].split("```")[0]
    command = next(line for line in block.replace("\\\n", " ").splitlines() if "exp show" in line)
    words = shlex.split(command, comments=True)
    assert words[:3] == ["dvc", "exp", "show"], words
    return words[1:]


def test_readme_exp_show_fits_120_columns_with_names_accuracies_and_changed_params(experiments):
    """Three experiments in a 120-column terminal: each one's name, the validation accuracy
    they are sorted by, the test accuracy and every param that differs, none of them cut to an
    ellipsis; no export figure (the lr point stopped at evaluate: those are its parent's)."""
    table = experiments.readme_table
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 120, table
    assert "…" not in table, table
    header = " ".join(lines[:4])
    for column in ("Experiment", "validation_accuracy", "test_accuracy", "lr"):
        assert column in header, table
    assert "runtime_test_accuracy" not in table and "head_only" not in table, table
    for column in ("compute.distribute", "model.dropout"):
        assert column in header, table
    for name in QUEUED:
        assert f"[{name}]" in table, table
    assert "compute" not in header.replace("compute.distribute", ""), table  # not a metric
    # The rows carry the accuracies: one number per experiment row and the baseline.
    rows = [line for line in lines if any(f"[{name}]" in line for name in QUEUED)]
    assert all(sum(cell.replace(".", "").isdigit() for cell in row.split()) >= 2 for row in rows)


def _tl_compare(repo, *args):
    return repo.run(sys.executable, "-m", "transfer_pipeline.judging.compare", *args, check=False)


def test_tl_compare_finds_an_experiment_and_its_commit_identical(experiments):
    """The lr experiment and the commit made from it (`dvc exp apply`): the same predictions,
    one read from the experiment's ref, one from the commit, both through DVC's cache."""
    result = _tl_compare(experiments, "lr", "HEAD")
    assert result.returncode == 0, result.stderr
    assert "identical predictions: lr and HEAD" in result.stdout


def test_tl_compare_counts_the_images_each_run_alone_got_right(experiments, pipeline):
    """The baseline (HEAD~1) against the lr experiment: the discordant counts are those
    counted here from the two predictions files."""
    result = _tl_compare(experiments, "HEAD~1", "lr", "--json")
    assert result.returncode == 0, result.stderr
    (comparison,) = json.loads(result.stdout)["comparisons"]
    baseline = np.load(pipeline.path / "eval/predictions.npz")  # the baseline's workspace
    applied = np.load(experiments.path / "eval/predictions.npz")  # lr, applied and committed
    assert np.array_equal(baseline["labels"], applied["labels"])
    first = baseline["fine_tuned"].argmax(1) == baseline["labels"]
    second = applied["fine_tuned"].argmax(1) == applied["labels"]
    assert comparison["only_first_right"] == int((first & ~second).sum())
    assert comparison["only_second_right"] == int((~first & second).sum())
    assert comparison["first_accuracy"]["images"] == len(baseline["labels"])


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


def test_the_mirrored_experiment_trains_the_head_over_two_replicas(experiments):
    assert "distribute=mirrored replicas=2" in experiments.logs["mirrored"]
    assert "distribute=none replicas=1" in experiments.logs["one-device"]
    # compute.distribute is read by the training stages only (extraction runs on one device).
    assert experiments.runs["mirrored"] == {"train_head"}


def test_a_mirrored_step_over_two_logical_cpus_is_one_devices_step_on_the_same_batch():
    """What mirrored training must get right, checked where it is deterministic by design:
    one step on one batch of 8 gives the weights and the BatchNorm moving statistics of one
    device, because BatchNorm takes its statistics over the global batch (not 4 images per
    replica) and the replicas' gradients are summed. (Two whole trainings are not compared:
    the replicas' sums round otherwise than one device's, and over hundreds of steps that
    rounding, which differs between CPU kinds, decides the validation accuracy of 60 images.)

    The tolerance, 1e-5, from float32 arithmetic: every value compared is a sum of at most
    64 + 8 terms of order 1 (a 64-wide dot product, a mean over the batch), which the replicas
    add in another order (4 + 4 images, then an all-reduce); reordering such a sum moves it by
    at most about 72 x 2^-24 x 1 = 4e-6, whatever the CPU's instructions. Measured on an
    avx512 CPU: 6e-8 for the weights, 9e-10 for the statistics. BatchNorm per replica misses
    by 0.3 and 9e-3: a broken synchronization fails this test on every CPU."""
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "mirrored_step.py")],
        cwd=REPO_ROOT,
        env={**tool_env(), "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["replicas"] == 2, measured
    assert measured["global"]["weights"] <= 1e-5, measured
    assert measured["global"]["statistics"] <= 1e-5, measured
    assert measured["per_replica"]["statistics"] > 1e-3, measured  # the check can fail


def test_dvc_plots_diff_overlays_two_revisions(experiments):
    plots = json.loads(experiments.dvc("plots", "diff", "HEAD~1", "HEAD", "--json").stdout)
    revisions = plots["data"]["Accuracy per epoch"][0]["revisions"]
    assert len(revisions) == 2


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
