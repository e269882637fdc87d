"""Model building: one function per part, used by every stage and by the tests.

    uint8 image (stored size) -> Resizing(image_size) -> backbone preprocessing
        -> backbone(training=False) with global average pooling   = the feature extractor
        -> head: Dense/BatchNorm/Dropout blocks -> Dense softmax  = the head

The frozen phase trains the head on cached features; fine-tuning puts the same head on the
same extractor. Only built-in or registered layers are used, so models reload with
``safe_mode=True``.
"""

from __future__ import annotations

import urllib.error
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
from keras import layers

from ..plumbing.dvcfile import rebuild_hint
from ..plumbing.errors import PipelineError
from . import hub
from .backbones import BACKBONES, HUB_BACKBONES, Backbone

IMAGENET_BGR_MEANS = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="transfer_pipeline")
class CaffePreprocessing(layers.Layer):
    """ResNet50's ImageNet preprocessing: RGB -> BGR, then subtract the BGR channel means."""

    def call(self, inputs):
        bgr = keras.ops.flip(inputs, axis=-1)
        return bgr - keras.ops.convert_to_tensor(IMAGENET_BGR_MEANS, dtype=bgr.dtype)


def preprocessing_layer(backbone: Backbone) -> layers.Layer | None:
    if backbone.preprocessing == "minus_one_to_one":
        return layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")
    if backbone.preprocessing == "caffe":
        return CaffePreprocessing(name="preprocess")
    return None  # the backbone normalises 0..255 input itself


def build_backbone(name: str, image_size: int, weights) -> keras.Model:
    """The backbone without its top, global-average pooled, from `weights` (see params)."""
    backbone = BACKBONES[name]
    constructor = getattr(keras.applications, backbone.constructor)
    shape = (image_size, image_size, 3)
    if weights == "imagenet":
        try:
            return constructor(
                include_top=False, weights="imagenet", input_shape=shape, pooling="avg"
            )
        except Exception as error:  # Keras' get_file wraps network errors in a bare Exception
            offline = isinstance(error, (urllib.error.URLError, OSError)) or "URL fetch" in str(
                error
            )
            if not offline:
                raise
            raise PipelineError(
                f"cannot download the ImageNet weights of {name} ({error.__class__.__name__}). "
                f"Offline: copy {backbone.keras_weights_file} from ~/.keras/models/ of a machine "
                f"with internet into weights/ and set model.weights: "
                f"weights/{backbone.keras_weights_file}"
            ) from None
    model = constructor(include_top=False, weights=None, input_shape=shape, pooling="avg")
    if weights is not None:
        load_weights_file(model, Path(weights), name)
    return model


def load_weights_file(model: keras.Model, path: Path, name: str) -> None:
    """Load a local Keras weights file, turning shape/name mismatches into a one-line error."""
    if not path.is_file():
        raise PipelineError(f"model.weights file {path} does not exist; copy it into weights/")
    expected = _first_kernel(model)
    try:
        with h5py.File(path, "r"):
            pass
    except OSError:
        raise PipelineError(f"model.weights file {path} is not an HDF5 weights file") from None
    try:
        model.load_weights(str(path))
    except Exception as error:  # Keras raises ValueError/KeyError with long multi-line texts
        raise PipelineError(
            f"model.weights file {path} does not fit {name} without top (expected layer "
            f"{expected[0]!r} with kernel shape {expected[1]}): "
            f"{str(error).splitlines()[0][:200]}; use the {BACKBONES[name].keras_weights_file} "
            f"file of this backbone or change model.backbone"
        ) from None


def _first_kernel(model: keras.Model) -> tuple[str, tuple]:
    for layer in model.layers:
        if layer.weights:
            return layer.name, tuple(layer.weights[0].shape)
    return "none", ()


def build_feature_extractor(
    backbone_name: str,
    stored_size: int,
    image_size: int,
    weights,
    dtype_policy=None,
    load_weights: bool = True,
    drop_path_rate=None,
):
    """uint8 images of the stored size -> pooled backbone features (the frozen part), built
    under ``dtype_policy`` (e.g. "mixed_bfloat16") or else the global dtype policy.
    ``load_weights=False``: the architecture ``weights`` names, with random weights.
    ``drop_path_rate``: a KerasHub preset's stochastic depth (None = the preset's own)."""
    if dtype_policy is not None:
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(dtype_policy)
        try:
            return build_feature_extractor(
                backbone_name,
                stored_size,
                image_size,
                weights,
                load_weights=load_weights,
                drop_path_rate=drop_path_rate,
            )
        finally:
            keras.config.set_dtype_policy(previous)
    preset = HUB_BACKBONES.get(backbone_name)
    if preset is not None:
        base = hub.load_backbone(preset, image_size, weights, load_weights, drop_path_rate)
        scale, offset = hub.preprocessing(preset, weights)
        preprocess = layers.Rescaling(scale, offset, name="preprocess")
        pool = hub.pooling_layer(preset, base)
    else:
        base = build_backbone(backbone_name, image_size, weights if load_weights else None)
        preprocess, pool = preprocessing_layer(BACKBONES[backbone_name]), None
    base.trainable = False
    # float32 input: the classifier feeds it uint8 (cast on the device) or augmented floats.
    inputs = keras.Input((stored_size, stored_size, 3), dtype="float32", name="pixels")
    x = layers.Resizing(image_size, image_size, name="resize")(inputs)
    if preprocess is not None:
        x = preprocess(x)
    # training=False: the base runs in inference mode here; for fine-tuning see unfreeze().
    if isinstance(base.input, dict):  # KerasHub's transformers take {"images": ...}
        x = {name: x for name in base.input}
    features = base(x, training=False)
    if pool is not None:
        features = pool(features)
    return keras.Model(inputs, features, name="feature_extractor")


def twin_extractor(
    extractor: keras.Model,
    backbone_name: str,
    image_size: int,
    dtype_policy: str,
    weights=None,
    drop_path_rate=None,
) -> keras.Model:
    """The same feature extractor, weights included, built under another dtype policy (the
    features stage extracts on a mixed bfloat16 twin and saves the float32 original) or with
    another stochastic-depth rate (fine_tune.drop_path_rate, KerasHub presets).
    ``weights``: model.weights, where the architecture comes from (KerasHub presets)."""
    stored_size = extractor.input_shape[1]
    twin = build_feature_extractor(
        backbone_name,
        stored_size,
        image_size,
        weights,
        dtype_policy,
        load_weights=False,
        drop_path_rate=drop_path_rate,
    )
    # The same weights in the same order; random layers' seed states are each model's own
    # (a preset gains one per block with stochastic depth).
    weights = ([v for v in m.weights if not is_seed_state(v)] for m in (extractor, twin))
    for source, target in zip(*weights, strict=True):
        target.assign(keras.ops.convert_to_numpy(source))
    return twin


def is_seed_state(variable) -> bool:
    """Whether a model variable is the state of a random layer's seed generator (dropout,
    augmentation, drop path), not a weight."""
    return "seed_generator_state" in variable.path


def build_head(feature_width: int, units: list[int], dropout: float, n_classes: int):
    inputs = keras.Input((feature_width,), name="features")
    x = inputs
    for width in units:
        x = layers.Dense(width, activation="relu")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Dropout(dropout)(x)
    # The softmax stays float32 under mixed precision: float16 probabilities lose the tail.
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probabilities")(
        x
    )
    return keras.Model(inputs, outputs, name="head")


def augmentation(seed: int) -> keras.Sequential:
    """Random flip and translation (about 1/8 of the side, like CIFAR's pad-4-and-crop)."""
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomTranslation(0.125, 0.125, fill_mode="reflect", seed=seed),
        ],
        name="augment",
    )


def build_classifier(extractor: keras.Model, head: keras.Model, augment_seed: int | None = None):
    """The full model: extractor then head; optional augmentation (active only in training)."""
    inputs = keras.Input(extractor.input.shape[1:], dtype="uint8", name="image")
    x = inputs
    if augment_seed is not None:
        # Augment at the stored size, before the resize: cheap and the same on every backbone.
        x = augmentation(augment_seed)(keras.ops.cast(x, "float32"))
    outputs = head(extractor(x))
    return keras.Model(inputs, outputs, name="classifier")


def backbone_of(extractor: keras.Model) -> keras.Model:
    """The backbone sub-model inside a feature extractor (the only nested Model in it)."""
    return next(layer for layer in extractor.layers if isinstance(layer, keras.Model))


def unfreeze(base: keras.Model, trained="all") -> int:
    """Make the base (``"all"``) or only the given layers of it trainable (its top blocks:
    blocks.top_layers), BatchNorm excepted; returns the number of trainable weight tensors.

    Keras 3 passes the outer ``training=True`` of ``fit()`` into nested models, overriding the
    ``training=False`` recorded in the graph. A BatchNormalization layer with
    ``trainable=False`` runs in inference mode whatever it is told, so it stays frozen: its
    moving statistics never change (and, unlike Keras 2, its gamma/beta stay fixed too).
    """
    base.trainable = True
    chosen = None if trained == "all" else {id(layer) for layer in trained}
    for layer in base.layers:
        # explicit for every layer: the setter skips no-op changes
        layer.trainable = chosen is None or id(layer) in chosen
    for layer in all_layers(base):
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
    return len(base.trainable_weights)


def synchronize_batchnorm(model: keras.Model, synchronized: bool) -> None:
    """Training BatchNorm layers take their batch statistics over the global batch (across
    tf.distribute replicas) or over each replica's part. Per replica, the tiny pipeline's
    mirrored run (batch 8, 4 images per replica) trained a head of 0.62 test accuracy
    instead of 0.95. Saved models do not keep it (saving.py): it is a training setting."""
    for layer in all_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            layer.synchronized = synchronized


def batchnorm_statistics(model: keras.Model) -> list[np.ndarray]:
    """Every BatchNorm moving mean and variance of the model, in a fixed order."""
    stats = []
    for layer in all_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            stats += [
                keras.ops.convert_to_numpy(v) for v in (layer.moving_mean, layer.moving_variance)
            ]
    return stats


def all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def load_model(path, **kwargs) -> keras.Model:
    """A saved .keras model; a missing, truncated or corrupt file is a one-line PipelineError."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} not found; {rebuild_hint(path)}")
    if not zipfile.is_zipfile(path):
        raise PipelineError(
            f"{path} is not a readable Keras model (not a .keras zip archive): it is truncated "
            f"or corrupt; {rebuild_hint(path)}"
        )
    hub.import_for(path)  # a KerasHub backbone's classes register when keras_hub is imported
    try:
        return keras.models.load_model(path, safe_mode=True, **kwargs)
    except Exception as error:  # Keras reports a damaged archive as many different errors
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:150]
        raise PipelineError(
            f"{path} is not a readable Keras model ({reason}): it is truncated or corrupt; "
            f"{rebuild_hint(path)}"
        ) from None
