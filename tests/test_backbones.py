"""Every registry entry against Keras itself: preprocessing, feature width and minimum size.

One TF process; each backbone is built with random weights at its minimum size.
"""

import importlib

import keras
import numpy as np
import pytest

from transfer_pipeline.models.backbones import BACKBONES
from transfer_pipeline.models.model import build_feature_extractor, preprocessing_layer

NAMES = sorted(BACKBONES)


@pytest.fixture(scope="module")
def pixels():
    """Random uint8-valued float RGB images, as the extractor's float32 input receives them."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(4, 9, 7, 3)).astype("float32")


def _keras_preprocess(backbone, pixels):
    module = importlib.import_module(f"keras.applications.{backbone.preprocess_module}")
    # Keras' numpy path normalises float arrays in place: give it a copy.
    return np.asarray(module.preprocess_input(pixels.copy()), dtype="float32")


@pytest.mark.parametrize("name", NAMES)
def test_preprocessing_matches_keras_preprocess_input(name, pixels):
    backbone = BACKBONES[name]
    expected = _keras_preprocess(backbone, pixels)
    layer = preprocessing_layer(backbone)
    if backbone.preprocessing == "inside_model":
        assert layer is None, "the network normalises 0..255 input itself"
        np.testing.assert_array_equal(expected, pixels)  # keras' preprocess_input is identity
        return
    assert layer is not None
    ours = keras.ops.convert_to_numpy(layer(keras.ops.convert_to_tensor(pixels)))
    assert not np.allclose(expected, pixels), "a real transformation, not identity"
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_constructor_width_and_minimum_size_match_keras(name):
    backbone = BACKBONES[name]
    constructor = getattr(keras.applications, backbone.constructor)

    def build(size):
        return constructor(
            include_top=False, weights=None, pooling="avg", input_shape=(size, size, 3)
        )

    keras.backend.clear_session()
    # Keras checks the size before building a single layer: this costs nothing.
    with pytest.raises(ValueError, match=f"at least {backbone.min_size}x{backbone.min_size}"):
        build(backbone.min_size - 1)
    model = build(backbone.min_size)  # the registry's minimum is accepted
    assert model.output_shape == (None, backbone.feature_width)
    normalises = {
        type(layer).__name__
        for layer in model.layers[:6]
        if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization))
    }
    if backbone.preprocessing == "inside_model":
        assert normalises, f"{name} is registered as normalising inside, but has no such layer"
    else:
        assert not normalises, f"{name} normalises inside: our preprocessing would apply twice"
    assert backbone.min_size <= backbone.default_size
    del model
    keras.backend.clear_session()


@pytest.mark.parametrize("name", NAMES)
def test_the_pipelines_extractor_gives_the_registered_width_from_stored_size_images(name):
    """The features stage's model for each backbone (resize from the stored 32 px, our
    preprocessing, the pooled base), run on two images: what a sweep over every backbone
    runs before its head (the queued sweep in test_sweep.py covers two backbones end to end)."""
    backbone = BACKBONES[name]
    keras.backend.clear_session()
    extractor = build_feature_extractor(name, 32, backbone.min_size, None)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    features = keras.ops.convert_to_numpy(extractor(images, training=False))
    assert features.shape == (2, backbone.feature_width)
    assert np.isfinite(features).all() and features.std() > 0
    del extractor
    keras.backend.clear_session()
