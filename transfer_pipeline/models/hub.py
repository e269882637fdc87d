"""KerasHub presets as backbones: check a preset folder, load the backbone (by name with
network, from a folder under weights/ offline, or random), read the preprocessing it expects,
and pool its output as the preset's authors evaluate it.

KerasHub is imported only here and only when a preset is used (it is installed without its
declared dependencies: README, Install). Saved models that hold a KerasHub backbone need
``keras_hub`` imported before they load: ``import_for(path)``.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import zipfile
from pathlib import Path

import keras
import numpy as np
from keras import layers

from ..plumbing.errors import PipelineError
from . import hub_fixes
from .backbones import HubBackbone

INSTALL = 'pip install --no-deps "keras-hub==0.32.0"'
# A transformers folder brings no image converter: its reference preprocessing is ImageNet's
# mean and std on [0, 1] RGB (transformers' BitImageProcessor for DINOv2).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_FILES = {"keras_hub": "model.weights.h5", "transformers": "model.safetensors"}
WEIGHTS_FILES["timm"] = WEIGHTS_FILES["transformers"]


def keras_hub():
    """The keras_hub module, or one line saying how to install it."""
    try:
        import keras_hub
    except ImportError as error:
        # KerasHub imports kagglehub if it is installed: a broken one (say, a kagglesdk of
        # another version) stops the import
        fix = "pip install -e ." if "kagglehub" in str(error) else INSTALL
        raise PipelineError(
            f"model.backbone names a KerasHub preset but keras_hub cannot be imported "
            f"({_first_line(error)}); install it with {fix}"
        ) from None
    hub_fixes.apply()  # before any KerasHub model is built or loaded
    return keras_hub


def import_for(path: Path) -> None:
    """Import keras_hub if the saved .keras model at ``path`` holds a KerasHub layer."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = archive.read("config.json")
    except (OSError, KeyError, zipfile.BadZipFile):
        return  # load_model reports the damaged file
    if b'"keras_hub' in config:
        keras_hub()


def folder_layout(folder: Path) -> tuple[str, str]:
    """("keras_hub" | "transformers" | "timm", what the folder's config.json says it holds)."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise PipelineError(
            f"model.weights folder {folder} has no config.json: it is not a KerasHub, "
            f"transformers or timm preset folder (docs/backbones.md says how to make one)"
        )
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise PipelineError(
            f"{config_file} is not readable JSON ({error}); copy the preset folder again"
        ) from None
    for layout, key in (
        ("keras_hub", "registered_name"),
        ("transformers", "model_type"),
        ("timm", "architecture"),
    ):
        if isinstance(config.get(key), str):
            return layout, config[key]
    raise PipelineError(
        f"{config_file} names no model (no registered_name, model_type or architecture): it is "
        f"not a KerasHub, transformers or timm preset folder"
    )


def check_folder(folder: Path, hub: HubBackbone) -> None:
    """One line if the folder cannot hold ``hub``'s weights."""
    if not folder.is_dir():
        raise PipelineError(
            f"model.weights folder {folder} does not exist; copy the preset folder of "
            f"{hub.name} there (docs/backbones.md)"
        )
    layout, holds = folder_layout(folder)
    if layout != "keras_hub" and not hub.converted_from:
        raise PipelineError(
            f"model.weights folder {folder} is a {layout} folder; KerasHub 0.32 converts none for "
            f"{hub.keras_hub_class} ({hub.name}): save the preset in KerasHub's layout "
            f"(docs/backbones.md, Offline)"
        )
    fits = (
        holds == f"keras_hub>{hub.keras_hub_class}"
        if layout == "keras_hub"
        else any(holds == kind or holds.startswith(f"{kind}_") for kind in hub.converted_from)
        if layout == "transformers"
        else any(holds.startswith(kind) for kind in hub.converted_from)
    )
    if not fits:
        raise PipelineError(
            f"model.weights folder {folder} holds a {layout} {holds!r} model, not the "
            f"{hub.keras_hub_class} that model.backbone {hub.name} names; set model.backbone to "
            f"the preset the folder was made from, or model.weights to that preset's folder"
        )
    weights_file = folder / WEIGHTS_FILES[layout]
    if not weights_file.is_file():
        raise PipelineError(
            f"model.weights folder {folder} has no {weights_file.name}: copy the whole preset "
            f"folder again"
        )


def load_backbone(
    hub: HubBackbone, image_size: int, weights, load_weights: bool = True, drop_path_rate=None
):
    """The KerasHub backbone at ``image_size``: by name (``weights: imagenet``, kagglehub), from
    a preset folder, or random (``weights: null``, where the registry has an architecture);
    position embeddings as the reference implementation interpolates them.
    ``drop_path_rate``: its stochastic depth (``hub.drop_path_key``); None = the preset's."""
    overrides = {} if drop_path_rate is None else {hub.drop_path_key: float(drop_path_rate)}
    loaded = _load_backbone(hub, image_size, weights, load_weights, overrides)
    if not hub.image_encoder:
        return with_reference_position_embeddings(loaded, image_size)
    encoder = getattr(loaded, hub.image_encoder)
    if encoder.patch_size != hub.patch_size:
        raise PipelineError(
            f"model.weights folder {weights} holds a {hub.keras_hub_class} with patch size "
            f"{encoder.patch_size}, not the {hub.patch_size} of {hub.name}; set model.backbone "
            f"to the preset the folder was made from"
        )
    return with_reference_positions(encoder, image_size)


def _load_backbone(hub: HubBackbone, image_size: int, weights, load_weights: bool, overrides):
    models = keras_hub().models
    # A two-tower model loads at its own size; its image encoder is resized afterwards.
    arguments = {} if hub.image_encoder else {"image_shape": (image_size, image_size, 3)}
    arguments |= overrides
    if weights is None:
        if hub.random_config is None:
            raise PipelineError(
                f"model.weights: null (random) is not available for {hub.name}; give its preset "
                f"folder under weights/ (docs/backbones.md)"
            )
        return getattr(models, hub.keras_hub_class)(**hub.random_config, **arguments)
    if weights == "imagenet":
        return _by_name(
            hub,
            lambda: models.Backbone.from_preset(hub.name, load_weights=load_weights, **arguments),
        )
    folder = Path(weights)
    check_folder(folder, hub)
    try:
        return models.Backbone.from_preset(str(folder), load_weights=load_weights, **arguments)
    except Exception as error:  # a truncated file fails in h5py, safetensors or a converter
        reason = _first_line(error)[:150]
        raise PipelineError(
            f"model.weights folder {folder} cannot be loaded as {hub.name} ({reason}): a file in "
            f"it is truncated or not of this preset; copy the preset folder again"
        ) from None


def with_reference_position_embeddings(backbone, image_size: int):
    """DINOv2 with its position embeddings interpolated to ``image_size`` as the reference
    implementation (PyTorch's bicubic) does, and fixed at that size.

    KerasHub interpolates them with Keras' bicubic (a = -0.5): 5e-3 from transformers'
    ``Dinov2Model`` on the parity test's tiny model, against 5e-7 without interpolation. Its
    layer also interpolates them again at every load, and back to the trained grid at every
    save (lossy once they were fine-tuned). Rebuilt with ``position_embedding_shape`` equal to
    ``image_shape``, the layer interpolates to the same grid (the identity): saving and loading
    copy them exactly (once hub_fixes has KerasHub notice that fine-tuning changed them)."""
    embeddings = getattr(backbone, "embeddings", None)
    if not hasattr(embeddings, "interpolated_position_embeddings"):
        return backbone  # not a DINOv2
    config = backbone.get_config() | {
        "image_shape": (image_size, image_size, 3),
        "position_embedding_shape": (image_size, image_size),
        "use_mask_token": False,  # masked-image pretraining only: no gradient in fine-tuning
    }
    rebuilt = type(backbone).from_config(config)
    trained = keras.ops.convert_to_numpy(embeddings.position_embeddings)[0]
    side_out = image_size // backbone.patch_size
    fitted = resized_grid(trained, 1, side_out, embeddings.antialias_in_interpolation)[None]
    position = {
        id(embeddings.position_embeddings),
        id(embeddings.interpolated_position_embeddings),
    }
    mask = getattr(embeddings, "mask_token", None)
    kept = [variable for variable in backbone.weights if variable is not mask]
    for old, new in zip(kept, rebuilt.weights, strict=True):  # the same layers, in order
        new.assign(fitted if id(old) in position else old)
    return rebuilt


def with_reference_positions(encoder, image_size: int):
    """A CLIP or SigLIP image encoder at ``image_size`` whose position embeddings are what
    transformers' gives: interpolated as its ``interpolate_pos_encoding`` does (PyTorch's
    bicubic, a = -0.75, not antialiased) when the size is not the trained one, and looked up
    by position ids 0..N-1. KerasHub 0.32's CLIPVisionEmbedding creates its position ids as
    zeros and only a ported checkpoint fills them, so an encoder rebuilt here, or a preset saved
    from a fresh model, looked every token up at the class token's position (0.12 from
    transformers' CLIPVisionModel on the parity test's tiny model)."""
    trained_size = encoder.image_shape[0]
    if image_size != trained_size:
        config = encoder.get_config() | {"image_shape": (image_size, image_size, 3)}
        rebuilt = type(encoder).from_config(config)
        position = encoder.embedding.position_embedding.embeddings
        table = keras.ops.convert_to_numpy(position)
        prefix = table.shape[0] - (trained_size // encoder.patch_size) ** 2  # CLIP's class token
        fitted = resized_grid(table, prefix, image_size // encoder.patch_size, antialias=False)
        for old, new in zip(encoder.weights, rebuilt.weights, strict=True):  # the same layers
            if old is position:
                new.assign(fitted)
            elif old is not encoder.embedding.position_ids:  # counted below
                new.assign(old)
        encoder = rebuilt
    ids = encoder.embedding.position_ids
    ids.assign(keras.ops.cast(np.arange(ids.shape[-1])[None], ids.dtype))
    return encoder


def resized_grid(table: np.ndarray, prefix: int, side_out: int, antialias: bool) -> np.ndarray:
    """Position embeddings (``prefix`` tokens, then a square grid of patches, by width) with
    the grid resized to ``side_out`` x ``side_out`` as PyTorch's bicubic ``interpolate``."""
    table = table.astype(np.float64)
    side_in = round((table.shape[0] - prefix) ** 0.5)
    resize = resize_matrix(side_in, side_out, antialias)
    grid = table[prefix:].reshape(side_in, side_in, -1)
    patches = np.einsum("oi,ijd,pj->opd", resize, grid, resize).reshape(-1, grid.shape[-1])
    return np.concatenate([table[:prefix], patches]).astype(np.float32)


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def resize_matrix(n_in: int, n_out: int, antialias: bool) -> np.ndarray:
    """(n_out, n_in) weights of PyTorch's ``interpolate(mode="bicubic", align_corners=False)``
    along one axis (checked against torch 2.13 to 4e-6, float32)."""
    scale = n_in / n_out
    matrix = np.zeros((n_out, n_in))
    for i in range(n_out):
        if not antialias:  # upsample_bicubic2d: a = -0.75, indices clamped at the borders
            x = (i + 0.5) * scale - 0.5
            base = np.floor(x)
            for k in range(-1, 3):
                source = int(np.clip(base + k, 0, n_in - 1))
                matrix[i, source] += _cubic(x - (base + k), -0.75)
        else:  # the antialiased kernel (PIL's): a = -0.5, widened when shrinking, normalised
            stretch = max(scale, 1.0)
            center = (i + 0.5) * scale
            low = max(int(center - 2 * stretch + 0.5), 0)
            high = min(int(center + 2 * stretch + 0.5), n_in)
            weights = _cubic((np.arange(low, high) - center + 0.5) / stretch, -0.5)
            matrix[i, low:high] = weights / weights.sum()
    return matrix


def _by_name(hub: HubBackbone, load):
    """``load()``: a KerasHub call that fetches the preset ``hub.name`` by name (through
    kagglehub, which serves it from its cache or downloads it); any failure is one line."""
    try:
        return load()
    except Exception as error:
        if _offline(error):
            message = (
                f"cannot download the KerasHub preset {hub.name} ({error.__class__.__name__}). "
                f"Offline: make its preset folder on a machine with network, copy it to "
                f"weights/{hub.name} and set model.weights: weights/{hub.name} "
                f"(docs/backbones.md)"
            )
        elif isinstance(error, ImportError) and "kagglehub" in str(error):
            message = (
                f"model.weights: imagenet loads the KerasHub preset {hub.name} by name through "
                f"kagglehub, which is not installed; install it with pip install -e . (the "
                f"project's dependencies bring it), or give the preset's folder as model.weights "
                f"(docs/backbones.md)"
            )
        else:
            message = (
                f"cannot load the KerasHub preset {hub.name} by name "
                f"({error.__class__.__name__}: {_first_line(error)[:200]}); "
                f"{_damaged_download(hub)}, or give the preset's folder as model.weights "
                f"(docs/backbones.md)"
            )
        raise PipelineError(message) from None


def _damaged_download(hub: HubBackbone) -> str:
    """Which file of the preset's download in kagglehub's cache is damaged, in the cache folder
    this process uses (KAGGLEHUB_CACHE if set), and what to remove."""
    try:
        import keras_hub
        from kagglehub.cache import Cache
        from kagglehub.config import get_cache_folder
        from kagglehub.handle import parse_model_handle

        cache = get_cache_folder()
        handle = keras_hub.models.Backbone.presets[hub.name]["kaggle_handle"]
        folder = Path(Cache().get_path(parse_model_handle(handle.removeprefix("kaggle://"))))
    except Exception:  # not a preset kagglehub serves: no folder to name
        return "a damaged download goes with its folder in kagglehub's cache (KAGGLEHUB_CACHE)"
    damaged = _unreadable_file(folder)
    what = f"{damaged} is damaged" if damaged else f"the download in {folder} may be damaged"
    return f"{what} (kagglehub's cache {cache}): remove {folder} to download it again"


def _unreadable_file(folder: Path) -> Path | None:
    """The first weights (.h5) or config (.json) file in ``folder`` that does not open."""
    import h5py

    for path in sorted(folder.rglob("*")):
        try:
            if path.suffix == ".h5":
                h5py.File(path, "r").close()
            elif path.suffix == ".json":
                json.loads(path.read_text())
        except Exception:
            return path
    return None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _offline(error: BaseException) -> bool:
    """Whether ``error``, or one it came from, is a network failure: no answer from the server
    (an HTTP error status is an answer: KerasHub turns a 404 into FileNotFoundError)."""
    try:
        from requests import exceptions as http  # kagglehub's HTTP client
    except ImportError:
        network = ()
    else:
        network = (http.ConnectionError, http.Timeout, http.ChunkedEncodingError)
    network += (ConnectionError, TimeoutError, socket.gaierror, urllib.error.URLError)
    while error is not None:
        if isinstance(error, network) and not isinstance(error, urllib.error.HTTPError):
            return True
        error = error.__cause__ or error.__context__
    return False


def preprocessing(hub: HubBackbone, weights) -> tuple[list[float], list[float]]:
    """Per-channel (scale, offset) that take 0..255 RGB pixels to what the preset expects:
    KerasHub's image converter where the preset has one, else ImageNet mean and std."""
    converter = None
    if weights == "imagenet":
        converters = keras_hub().layers
        converter = _by_name(hub, lambda: converters.ImageConverter.from_preset(hub.name))
    elif weights is not None and (Path(weights) / "image_converter.json").is_file():
        converter = keras_hub().layers.ImageConverter.from_preset(str(weights))
    if converter is None or converter.scale is None:
        return (
            [1 / (255 * s) for s in IMAGENET_STD],
            [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)],
        )
    scale, offset = converter.scale, converter.offset if converter.offset is not None else 0.0
    return _per_channel(scale), _per_channel(offset)


def _per_channel(value) -> list[float]:
    values = [float(v) for v in keras.ops.convert_to_numpy(value).reshape(-1)]
    return values * 3 if len(values) == 1 else values


@keras.saving.register_keras_serializable(package="transfer_pipeline")
class TokenPooling(layers.Layer):
    """One feature vector per image from a transformer's token sequence (batch, tokens, width):
    ``class_and_patch_mean`` concatenates the class token with the mean of the patch tokens
    (the ``prefix_tokens`` before them, class and registers, left out of the mean);
    ``class_token`` keeps the class token."""

    def __init__(self, mode: str, prefix_tokens: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.mode, self.prefix_tokens = mode, int(prefix_tokens)

    def call(self, tokens):
        class_token = tokens[:, 0]
        if self.mode == "class_token":
            return class_token
        patches = keras.ops.mean(tokens[:, self.prefix_tokens :], axis=1)
        return keras.ops.concatenate([class_token, patches], axis=-1)

    def compute_output_shape(self, input_shape):
        width = input_shape[-1] * (1 if self.mode == "class_token" else 2)
        return (input_shape[0], width)

    def get_config(self):
        return super().get_config() | {"mode": self.mode, "prefix_tokens": self.prefix_tokens}


def pooling_layer(hub: HubBackbone, backbone) -> layers.Layer | None:
    """The layer that pools the backbone's output into features; None where it is pooled."""
    if hub.pooling == "pooled":
        return None
    if hub.pooling == "average":
        return layers.GlobalAveragePooling2D(name="pool")
    registers = int(getattr(backbone, "num_register_tokens", 0))
    return TokenPooling(hub.pooling, prefix_tokens=1 + registers, name="pool")
