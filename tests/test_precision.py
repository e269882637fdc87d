"""compute.precision auto on CPUs (issue 13): native bfloat16 is read from the CPU flags, and
bfloat16 extraction gives the float32 features (parity measured on the tiny pipeline)."""

import keras
import numpy as np
import pytest

from transfer_pipeline.compute import cpu_bfloat16_flag, resolve_precision
from transfer_pipeline.features import extract_features
from transfer_pipeline.model import load_model, twin_extractor

FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 avx avx2 fma"


def _cpuinfo(tmp_path, *extra_flags):
    path = tmp_path / "cpuinfo"
    block = f"processor\t: 0\nmodel name\t: test\nflags\t\t: {' '.join([FLAGS, *extra_flags])}\n"
    path.write_text(block + "\n" + block.replace(": 0", ": 1"))
    return path


@pytest.mark.parametrize(
    "extra, expected",
    [
        ((), None),
        (("avx512f", "avx512_vnni"), None),  # VNNI is int8, not bfloat16
        (("avx512f", "avx512_bf16"), "avx512_bf16"),
        (("avx512_bf16", "amx_tile", "amx_bf16"), "amx_bf16"),
    ],
)
def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path, extra, expected):
    assert cpu_bfloat16_flag(_cpuinfo(tmp_path, *extra)) == expected


def test_unreadable_cpu_flags_mean_no_native_bfloat16(tmp_path):
    assert cpu_bfloat16_flag(tmp_path / "missing") is None


def test_auto_on_this_cpu_follows_its_flags_and_training_stays_float32():
    flag = cpu_bfloat16_flag()
    extraction, reason = resolve_precision("auto", frozen_only=True)
    if flag:
        assert (extraction, reason) == ("mixed_bfloat16", f"auto: CPU with {flag}")
    else:
        assert (extraction, reason) == ("float32", "auto: CPU without native bfloat16")
    training, reason = resolve_precision("auto")
    assert training == "float32" and reason.startswith("auto: ")
    assert resolve_precision("mixed_bfloat16") == ("mixed_bfloat16", "compute.precision")


def test_each_stage_writes_its_precision_and_the_reason(pipeline):
    features = pipeline.json("metrics/features.json")["compute"]
    head = pipeline.json("dvclive/train_head/metrics.json")["compute"]
    assert "; float32 (auto: " in head
    if cpu_bfloat16_flag():
        assert f"; mixed_bfloat16 (auto: CPU with {cpu_bfloat16_flag()}, saved float32); " in (
            features
        )
    else:
        assert "; float32 (auto: CPU without native bfloat16); " in features


def test_bfloat16_extraction_gives_the_float32_features_and_head_accuracy(pipeline):
    """The features stage's bfloat16 twin (same weights) against the stage's float32 output."""
    path, params = pipeline.path, pipeline.params()
    extractor = load_model(path / "models/feature_extractor.keras")
    model = params["model"]
    images = np.load(path / "data/prepared/test_x.npy")
    twin = twin_extractor(extractor, model["backbone"], model["image_size"], "mixed_bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left as it was
    batch = params["features"]["batch_size"]
    bf16 = extract_features(twin, images, batch, "test")
    float32 = np.load(path / "data/features/test.npy")
    cosine = (bf16 * float32).sum(1) / (
        np.linalg.norm(bf16, axis=1) * np.linalg.norm(float32, axis=1)
    )
    assert bf16.dtype == np.float32 and cosine.min() >= 0.999, cosine.min()

    head = load_model(path / "models/head.keras")
    labels = np.load(path / "data/prepared/test_y.npy")
    accuracy = {
        name: float((head.predict(f, batch_size=batch, verbose=0).argmax(1) == labels).mean())
        for name, f in (("bfloat16", bf16), ("float32", float32))
    }
    assert abs(accuracy["bfloat16"] - accuracy["float32"]) <= 0.005, accuracy
