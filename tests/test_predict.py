"""`tl-predict` as a user runs it: a real subprocess on the tiny pipeline's trained model."""

import csv
import subprocess
import sys

import numpy as np
import pytest
from conftest import stderr_lines, tool_env
from PIL import Image
from synthetic import CIFAR10_CLASSES

TOP_K = 3


def _predict(pipeline, *args):
    return subprocess.run(
        [sys.executable, "-m", "transfer_pipeline.predict", *map(str, args)],
        cwd=pipeline.path,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _parse(stdout: str) -> dict[str, list[tuple[str, float]]]:
    lines = {}
    for line in stdout.splitlines():
        path, ranking = line.rsplit(": ", 1)
        lines[path] = [
            (name, float(p)) for name, p in (item.split(" ") for item in ranking.split(", "))
        ]
    return lines


@pytest.fixture(scope="module")
def run(pipeline, tmp_path_factory):
    """One prediction run over new images of odd sizes and modes, one corrupt and one known."""
    root = tmp_path_factory.mktemp("predict")
    folder = root / "images"
    (folder / "nested").mkdir(parents=True)
    rng = np.random.default_rng(1)

    def pixels(height, width, *channels):
        return rng.integers(0, 256, (height, width, *channels), dtype=np.uint8)

    Image.fromarray(pixels(37, 50, 3)).save(folder / "odd.png")  # 50x37 (width x height)
    gray = Image.fromarray(pixels(61, 20))  # a 2-D array: one "L" channel
    assert gray.mode == "L"
    gray.save(folder / "nested" / "gray.png")
    Image.fromarray(pixels(33, 45, 3)).save(folder / "nested" / "photo.JPG", quality=90)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (folder / "notes.txt").write_text("not an image: ignored")
    # A stored test image, lossless at its stored size: the pipeline's own prediction is known.
    test_x = np.load(pipeline.path / "data/prepared/test_x.npy")
    known = root / "known.bmp"
    Image.fromarray(test_x[0]).save(known)

    out_csv = root / "predictions.csv"
    result = _predict(pipeline, "--top-k", TOP_K, "--csv", out_csv, folder, known)
    result.readable = {
        str(folder / "odd.png"),
        str(folder / "nested" / "gray.png"),
        str(folder / "nested" / "photo.JPG"),
        str(known),
    }
    result.broken, result.known, result.csv = folder / "broken.png", str(known), out_csv
    result.notes = folder / "notes.txt"
    return result


def test_one_line_per_readable_image_with_ranked_cifar_classes(run):
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    predictions = _parse(run.stdout)
    assert len(run.stdout.splitlines()) == len(run.readable)
    assert set(predictions) == run.readable
    for path, ranking in predictions.items():
        names = [name for name, _ in ranking]
        probabilities = [p for _, p in ranking]
        assert len(ranking) == TOP_K and len(set(names)) == TOP_K, path
        assert set(names) <= set(CIFAR10_CLASSES), path
        assert probabilities == sorted(probabilities, reverse=True), path
        assert sum(probabilities) <= 1 + 0.015, path  # printed with two decimals


def test_corrupt_image_is_skipped_with_a_warning(run):
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, run.stderr
    assert warnings[0] == f"warning: ignored 1 file(s) that are not images: {run.notes}"
    assert warnings[1].startswith(f"warning: skipped unreadable image {run.broken}")
    assert str(run.broken) not in run.stdout


def test_csv_has_top_k_rows_per_readable_image(run):
    with open(run.csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "rank", "class", "probability"]
    assert len(rows) == TOP_K * len(run.readable)
    printed = _parse(run.stdout)
    for path in run.readable:
        mine = [row for row in rows if row["path"] == path]
        assert [int(row["rank"]) for row in mine] == list(range(1, TOP_K + 1))
        assert [row["class"] for row in mine] == [name for name, _ in printed[path]]
        probabilities = [float(row["probability"]) for row in mine]
        assert probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-5


def test_prediction_equals_the_pipeline_evaluation_of_the_same_image(run, pipeline):
    """Same resize and model as prepare/evaluate: a stored test image gets the same output."""
    expected = np.load(pipeline.path / "eval/predictions.npz")["fine_tuned"][0]
    order = expected.argsort()[::-1][:TOP_K]
    with open(run.csv, newline="") as handle:
        mine = [row for row in csv.DictReader(handle) if row["path"] == run.known]
    assert [row["class"] for row in mine] == [CIFAR10_CLASSES[i] for i in order]
    np.testing.assert_allclose(
        [float(row["probability"]) for row in mine], expected[order], atol=1e-4
    )


def test_missing_model_is_one_error_line(pipeline, tmp_path):
    image = tmp_path / "image.png"
    Image.new("RGB", (8, 8)).save(image)
    result = _predict(pipeline, "--model", tmp_path / "nowhere.keras", image)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = stderr_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "nowhere.keras not found" in lines[0] and "dvc repro" in lines[0]
