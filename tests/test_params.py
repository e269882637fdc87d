"""Params validation: every key checked before any work; each error names key and choices."""

import pytest
import yaml
from conftest import REPO_ROOT

from transfer_pipeline.plumbing import params as params_module
from transfer_pipeline.plumbing.param_checks import warnings_about
from transfer_pipeline.plumbing.param_schema import (
    CIFAR100_MD5,
    CIFAR100_URL,
    SEED_RECIPE,
    ParamError,
    flatten,
)
from transfer_pipeline.plumbing.params import (
    declared_params,
    load_params,
    params_unchanged,
    validate,
)
from transfer_pipeline.running.expected_time import expected_run


def default_params():
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def test_the_shipped_defaults_are_the_seed_recipe():
    params = validate(default_params())
    assert params["lr"] == 0.001 and params["fine_tune"]["lr"] == 1e-5
    assert params["model"]["backbone"] == "xception" and params["model"]["weights"] == "imagenet"
    assert params["model"]["image_size"] == 224 and params["model"]["head_units"] == [256, 128, 64]
    assert [params["data"][f"{s}_size"] for s in ("train", "val", "test")] == [35000, 15000, 10000]
    assert params["train_head"] == {
        "steps_per_execution": 256,
        "epochs": 15,
        "batch_size": 32,
        "optimizer": "adam",
        "momentum": 0.9,
    }
    assert params["fine_tune"]["optimizer"] == "adam"
    assert params["fine_tune"]["epochs"] == 15 and params["fine_tune"]["batch_size"] == 32
    flat = flatten(params)
    assert {key: flat[key] for key in SEED_RECIPE} == SEED_RECIPE  # what a small run is below


def test_dvc_set_scientific_notation_is_read_as_a_number():
    raw = default_params()
    raw["lr"] = "1e-4"  # what PyYAML reads back after `dvc exp run -S lr=1e-4`
    assert validate(raw)["lr"] == pytest.approx(1e-4)


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        (None, "lr", -1, "lr = -1 is not allowed; expected a number > 0"),
        ("fine_tune", "epochs", -1, "fine_tune.epochs = -1 is not allowed; expected an integer"),
        ("compute", "precision", "fp8", "expected one of auto, float32, mixed_float16"),
        ("compute", "backend", "torch", "expected one of tensorflow, jax"),
        # Removed: MultiWorkerMirroredStrategy does not train under Keras 3.15
        # (docs/gpus-and-clusters.md).
        ("compute", "distribute", "multi_worker", "expected one of auto, none, mirrored"),
        (
            "model",
            "image_size",
            32,
            "model.image_size = 32 is too small for xception; expected >= 71",
        ),
        ("model", "weights", "/tmp/x.h5", "under weights/"),
        ("model", "weights", "weights/../../x.h5", "without '..'"),
        ("data", "source", "/home/me/cifar-10-python.tar.gz", "a URL or a path under data/raw/"),
        ("data", "source", "data/raw/../../x.tar.gz", "without '..'"),
        ("data", "source", "data/raw", "a URL or a path under data/raw/"),
        ("data", "dataset", "mnist", "data.dataset = 'mnist' is not allowed"),
        ("fine_tune", "unfreeze", "some", "all, or an integer >= 1"),
        ("fine_tune", "unfreeze", 0, "all, or an integer >= 1 .the number of top backbone blocks"),
        ("fine_tune", "unfreeze", True, "all, or an integer >= 1"),
        (
            "fine_tune",
            "unfreeze",
            15,
            "fine_tune.unfreeze = 15 counts blocks from the top of the base; xception has 14: "
            "use 1 to 14, or all",
        ),
        ("data", "md5", "abc", "32-character"),
        (
            "export",
            "formats",
            ["onnx", "tensorrt"],
            "export.formats = .* is not allowed; expected a non-empty list of distinct formats "
            "from saved_model, onnx, litert, litert_int8",
        ),
        ("export", "formats", [], "a non-empty list of distinct formats from saved_model, onnx"),
        ("export", "formats", ["onnx", "onnx"], "distinct formats"),
        ("export", "latency_runs", 0, "export.latency_runs = 0 is not allowed"),
        ("export", "parity_pp", -1, "expected a number >= 0.0"),
        ("export", "parity_int8_changed_pp", 101, "export.parity_int8_changed_pp = 101 is not"),
        ("export", "parity_int8_probability", 1.5, "export.parity_int8_probability = 1.5 is not"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(section, key, value, message):
    raw = default_params()
    (raw[section] if section else raw)[key] = value
    with pytest.raises(ParamError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        validate(raw)
    assert "\n" not in str(error.value)


def test_all_problems_are_reported_at_once():
    raw = default_params()
    raw["lr"] = 0
    raw["fine_tune"]["batch_size"] = "big"
    del raw["seed"]
    message = str(pytest.raises(ParamError, validate, raw).value)
    assert (
        "lr = 0" in message and "fine_tune.batch_size" in message and "seed is missing" in message
    )


def test_cifar100_with_the_default_source_uses_the_official_cifar100_url_and_md5():
    raw = default_params()
    raw["data"]["dataset"] = "cifar100"
    data = validate(raw)["data"]
    assert data["source"] == CIFAR100_URL and data["md5"] == CIFAR100_MD5


def test_params_changed_after_loading_are_detected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(params_module, "_loaded", {})  # this process's record only
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(default_params()))
    load_params()
    params_unchanged("train_head")  # unchanged: passes
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**default_params(), "lr": 0.002}))
    with pytest.raises(ParamError, match="params.yaml changed while train_head ran"):
        params_unchanged("train_head")


def test_the_default_export_is_a_server_set_with_the_issues_parity_limits():
    export = validate(default_params())["export"]
    assert export["formats"] == ["saved_model", "onnx"]
    assert export["parity_pp"] == 0.1 and export["parity_int8_pp"] == 1.5
    assert export["parity_int8_changed_pp"] == 3.0 and export["parity_int8_probability"] == 0.3


def test_each_export_stage_reads_only_its_declared_params(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    assert set(load_params("export")["export"]) == {
        "latency_runs",
        "calibration_images",
        "parity_images",
        "parity_pp",
        "parity_int8_pp",
        "parity_int8_changed_pp",
        "parity_int8_probability",
    }
    assert load_params("export@onnx") == load_params("export")
    assert load_params("report")["export"] == {"formats": ["saved_model", "onnx"]}


def test_a_small_cifar10_run_is_reported_as_a_small_run_not_the_seeds_recipe(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    assert warnings_about(validate(default_params())) == []
    raw = default_params()
    raw["data"].update(train_size=2000, val_size=250, test_size=500)
    raw["fine_tune"]["epochs"] = 1
    params = validate(raw)
    report = params_module._only(params, declared_params("report"))
    (note,) = warnings_about(report)
    assert note.startswith("a small run, not the seed's recipe: data.train_size 2,000 (the seed's")
    assert "fine_tune.epochs 1 (the seed's 15)" in note and "train_head" not in note
    # A stage that does not read the sizes (features) gets no such note; nor do your own images.
    assert warnings_about(params_module._only(params, declared_params("features"))) == []
    raw["data"].update(dataset="image_folder", source="data/raw/my_photos")
    assert warnings_about(validate(raw)) == []


def test_the_expected_time_is_arithmetic_from_the_rates_measured_here():
    sizes = {"train": 2000, "val": 250, "test": 500}
    # A 2-core Zen 3 (issue 46): forward 5.6 images/s, the whole base trained at 1.7: 2,750
    # images in 8 min; an epoch 2,000 / 1.7 + 250 / 5.6 s = 20 min. The exit flow (11.5 % of
    # Xception's multiply-adds) trained at 15 images/s: 2,000 / 15 + 250 x 0.115 / 5.6 s =
    # 2 min per epoch, after a cache of 2,250 x 0.885 / 5.6 s = 6 min.
    line = expected_run(5.6, sizes, 1.7, {1: (30.0, 0.051), 2: (15.0, 0.115)})
    assert "features about 8 min for these 2,750 images" in line
    assert "a fine-tuning epoch (2,000 + 250 images) of the whole base about 20 min" in line
    assert "of the top 2 blocks from the cache about 2 min (the cache once, 6 min)" in line
    assert "of the top 1 block from the cache about 69 s" in line
    assert (
        "(measured here, images a second: forward 5.6; training whole base 1.7, top 1 "
        "30.0, top 2 15.0)" in line
    )
    assert "block" not in expected_run(5.6, sizes, 1.7, {})  # no blocks to count


def test_counted_blocks_are_refused_for_keras_hub_presets_in_one_line():
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["model"].update(backbone="dinov2_small", image_size=224)
    raw["fine_tune"]["unfreeze"] = 2
    with pytest.raises(ParamError) as error:
        validate(raw)
    assert (
        "dinov2_small is a KerasHub preset, which the pipeline does not cut into blocks: "
        "use all" in str(error.value)
    )
    assert "\n" not in str(error.value)
    raw["fine_tune"]["unfreeze"] = "all"
    validate(raw)
    # Head only (README's DINOv2 recipe): nothing is fine-tuned, so a count is not an error.
    raw["fine_tune"].update(unfreeze=2, epochs=0)
    validate(raw)


@pytest.mark.parametrize(
    "compute, message",
    [
        (
            {"distribute": "multi_host"},  # on the default backend, tensorflow
            "compute.distribute = multi_host runs on JAX's multi-process runtime; set "
            "compute.backend = jax",
        ),
        (
            {"launcher": "srun"},  # without multi_host every host would train alone
            "compute.launcher = 'srun' starts a stage on several hosts; set "
            "compute.distribute = multi_host too",
        ),
        ({"launcher": "srun\nrm -rf ."}, "a command prefix on one line"),
        (
            {"backend": "jax", "distribute": "multi_host"},  # nothing would start the others
            "compute.distribute = multi_host needs compute.launcher, the command that starts "
            "each model stage on every host",
        ),
    ],
)
def test_multi_host_settings_that_cannot_work_are_refused_in_one_line(compute, message):
    raw = default_params()
    raw["compute"].update(compute)
    with pytest.raises(ParamError, match=message.replace("(", r"\(")) as error:
        validate(raw)
    assert "\n" not in str(error.value)


def test_multi_host_with_a_launcher_on_jax_is_accepted():
    raw = default_params()
    raw["compute"].update(backend="jax", distribute="multi_host", launcher=" srun -N 2 ")
    assert validate(raw)["compute"]["launcher"] == "srun -N 2"
