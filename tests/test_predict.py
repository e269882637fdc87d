"""`tl-predict` as a user runs it: a real subprocess on the tiny pipeline's trained model."""

import csv
import json
import os
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
        [sys.executable, "-m", "transfer_pipeline.shipping.predict", *map(str, args)],
        cwd=getattr(pipeline, "path", pipeline),
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


def _tiny_onnx_classifier(path, side=8, classes=10):
    """A real ONNX classifier of side x side uint8 images (mean colour -> softmax): tl-predict
    without a trained pipeline and without TensorFlow."""
    import onnx
    from onnx import TensorProto, helper

    weights = np.linspace(-1, 1, 3 * classes, dtype=np.float32).reshape(3, classes)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["images"], ["pixels"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["pixels", "axes"], ["mean"], keepdims=0),
            helper.make_node("MatMul", ["mean", "weights"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, [None, side, side, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, classes])],
        [
            helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
            helper.make_tensor("weights", TensorProto.FLOAT, weights.shape, weights.ravel()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, path)


def test_a_fifo_named_like_an_image_is_skipped_and_nothing_classified_is_an_error(tmp_path):
    """A named pipe called x.jpg is one line and never opened (the read would wait for ever);
    the last line counts what was skipped; a run that classifies nothing fails."""
    _tiny_onnx_classifier(tmp_path / "model.onnx")
    (tmp_path / "classes.json").write_text(json.dumps(CIFAR10_CLASSES))
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (12, 9), (200, 30, 30)).save(folder / "photo.png")
    os.mkfifo(folder / "x.jpg")
    only_fifo = tmp_path / "only_fifo"
    only_fifo.mkdir()
    os.mkfifo(only_fifo / "y.png")
    model = ("--model", "model.onnx", "--classes", "classes.json")

    # _predict's timeout fails the test if a read waits on the FIFO.
    result = _predict(tmp_path, *model, "photos")
    assert result.returncode == 0, result.stderr
    assert [line.split(": ")[0] for line in result.stdout.splitlines()] == ["photos/photo.png"]
    assert stderr_lines(result) == [
        "warning: ignored 1 file(s) that are not regular files (a FIFO, a socket or a device: "
        "reading one could wait forever): photos/x.jpg",
        "tl-predict: classified 1 image(s), skipped 1 file(s) (see the warnings above)",
    ]

    result = _predict(tmp_path, *model, "--csv", "out.csv", "photos")
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result)[-1] == (
        f"wrote {TOP_K} rows to out.csv; classified 1 image(s), skipped 1 file(s) "
        "(see the warnings above)"
    )

    for paths in (["only_fifo"], ["only_fifo/y.png"]):  # a folder, or the FIFO named itself
        result = _predict(tmp_path, *model, *paths)
        assert result.returncode == 1, result.stderr
        assert result.stdout == ""
        assert stderr_lines(result) == [
            "warning: ignored 1 file(s) that are not regular files (a FIFO, a socket or a "
            "device: reading one could wait forever): only_fifo/y.png",
            "error: no image files (any format Pillow reads: .jpg .png .tif .webp .bmp ...) "
            f"in {paths[0]}; skipped 1 file(s)",
        ], paths
