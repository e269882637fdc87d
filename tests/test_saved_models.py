"""Stage outputs saved by `save_model`: same model, same bytes; no optimizer state inside."""

import hashlib
import io
import time
import zipfile

import h5py
import keras
import numpy as np
import pytest

from transfer_pipeline.data.feeding import one_hot
from transfer_pipeline.models.blocks import top_layers
from transfer_pipeline.models.model import (
    backbone_of,
    build_classifier,
    build_feature_extractor,
    build_head,
    unfreeze,
)
from transfer_pipeline.models.saving import save_model

SIDE, CLASSES = 32, 3


def _extractor(seed: int = 0) -> keras.Model:
    """A small random-weight extractor; the same seed in a clean session gives the same model."""
    keras.backend.clear_session()  # layer names restart from "dense", as in a fresh process
    keras.utils.set_random_seed(seed)
    return build_feature_extractor("mobilenet_v2", SIDE, SIDE, None)


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _h5_groups(path) -> list[str]:
    with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as member:
        with h5py.File(io.BytesIO(member.read()), "r") as weights:
            names = []
            weights.visit(names.append)
    return names


def test_the_same_model_saves_to_the_same_bytes(tmp_path):
    extractor = _extractor()
    save_model(extractor, tmp_path / "first.keras")
    time.sleep(2)  # zip entry times have a 2 s resolution, Keras' date_saved 1 s
    save_model(extractor, tmp_path / "again.keras")
    save_model(_extractor(), tmp_path / "rebuilt.keras")
    assert _md5(tmp_path / "first.keras") == _md5(tmp_path / "again.keras")
    assert _md5(tmp_path / "first.keras") == _md5(tmp_path / "rebuilt.keras")

    kernel = extractor.weights[0]
    values = keras.ops.convert_to_numpy(kernel)
    values.flat[0] += 1e-3
    kernel.assign(values)
    save_model(extractor, tmp_path / "changed.keras")
    assert _md5(tmp_path / "changed.keras") != _md5(tmp_path / "first.keras")


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory):
    """Extractor, head and classifier trained like train_head and fine_tune (one eager step
    each: the optimizer state is what counts here), saved as stage outputs."""
    folder = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, SIDE, SIDE, 3), dtype=np.uint8)
    labels = one_hot(rng.integers(0, CLASSES, len(images)), CLASSES)
    extractor = _extractor()
    head = build_head(extractor.output.shape[-1], [16], 0.1, CLASSES)
    head.compile(optimizer="adam", loss="categorical_crossentropy", run_eagerly=True)
    features = rng.normal(size=(len(images), head.input.shape[-1]))
    head.fit(features, labels, batch_size=16, verbose=0)
    save_model(extractor, folder / "extractor.keras")
    save_model(head, folder / "head.keras")
    # The head stays compiled with its Adam state, nested in the classifier: dropped too.
    classifier = build_classifier(extractor, head, augment_seed=0)
    unfreeze(backbone_of(extractor), "all")
    classifier.compile(
        optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy", run_eagerly=True
    )
    classifier.fit(images, labels, batch_size=16, verbose=0)
    save_model(classifier, folder / "fine_tuned.keras")
    return {"folder": folder, "model": classifier, "images": images}


def test_saved_model_reloads_in_safe_mode_with_identical_predictions(fine_tuned):
    path = fine_tuned["folder"] / "fine_tuned.keras"
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert not reloaded.compiled
    images = fine_tuned["images"]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(reloaded(images, training=False)),
        keras.ops.convert_to_numpy(fine_tuned["model"](images, training=False)),
    )


def test_fine_tuned_model_carries_no_optimizer_state(fine_tuned, tmp_path):
    folder = fine_tuned["folder"]
    parts = sum((folder / name).stat().st_size for name in ("extractor.keras", "head.keras"))
    size = (folder / "fine_tuned.keras").stat().st_size
    assert size == pytest.approx(parts, rel=0.1)
    fine_tuned["model"].save(tmp_path / "with_optimizer.keras")  # as the resume checkpoints
    assert (tmp_path / "with_optimizer.keras").stat().st_size > 2.5 * size, "Adam's 2 moments"
    for name in ("fine_tuned.keras", "head.keras"):
        groups = _h5_groups(folder / name)
        assert any(group.endswith("/vars") for group in groups)
        assert not [group for group in groups if "optimizer" in group.split("/")], name


def test_a_forced_rerun_reproduces_every_output_byte_for_byte_and_nothing_cascades(
    pipeline_copy,
):
    """Determinism on CPU: the same params and seed, prepare, features and train_head forced,
    give the same split, features and models, byte for byte, so fine_tune onwards stays up to
    date. fine_tune's own determinism: test_reliability.py (a killed and resumed run equals an
    uninterrupted one, weight for weight)."""
    repo = pipeline_copy
    forced = ("prepare", "features", "train_head")
    outputs = [
        "data/prepared",
        "data/features",
        "models/feature_extractor.keras",
        "models/head.keras",
        "metrics/prepare.json",
    ]
    before = repo.snapshot()
    result = repo.dvc("repro", "-f", "-s", *forced)
    assert repo.ran_stages(result.stdout) == set(forced)
    after = repo.snapshot()
    compared = [path for path in before if path.startswith(tuple(outputs))]
    assert len(compared) > 10
    assert {path: after[path] for path in compared} == {path: before[path] for path in compared}
    assert repo.dvc("status", "--json").stdout.strip() == "{}"


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_model_trained_in_mixed_precision_is_saved_as_its_float32_computation(policy, tmp_path):
    """Keras keeps a mixed model's variables in float32: the saved model is those weights in
    float32 layers, which compute what export's float32 rebuild of the model in memory does.
    mixed_float16 trains on the CPU too (slowly: no float16 arithmetic there, see
    docs/gpus-and-clusters.md); a GPU of compute capability 7.x trains in it under auto."""
    from conftest import mixed_policies

    from transfer_pipeline.models.model import load_model
    from transfer_pipeline.shipping.export import float32_copy

    keras.backend.clear_session()  # it resets the dtype policy too: set the policy after it
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        extractor = build_feature_extractor("mobilenet_v2", SIDE, SIDE, None)
        classifier = build_classifier(
            extractor, build_head(extractor.output.shape[-1], [8], 0.1, 3)
        )
        base = backbone_of(extractor)
        unfreeze(base, top_layers(base, "mobilenet_v2", 1))
        classifier.compile(optimizer="adam", loss="categorical_crossentropy")
        images = np.random.default_rng(0).integers(0, 256, (8, SIDE, SIDE, 3), dtype=np.uint8)
        classifier.train_on_batch(images, one_hot(np.arange(8) % CLASSES, CLASSES))
    finally:
        keras.config.set_dtype_policy(previous)
    assert mixed_policies_of(classifier) and mixed_policies_of(classifier)[0] == policy
    save_model(classifier, tmp_path / "model.keras")
    assert mixed_policies(tmp_path / "model.keras") == []
    saved = load_model(tmp_path / "model.keras")
    assert not mixed_policies_of(saved)
    rebuilt = float32_copy(classifier)
    for mine, theirs in zip(saved.weights, rebuilt.weights, strict=True):
        assert mine.dtype == "float32" and np.array_equal(mine.numpy(), theirs.numpy())
    np.testing.assert_allclose(
        saved.predict(images, verbose=0), rebuilt.predict(images, verbose=0), atol=1e-6
    )


def mixed_policies_of(model) -> list[str]:
    from transfer_pipeline.models.model import all_layers

    return [
        layer.dtype_policy.name
        for layer in all_layers(model)
        if layer.dtype_policy.name.startswith("mixed_")
    ]
