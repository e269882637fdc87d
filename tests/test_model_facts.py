"""Model facts asserted on the real saved weights of the tiny pipeline run (one TF process)."""

import keras
import numpy as np
import pytest

from transfer_pipeline.data.feeding import one_hot
from transfer_pipeline.models.blocks import top_layers
from transfer_pipeline.models.features import extract_features
from transfer_pipeline.models.model import (
    backbone_of,
    batchnorm_statistics,
    build_classifier,
    load_model,
)


@pytest.fixture(scope="module")
def saved(pipeline):
    path = pipeline.path
    return {
        "extractor": load_model(path / "models/feature_extractor.keras"),
        "head": load_model(path / "models/head.keras"),
        "fine_tuned": load_model(path / "models/fine_tuned.keras"),
        "test_x": np.load(path / "data/prepared/test_x.npy"),
        "test_y": np.load(path / "data/prepared/test_y.npy"),
        "test_features": np.load(path / "data/features/test.npy"),
        "predictions": np.load(path / "eval/predictions.npz"),
        # CPU kernels round differently per batch size: compare at the stage's own batch.
        "batch": pipeline.params()["features"]["batch_size"],
        "unfreeze": pipeline.params()["fine_tune"]["unfreeze"],
    }


def _kernels(model):
    return [w.numpy() for w in model.weights if "kernel" in w.path]


def test_frozen_phase_leaves_the_base_bit_identical(saved):
    """Training the head end-to-end through the frozen base changes no base weight at all."""
    extractor = saved["extractor"]
    base = backbone_of(extractor)
    before = [w.numpy() for w in base.weights]
    model = build_classifier(extractor, keras.models.clone_model(saved["head"]))
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(
        saved["test_x"][:64], one_hot(saved["test_y"][:64], 10), epochs=1, batch_size=32, verbose=0
    )
    after = [w.numpy() for w in base.weights]
    assert len(before) == len(after) > 0
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert not base.trainable_weights


def test_fine_tuning_changes_the_unfrozen_kernels_only_and_no_batchnorm_statistics(saved):
    frozen = backbone_of(saved["extractor"])
    tuned = backbone_of(backbone_of(saved["fine_tuned"]))  # classifier -> extractor -> base
    # The tiny pipeline's top N blocks (ResNet50's conv5_block2 and conv5_block3 for N = 2),
    # trained from the boundary stage's cache.
    unfrozen = {layer.name for layer in top_layers(frozen, "resnet50", saved["unfreeze"])}
    assert {"conv5_block2_1_conv", "conv5_block3_3_conv"} <= unfrozen
    assert "conv5_block1_1_conv" not in unfrozen
    changed = {True: [], False: []}  # unfrozen layer? -> changed kernels
    for before, after in zip(frozen.layers, tuned.layers, strict=True):
        for a, b in zip(_kernels(before), _kernels(after), strict=True):
            changed[before.name in unfrozen].append(not np.array_equal(a, b))
    assert len(changed[True]) > 3 and all(changed[True]), "every unfrozen kernel was trained"
    assert len(changed[False]) > 10 and not any(changed[False]), "the others were not"
    stats_before, stats_after = batchnorm_statistics(frozen), batchnorm_statistics(tuned)
    assert len(stats_before) == len(stats_after) > 10
    assert all(np.array_equal(a, b) for a, b in zip(stats_before, stats_after))


def test_saved_models_reload_in_safe_mode_with_the_same_predictions(saved):
    again = saved["fine_tuned"].predict(saved["test_x"], verbose=0)  # loaded with safe_mode=True
    np.testing.assert_allclose(again, saved["predictions"]["fine_tuned"], atol=1e-5)
    head_again = saved["head"].predict(saved["test_features"], verbose=0)
    np.testing.assert_allclose(head_again, saved["predictions"]["head_only"], atol=1e-5)


def test_head_on_cached_test_features_is_the_shipped_frozen_model(saved):
    """What evaluate reports for fine_tune.epochs 0 (the head on the cached test features) is
    the shipped extractor + head: the test features are the saved float32 extractor's, whatever
    precision extracted train and validation, and every test image gets the same class."""
    extractor, images, batch = saved["extractor"], saved["test_x"], saved["batch"]
    stored = extract_features(extractor, images, batch, "test")
    np.testing.assert_allclose(stored, saved["test_features"], rtol=1e-5, atol=1e-6)
    on_features = saved["head"].predict(saved["test_features"], verbose=0)
    full = build_classifier(extractor, saved["head"]).predict(images, verbose=0)
    np.testing.assert_allclose(full, on_features, atol=1e-5)
    assert np.array_equal(full.argmax(1), on_features.argmax(1))
