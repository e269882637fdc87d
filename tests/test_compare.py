"""Honest comparison: the statistics against values computed by hand and by scipy, and
`tl-compare` reading predictions through real DVC revisions (a git + DVC repository made here,
its predictions files DVC-tracked). The tiny pipeline's real experiments are compared in
test_experiments.py."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import stderr_lines, tool_env
from scipy.stats import binomtest

from transfer_pipeline.judging.evaluation import fingerprint_of_test_split as split_fingerprint
from transfer_pipeline.judging.statistics import (
    PairedComparison,
    describe_accuracy,
    images_to_resolve,
    mcnemar_p_value,
    paired_difference_interval,
    unpaired_difference,
    wilson_interval,
)


def _wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k, n", [(0, 5), (3, 7), (7, 7), (410, 500), (1, 2)])
def test_wilson_interval_is_the_formula_by_hand(k, n):
    assert wilson_interval(k, n) == pytest.approx(_wilson_by_hand(k, n), abs=1e-9)


def test_wilson_interval_at_the_first_looks_500_images():
    # Checked with scipy 1.17.1 (shared notes): 410 of 500.
    assert wilson_interval(410, 500) == pytest.approx((0.78393, 0.85120), abs=1e-5)
    assert describe_accuracy(410, 500) == "82.0 % (78.4-85.1 %, 500 images)"


@pytest.mark.parametrize(
    "only_first, only_second, expected",
    [
        (1, 5, 2 * (1 + 6) / 2**6),  # 2 P(X <= 1), X ~ B(6, 1/2): 14/64
        (0, 3, 2 / 2**3),  # 2 P(X = 0): 1/4
        (2, 2, 1.0),  # symmetric: every outcome as extreme
        (0, 0, 1.0),  # no discordant image: nothing against equality
        (0, 10, 2 / 2**10),
    ],
)
def test_mcnemar_exact_p_value_by_hand(only_first, only_second, expected):
    assert mcnemar_p_value(only_first, only_second) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_agrees_with_scipy_on_random_counts():
    rng = np.random.default_rng(0)
    for only_first, only_second in rng.integers(0, 60, size=(50, 2)):
        if only_first + only_second == 0:
            continue
        expected = binomtest(int(only_first), int(only_first + only_second)).pvalue
        assert mcnemar_p_value(only_first, only_second) == pytest.approx(expected, rel=1e-12)
        assert mcnemar_p_value(only_first, only_second) == pytest.approx(
            mcnemar_p_value(only_second, only_first), rel=1e-12
        )


def test_paired_difference_interval_is_newcombes_on_a_published_table():
    # The paired table (59, 6 / 16, 80) of Fagerland, Lydersen & Laake, "Statistical
    # Analysis of Contingency Tables", chapter 8: Newcombe's square-and-add interval of the
    # difference -0.0621 is (-0.1186, -0.0046).
    low, high = paired_difference_interval(59, 6, 16, 80)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)


def test_unpaired_difference_is_newcombes_hybrid_score_interval_on_a_published_table():
    # Fagerland, Lydersen & Laake, chapter 4 (Perondi et al. 2004): 7 of 34 against 1 of 34,
    # difference 0.1765, Newcombe's hybrid score interval (0.0189, 0.3404).
    difference, low, high, p_value = unpaired_difference(1, 34, 7, 34)
    assert (round(difference, 4), round(low, 4), round(high, 4)) == (0.1765, 0.0189, 0.3404)
    assert 0 < p_value < 0.06  # Fisher's exact test, two-sided: 0.054


def test_paired_difference_interval_holds_the_difference_and_narrows_with_images():
    rng = np.random.default_rng(1)
    for both, first, second, neither in rng.integers(0, 200, size=(40, 4)):
        n = both + first + second + neither
        if n == 0:
            continue
        low, high = paired_difference_interval(both, first, second, neither)
        assert -1 <= low <= (first - second) / n <= high <= 1
    small = paired_difference_interval(40, 5, 10, 45)
    large = paired_difference_interval(400, 50, 100, 450)
    assert large[1] - large[0] < small[1] - small[0]


def test_images_to_resolve_is_the_labelled_arithmetic():
    # 10 and 20 discordant of 500: q = 0.06, d = 0.02; (1.96 + 0.84)^2 * q / d^2 = 1,178.
    assert images_to_resolve(10, 20, 500) == 1178
    assert images_to_resolve(7, 7, 500) is None


def test_paired_comparison_counts_and_sentences():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    first = np.array([0, 1, 2, 0, 1, 0, 1, 2])  # 5 right
    second = np.array([0, 1, 2, 1, 1, 2, 0, 2])  # 6 right
    compared = PairedComparison.of(labels, first, second)
    assert (compared.both, compared.only_first, compared.only_second, compared.neither) == (
        4,
        1,
        2,
        1,
    )
    assert compared.difference == pytest.approx(1 / 8)
    assert "cannot tell A and B apart" in compared.verdict("A", "B")
    same = PairedComparison.of(labels, first, first.copy())
    assert same.verdict("A", "B").startswith("identical predictions")
    # 60 of 1,000 images only B got right, 10 only A: B is better, beyond doubt.
    strong = PairedComparison(1000, 800, 10, 60, 130, False)
    assert strong.verdict("A", "B").startswith("B is better than A by 5.0 points")


# --- tl-compare on a real git + DVC repository --------------------------------------------

LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
IMAGES = np.arange(10 * 4 * 4 * 3, dtype=np.uint8).reshape(10, 4, 4, 3)


def _one_hot(classes, width=3):
    return np.eye(width, dtype=np.float32)[classes]


def _write_predictions(root: Path, fine_tuned, labels=LABELS, images=IMAGES, data=None):
    (root / "eval").mkdir(exist_ok=True)
    with open(root / "eval/predictions.npz", "wb") as handle:
        np.savez(
            handle,
            labels=labels,
            fine_tuned=_one_hot(fine_tuned),
            head_only=_one_hot(labels),
            test_split_sha256=np.asarray(split_fingerprint(images, labels)),
            data_params=np.asarray(json.dumps(data or {"test_size": 10, "split_seed": 42})),
        )
    metrics = root / "dvclive/evaluate/metrics.json"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    right = float((np.asarray(fine_tuned) == labels).mean())
    metrics.write_text(json.dumps({"validation_accuracy": right, "test_accuracy": right}))


def _git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, env=tool_env())


def _dvc(root, *args):
    subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=root,
        check=True,
        capture_output=True,
        env=tool_env(),
    )


def _commit(root, message, tag):
    _dvc(root, "add", "-q", "eval/predictions.npz")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", message)
    _git(root, "tag", tag)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Four revisions of one repository: A, B (other answers, same split), C (another split),
    and NO-EVAL (evaluate never ran)."""
    root = tmp_path_factory.mktemp("compare") / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "t@example.com")
    _git(root, "config", "user.name", "t")
    _dvc(root, "init", "-q")
    _write_predictions(root, [0, 1, 2, 0, 1, 2, 1, 1, 0, 0])  # 8 of 10
    _commit(root, "A", "A")
    _write_predictions(root, [0, 1, 2, 0, 1, 2, 0, 1, 2, 1])  # 9 of 10: fixed 2, broke 1
    _commit(root, "B", "B")
    _write_predictions(
        root,
        [0, 1, 2, 0, 1, 2, 0, 1, 2, 0],
        labels=LABELS[::-1].copy(),
        images=IMAGES[::-1].copy(),
        data={"test_size": 10, "split_seed": 7},
    )
    _commit(root, "C", "C")
    _git(root, "rm", "-q", "--cached", "eval/predictions.npz.dvc")
    _git(root, "commit", "-qm", "no evaluate")
    _git(root, "tag", "NO-EVAL")
    return root


def _tl_compare(root, *args):
    return subprocess.run(
        [sys.executable, "-m", "transfer_pipeline.judging.compare", *args],
        cwd=root,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_tl_compare_two_revisions_prints_intervals_counts_p_and_a_sentence(history):
    result = _tl_compare(history, "A", "B")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split(None, 1) == ["A", describe_accuracy(8, 10)]
    assert lines[1].split(None, 1) == ["B", describe_accuracy(9, 10)]
    assert lines[2].startswith("difference (B - A): +10.0 points (paired 95 %: ")
    assert lines[3] == "images only A got right: 1; only B got right: 2"
    assert lines[4] == "McNemar exact p = 1"  # 1 vs 2 discordant: 2 * P(X <= 1 | 3) > 1
    assert lines[5].startswith("this test split cannot tell A and B apart")
    assert "would need about" in lines[5] and "(80 % power)" in lines[5]


def test_tl_compare_json_agrees_with_the_text(history):
    result = _tl_compare(history, "A", "B", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (comparison,) = report["comparisons"]
    assert (comparison["only_first_right"], comparison["only_second_right"]) == (1, 2)
    assert comparison["mcnemar_p"] == 1.0
    assert report["runs"]["B"]["images"] == 10
    low, high = comparison["difference_low"], comparison["difference_high"]
    assert low <= comparison["difference"] == 0.1 <= high


def test_tl_compare_head_only_and_several_runs_against_the_best(history):
    same = _tl_compare(history, "A", "B", "--head-only")
    assert same.returncode == 0, same.stderr
    assert "identical predictions" in same.stdout
    several = _tl_compare(history, "A", "B", "A", "--against", "best")
    assert several.returncode == 0, several.stderr
    assert several.stdout.startswith("against B: ")  # B has the higher validation accuracy
    assert "over these 3 runs: test accuracy mean 83.3 %" in several.stdout


def test_tl_compare_with_one_revision_compares_it_with_the_workspace(history):
    # The workspace holds revision C's split: a different test split.
    result = _tl_compare(history, "B")
    assert result.returncode == 1
    (line,) = stderr_lines(result)[-1:]
    assert line.startswith("error: B and workspace were evaluated on different test splits")
    assert "data.split_seed 42 vs 7" in line
    assert "unpaired (weaker" in result.stderr


@pytest.mark.parametrize(
    "revs, expected",
    [
        (["nope", "A"], "error: unknown revision 'nope': name a git revision"),
        (["A", "NO-EVAL"], "error: eval/predictions.npz is not in 'NO-EVAL': that run never"),
        (["A", "C"], "error: A and C were evaluated on different test splits"),
    ],
)
def test_tl_compare_bad_input_is_one_line_and_a_non_zero_exit(history, revs, expected):
    result = _tl_compare(history, *revs)
    assert result.returncode == 1
    errors = [line for line in stderr_lines(result) if not line.startswith("unpaired")]
    assert len(errors) == 1 and errors[0].startswith(expected), result.stderr
    assert "Traceback" not in result.stderr


def test_tl_compare_names_a_file_missing_from_the_cache_and_the_remote(history, tmp_path):
    clone = tmp_path / "clone"  # git history without the DVC cache, and no remote
    _git(tmp_path, "clone", "-q", str(history), str(clone))
    result = _tl_compare(clone, "A", "B")
    assert result.returncode == 1
    (line,) = stderr_lines(result)
    assert line.startswith("error: eval/predictions.npz of 'A' is in neither the DVC cache nor")
    assert "dvc pull" in line
