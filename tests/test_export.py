"""The export stage: every format its own DVC stage, checked in its own runtime; tl-predict on
the exported files (ONNX without TensorFlow or Keras); one line for each kind of bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import stderr_lines, tool_env
from PIL import Image

from transfer_pipeline.errors import PipelineError
from transfer_pipeline.export import check_parity

BLOCKED_IMPORTS = Path(__file__).parent / "blocked_imports"
DEFAULT_FORMATS = ["saved_model", "onnx"]
MODEL_FILES = {
    "saved_model": "saved_model.pb",
    "onnx": "model.onnx",
    "litert": "model.tflite",
    "litert_int8": "model.tflite",
}


def _export_args(fmt: str, predictions="eval/predictions.npz", out=None, metrics=None):
    return [
        sys.executable,
        "-m",
        "stages.export",
        fmt,
        "data/prepared",
        "models/fine_tuned.keras",
        str(predictions),
        str(out or f"models/export/{fmt}"),
        str(metrics or f"metrics/export/{fmt}.json"),
    ]


def _one_error_line(result) -> str:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = stderr_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _keras_accuracy(repo) -> float:
    return repo.json("dvclive/evaluate/metrics.json")["test_accuracy"]


def test_every_default_format_is_exported_with_parity_size_and_latency(pipeline):
    ran = pipeline.ran_stages(pipeline.first_repro_log)
    assert {f"export@{fmt}" for fmt in DEFAULT_FORMATS} <= ran
    keras_accuracy = _keras_accuracy(pipeline)
    for fmt in DEFAULT_FORMATS:
        assert (pipeline.path / "models/export" / fmt / MODEL_FILES[fmt]).is_file(), fmt
        metrics = pipeline.json(f"metrics/export/{fmt}.json")
        assert set(metrics) == {"runtime_test_accuracy", "latency_ms", "images_per_s", "size_mb"}
        assert abs(metrics["runtime_test_accuracy"] - keras_accuracy) <= 0.001, (fmt, metrics)
        on_disk = sum(f.stat().st_size for f in (pipeline.path / "models/export" / fmt).rglob("*"))
        assert metrics["size_mb"] == pytest.approx(on_disk / 2**20, abs=0.01), (fmt, metrics)
        assert metrics["latency_ms"] > 0, metrics
        assert metrics["images_per_s"] > 0, metrics
    report = (pipeline.path / "report/report.md").read_text()
    assert "## Exported models" in report
    rows = [line for line in report.splitlines() if line.startswith(("| saved_model", "| onnx"))]
    assert len(rows) == 2 and all("+0.00 pp" in row for row in rows), rows


def test_each_format_is_its_own_stage_with_its_own_outputs(pipeline):
    lock = yaml.safe_load((pipeline.path / "dvc.lock").read_text())["stages"]
    for fmt in DEFAULT_FORMATS:
        stage = lock[f"export@{fmt}"]
        assert [out["path"] for out in stage["outs"]] == [
            f"metrics/export/{fmt}.json",
            f"models/export/{fmt}",
        ] or [out["path"] for out in stage["outs"]] == [
            f"models/export/{fmt}",
            f"metrics/export/{fmt}.json",
        ], stage["outs"]
        assert "--" not in stage["cmd"] and f"stages.export {fmt} " in stage["cmd"]
    assert "metrics/export" in [dep["path"] for dep in lock["report"]["deps"]]
    assert "Data and pipelines are up to date" in pipeline.dvc("status").stdout


@pytest.fixture(scope="module")
def images(pipeline, tmp_path_factory):
    """Stored test images, lossless at their stored size, plus one new image of odd size."""
    folder = tmp_path_factory.mktemp("export-images")
    test_x = np.load(pipeline.path / "data/prepared/test_x.npy")
    for i in range(6):
        Image.fromarray(test_x[i]).save(folder / f"test_{i}.png")
    pixels = np.random.default_rng(3).integers(0, 256, (41, 27, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "odd.png")
    return folder


def _predict(pipeline, model, images, env=None):
    result = subprocess.run(
        [sys.executable, "-m", "transfer_pipeline.predict", "--model", model, "--top-k", "10"]
        + [str(images)],
        cwd=pipeline.path,
        env={**tool_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    ranked = {}
    for line in result.stdout.splitlines():
        path, ranking = line.rsplit(": ", 1)
        ranked[path] = [item.split(" ") for item in ranking.split(", ")]
    return ranked


def _same_top_k(mine, reference):
    """Every class's probability (all ten are printed) within what two decimals allow, so each
    top-k follows; classes whose probabilities tie may rank in either order (which one a
    runtime puts first is its rounding, and that differs between CPUs)."""
    assert set(mine) == set(reference) and len(mine) == 7
    for path, ranking in reference.items():
        expected = {name: float(p) for name, p in ranking}
        got = {name: float(p) for name, p in mine[path]}
        assert got.keys() == expected.keys() and len(expected) == 10, path
        for name, p in expected.items():
            assert abs(got[name] - p) <= 0.011, (path, name, got[name], p)


def test_tl_predict_on_onnx_with_tensorflow_and_keras_blocked_gives_the_keras_top_k(
    pipeline, images
):
    blocked = {"PYTHONPATH": str(BLOCKED_IMPORTS), "BLOCKED_IMPORTS": "tensorflow,keras"}
    probe = subprocess.run(
        [sys.executable, "-c", "import keras"],
        env={**tool_env(), **blocked},
        capture_output=True,
        text=True,
    )
    assert probe.returncode != 0 and "blocked in this test" in probe.stderr
    keras_top = _predict(pipeline, "models/fine_tuned.keras", images)
    _same_top_k(_predict(pipeline, "models/export/onnx/model.onnx", images, blocked), keras_top)
    # The per-format folder works too (here the SavedModel, in TensorFlow).
    _same_top_k(_predict(pipeline, "models/export/saved_model", images), keras_top)


def test_litert_formats_run_only_their_new_stages_and_keep_parity(pipeline_copy, images):
    repo = pipeline_copy
    formats = [*DEFAULT_FORMATS, "litert", "litert_int8"]
    repo.set_params({"export": {"formats": formats}})
    result = repo.dvc("repro")
    assert repo.ran_stages(result.stdout) == {"export@litert", "export@litert_int8", "report"}
    keras_accuracy = _keras_accuracy(repo)
    params = repo.params()["export"]
    for fmt in ("litert", "litert_int8"):
        tolerance = params["parity_pp" if fmt == "litert" else "parity_int8_pp"]
        metrics = repo.json(f"metrics/export/{fmt}.json")
        assert (repo.path / "models/export" / fmt / "model.tflite").is_file()
        assert 100 * abs(metrics["runtime_test_accuracy"] - keras_accuracy) <= tolerance, (
            fmt,
            metrics,
        )
    sizes = {fmt: report_size(repo, fmt) for fmt in formats}
    assert sizes["litert_int8"] < sizes["litert"] < sizes["onnx"], sizes  # int8 < fp16 < fp32
    report = (repo.path / "report/report.md").read_text()
    assert all(f"| {fmt} |" in report for fmt in formats), report
    keras_top = _predict(repo, "models/fine_tuned.keras", images)
    _same_top_k(_predict(repo, "models/export/litert/model.tflite", images), keras_top)
    # Back to the defaults: litert's metrics file is stale and the report ignores it.
    repo.set_params({"export": {"formats": DEFAULT_FORMATS}})
    result = repo.dvc("repro")
    assert repo.ran_stages(result.stdout) <= {"report"}
    assert "| litert |" not in (repo.path / "report/report.md").read_text()


def report_size(repo, fmt: str) -> float:
    """The size column of the report's export table (MB)."""
    for line in (repo.path / "report/report.md").read_text().splitlines():
        if line.startswith(f"| {fmt} |"):
            return float(line.split("|")[4])
    raise AssertionError(f"no {fmt} row in the report")


def _run_export(repo, fmt: str, out, metrics, env: dict | None = None):
    """The export stage's command run by hand, as a user would, outside DVC."""
    return subprocess.run(
        _export_args(fmt, out=out, metrics=metrics),
        cwd=repo.path,
        env={**tool_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unknown_format_is_one_line_and_names_the_formats(pipeline):
    result = _run_export(pipeline, "tensorrt", "/nowhere/x", "/nowhere/x.json")
    line = _one_error_line(result)
    assert "unknown export format 'tensorrt'" in line
    assert "saved_model, onnx, litert, litert_int8" in line


def test_missing_converter_is_one_line_naming_the_extra(pipeline, tmp_path):
    blocked = {"PYTHONPATH": str(BLOCKED_IMPORTS), "BLOCKED_IMPORTS": "tf2onnx"}
    result = _run_export(pipeline, "onnx", tmp_path / "onnx", tmp_path / "onnx.json", blocked)
    line = _one_error_line(result)
    assert "export format onnx needs tf2onnx" in line
    assert 'pip install -e ".[export]"' in line
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_parity_beyond_the_tolerance_is_one_line():
    check_parity("onnx", 0.9413, 0.9414, 0.1)  # 0.01 points: within
    with pytest.raises(PipelineError) as error:
        check_parity("litert_int8", 0.90, 0.92, 1.5)
    assert str(error.value) == (
        "litert_int8: test accuracy 90.00 % differs from the Keras model's 92.00 % by 2.00 "
        "points (allowed 1.5); nothing was replaced"
    )


def test_a_parity_failure_in_the_stage_replaces_nothing(pipeline_copy, tmp_path):
    """The exported model disagrees with (doctored) Keras predictions: the stage fails."""
    repo = pipeline_copy
    before = repo.snapshot()
    keras_side = dict(np.load(repo.path / "eval/predictions.npz"))
    keras_side["fine_tuned"] = np.roll(keras_side["fine_tuned"], 1, axis=1)  # other classes
    doctored = tmp_path / "doctored.npz"
    np.savez(doctored, **keras_side)
    result = repo.run(*_export_args("saved_model", predictions=doctored), check=False)
    line = _one_error_line(result)
    assert line.startswith("error: saved_model: test accuracy ") and "nothing was replaced" in line
    assert repo.snapshot() == before
    assert not list((repo.path / "models/export").glob(".partial-*"))


def test_mixed_precision_models_are_exported_in_float32(tmp_path):
    import keras

    from transfer_pipeline.export import convert, float32_copy
    from transfer_pipeline.model import all_layers
    from transfer_pipeline.runtimes import load

    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        inputs = keras.Input((8, 8, 3), dtype="uint8")
        x = keras.layers.Rescaling(1 / 255)(keras.ops.cast(inputs, "float32"))
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(x))
        outputs = keras.layers.Dense(3, activation="softmax", dtype="float32")(x)
        keras.Model(inputs, outputs).save(tmp_path / "mixed.keras")
    finally:
        keras.config.set_dtype_policy("float32")
    mixed = keras.models.load_model(tmp_path / "mixed.keras")
    assert any(layer.dtype_policy.name == "mixed_bfloat16" for layer in mixed.layers)
    rebuilt = float32_copy(mixed)
    assert {layer.dtype_policy.name for layer in all_layers(rebuilt)} == {"float32"}
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    (tmp_path / "onnx").mkdir()
    exported = load(convert(mixed, "onnx", tmp_path / "onnx"))
    np.testing.assert_allclose(
        exported.predict(images), rebuilt.predict(images, verbose=0), atol=1e-5
    )
    assert np.abs(exported.predict(images) - mixed.predict(images, verbose=0)).max() < 0.02


def test_a_model_that_fails_to_convert_is_one_line(tmp_path):
    import keras

    class NumpyInside(keras.Model):  # .numpy() cannot be traced into a graph
        def call(self, x):
            return keras.ops.convert_to_tensor(np.asarray(x.numpy()).astype("float32") / 255)

    from transfer_pipeline.export import convert

    model = NumpyInside()
    model(np.zeros((1, 4, 4, 3), dtype="uint8"))
    (tmp_path / "onnx").mkdir()
    with pytest.raises(PipelineError) as error:
        convert(model, "onnx", tmp_path / "onnx")
    message = str(error.value)
    assert message.startswith("exporting the model as onnx failed (") and "\n" not in message
    assert json.dumps(message)  # plain text
