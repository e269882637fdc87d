"""fine_tune.unfreeze: N trains the top N blocks; without augmentation from a cache of the output
below them (transfer_pipeline/models/blocks.py, stages/boundary.py). In process, real Keras models
with random weights at the smallest sizes they accept."""

from __future__ import annotations

import shutil

import keras
import numpy as np
import pytest

from transfer_pipeline.data.feeding import ArrayBatches, one_hot
from transfer_pipeline.models.backbones import BLOCKS
from transfer_pipeline.models.blocks import (
    AsFloat32,
    boundaries,
    cache_plan,
    ensure_room,
    top_layers,
    trainable_top,
    trunk,
    write_cache,
)
from transfer_pipeline.models.model import (
    backbone_of,
    build_classifier,
    build_feature_extractor,
    build_head,
    load_model,
    unfreeze,
)
from transfer_pipeline.models.saving import save_model
from transfer_pipeline.plumbing.errors import PipelineError

SMALLEST = {"xception": 71, "inception_v3": 75}  # the others accept 32 px


def _twins(tmp_path, backbone="resnet50", size=32):
    """Two classifiers with the same random weights (saved once, loaded twice)."""
    keras.utils.set_random_seed(3)
    extractor = build_feature_extractor(backbone, size, size, None)
    head = build_head(extractor.output.shape[-1], [16], 0.0, 3)  # no dropout: no random draw
    save_model(extractor, tmp_path / "extractor.keras")
    save_model(head, tmp_path / "head.keras")
    return [
        build_classifier(
            load_model(tmp_path / "extractor.keras"), load_model(tmp_path / "head.keras")
        )
        for _ in range(3)
    ]


def _compile(model):
    # Changing `trainable` only takes effect after compile(): compile after unfreezing.
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="categorical_crossentropy")


def _top_weights(classifier, backbone, blocks):
    extractor = classifier.get_layer("feature_extractor")
    chosen = top_layers(backbone_of(extractor), backbone, blocks)
    return [keras.ops.convert_to_numpy(w) for layer in chosen for w in layer.trainable_weights] + [
        keras.ops.convert_to_numpy(w) for w in classifier.get_layer("head").trainable_weights
    ]


def test_training_the_top_block_from_the_cache_gives_the_weights_of_training_it_in_the_model(
    tmp_path,
):
    backbone, blocks = "resnet50", 1
    through_model, from_cache, from_float16 = _twins(tmp_path)
    images = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = one_hot(np.arange(12) % 3, 3)
    base = backbone_of(through_model.get_layer("feature_extractor"))
    unfreeze(base, top_layers(base, backbone, blocks))
    before = _top_weights(through_model, backbone, blocks)
    _compile(through_model)
    through_model.fit(ArrayBatches(images, labels, 4), epochs=2, shuffle=False, verbose=0)

    extractor = from_cache.get_layer("feature_extractor")
    base = backbone_of(extractor)
    frozen = trunk(extractor, backbone, blocks)
    cache = np.zeros((len(images), *frozen.output.shape[1:]), np.float32)
    write_cache(frozen, images, 4, cache, "train", chunk=5)  # chunks not a multiple of batches
    top = trainable_top(from_cache, backbone, blocks)
    unfreeze(base, top_layers(base, backbone, blocks))
    _compile(top)
    top.fit(ArrayBatches(cache, labels, 4), epochs=2, shuffle=False, verbose=0)
    # The stage's float16 cache: its rounding (2^-11 relative) leaves training all but the same.
    base16 = backbone_of(from_float16.get_layer("feature_extractor"))
    top16 = trainable_top(from_float16, backbone, blocks)
    unfreeze(base16, top_layers(base16, backbone, blocks))
    _compile(top16)
    top16.fit(
        ArrayBatches(AsFloat32(cache.astype(np.float16)), labels, 4),
        epochs=2,
        shuffle=False,
        verbose=0,
    )

    trained = _top_weights(through_model, backbone, blocks)
    assert len(trained) > 4  # the block's kernels and the head's
    assert all(np.abs(t - b).max() > 1e-3 for t, b in zip(trained, before) if t.ndim > 1)
    for expected, got in zip(trained, _top_weights(from_cache, backbone, blocks), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # The layers below the boundary did not move, and both whole models now agree.
    expected = through_model.predict(images, verbose=0)
    np.testing.assert_allclose(from_cache.predict(images, verbose=0), expected, atol=1e-5)
    np.testing.assert_allclose(from_float16.predict(images, verbose=0), expected, atol=2e-3)
    # What fine_tune saves is the whole classifier, the top part's extra graph left out.
    save_model(from_cache, tmp_path / "fine_tuned.keras")
    reloaded = load_model(tmp_path / "fine_tuned.keras")
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, atol=1e-5)


def test_the_cache_is_used_only_without_augmentation_and_with_counted_blocks():
    plain = {"unfreeze": 2, "augment": False}
    assert cache_plan("xception", plain) is None
    assert "unfreeze all" in cache_plan("xception", {**plain, "unfreeze": "all"})
    assert "augment" in cache_plan("xception", {**plain, "augment": True})
    assert "no blocks" in cache_plan("dinov2_small", plain)


def test_each_backbone_has_the_blocks_params_allows_and_each_is_a_clean_cut():
    for backbone, count in BLOCKS.items():
        size = SMALLEST.get(backbone, 32)
        base = backbone_of(build_feature_extractor(backbone, size, size, None))
        assert len(boundaries(base, backbone)) == count, backbone
        # The lowest block and the top one cut without anything else crossing the boundary.
        assert top_layers(base, backbone, count) and top_layers(base, backbone, 1), backbone
        with pytest.raises(PipelineError, match=f"{backbone} has {count} blocks"):
            top_layers(base, backbone, count + 1)
        keras.backend.clear_session()
    xception = backbone_of(build_feature_extractor("xception", 71, 71, None))
    names = {n: {layer.name for layer in top_layers(xception, "xception", n)} for n in (1, 2)}
    assert min(names[1]) == "block14_sepconv1" and "block13_sepconv1" not in names[1]
    assert "block13_sepconv1" in names[2] and "block12_sepconv1" not in names[2]  # the exit flow


def test_a_cache_the_disk_cannot_hold_is_refused_in_one_line_before_anything_is_written(
    tmp_path,
):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(PipelineError) as error:
        ensure_room(tmp_path, free + 10**9, "the cache below the top 2 blocks")
    line = str(error.value)
    assert line.startswith("the cache below the top 2 blocks needs ") and "\n" not in line
    assert f"the disk under {tmp_path} has" in line and "fine_tune.unfreeze" in line
    assert list(tmp_path.iterdir()) == []
    ensure_room(tmp_path, 10**6, "a small cache")  # what fits passes


def test_an_activation_float16_cannot_hold_is_an_error_not_an_infinity():
    inputs = keras.Input((2, 2, 3))
    loud = keras.Model(inputs, keras.layers.Rescaling(1000.0)(inputs))  # 255 -> 255,000
    images = np.full((3, 2, 2, 3), 255, np.uint8)
    cache = np.zeros((3, 2, 2, 3), np.float16)
    with pytest.raises(PipelineError, match="beyond float16"):
        write_cache(loud, images, 2, cache, "train")
    images[:] = 60  # 60,000 fits
    write_cache(loud, images, 2, cache, "train")
    assert np.all(cache == np.float16(60000))
