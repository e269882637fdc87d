"""fine_tune.unfreeze: N trains the top N blocks; without augmentation from a cache of the output
below them (transfer_pipeline/blocks.py, stages/boundary.py). In process, real Keras models with
random weights at the smallest sizes they accept."""

from __future__ import annotations

import keras
import numpy as np

from transfer_pipeline.blocks import (
    top_layers,
    trainable_top,
    trunk,
    write_cache,
)
from transfer_pipeline.feeding import ArrayBatches, one_hot
from transfer_pipeline.model import (
    backbone_of,
    build_classifier,
    build_feature_extractor,
    build_head,
    load_model,
    unfreeze,
)
from transfer_pipeline.saving import save_model

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
        for _ in range(2)
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
    through_model, from_cache = _twins(tmp_path)
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

    trained = _top_weights(through_model, backbone, blocks)
    assert len(trained) > 4  # the block's kernels and the head's
    assert all(np.abs(t - b).max() > 1e-3 for t, b in zip(trained, before) if t.ndim > 1)
    for expected, got in zip(trained, _top_weights(from_cache, backbone, blocks), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # The layers below the boundary did not move, and both whole models now agree.
    expected = through_model.predict(images, verbose=0)
    np.testing.assert_allclose(from_cache.predict(images, verbose=0), expected, atol=1e-5)
    # What fine_tune saves is the whole classifier, the top part's extra graph left out.
    save_model(from_cache, tmp_path / "fine_tuned.keras")
    reloaded = load_model(tmp_path / "fine_tuned.keras")
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, atol=1e-5)
