"""Tiny random KerasHub presets the tests make themselves (real weights cannot reach these
machines): a DINOv2, a MobileNetV3 and a CLIP or SigLIP in KerasHub's own layout, as
``save_to_preset`` writes them, in a folder or where kagglehub keeps a preset it downloaded
(a load by name). Checked in with their reference features: the
transformers-layout DINOv2 (tests/data/dinov2_tiny/, made with PyTorch by
tests/make_dinov2_reference.py) and a KerasHub CLIP (tests/data/clip_tiny/,
tests/make_clip_reference.py)."""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
DINOV2_TRANSFORMERS = HERE / "data" / "dinov2_tiny"  # a transformers Dinov2Model folder
DINOV2_REFERENCE = HERE / "data" / "dinov2_tiny_reference.npz"  # its images and features
CLIP_KERAS_HUB = HERE / "data" / "clip_tiny"  # a KerasHub CLIP (tests/make_clip_reference.py)
CLIP_REFERENCE = HERE / "data" / "clip_tiny_reference.npz"  # its images and features


def save_dinov2(folder: Path, registers: int = 0) -> Path:
    """DINOv2 with 2 layers of width 32 (patch 14, position embeddings for 56 px) and the
    image converter of the real presets (ImageNet mean and std)."""
    import keras
    import keras_hub

    from transfer_pipeline.models.hub import IMAGENET_MEAN, IMAGENET_STD

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.DINOV2Backbone(
        patch_size=14,
        num_layers=2,
        hidden_dim=32,
        num_heads=2,
        intermediate_dim=64,
        num_register_tokens=registers,
        image_shape=(56, 56, 3),
        position_embedding_shape=(56, 56),
    )
    backbone.save_to_preset(str(folder))
    keras_hub.layers.DINOV2ImageConverter(
        image_size=(56, 56),
        scale=[1 / (255 * s) for s in IMAGENET_STD],
        offset=[-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)],
    ).save_to_preset(str(folder))
    return folder


def save_in_kagglehub_cache(cache: Path, name: str, save=save_dinov2) -> Path:
    """The preset that ``save(folder)`` writes, placed where kagglehub would have downloaded
    the KerasHub preset ``name`` under the cache root ``cache`` (``KAGGLEHUB_CACHE``), with
    kagglehub's completion markers: with ``KAGGLEHUB_CACHE=cache`` KerasHub's
    ``from_preset(name)`` resolves its versioned Kaggle handle from there, without network."""
    import keras_hub
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_model_handle

    handle = keras_hub.models.Backbone.presets[name]["kaggle_handle"].removeprefix("kaggle://")
    before = os.environ.get("KAGGLEHUB_CACHE")
    os.environ["KAGGLEHUB_CACHE"] = str(cache)  # kagglehub reads it at every call
    try:
        parsed, markers = parse_model_handle(handle), Cache()
        folder = save(Path(markers.get_path(parsed)))
        for file in folder.iterdir():
            markers.mark_as_complete(parsed, file.name)
        markers.mark_as_complete(parsed)
    finally:
        if before is None:
            del os.environ["KAGGLEHUB_CACHE"]
        else:
            os.environ["KAGGLEHUB_CACHE"] = before
    return folder


def save_mobilenet(folder: Path) -> Path:
    """A MobileNetV3 of two small stacks (KerasHub's MobileNetBackbone), with an image
    converter scaling to [-1, 1]."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[8, 8], [16, 16]],
        stackwise_num_blocks=[2, 2],
        stackwise_num_filters=[[8, 8], [16, 16]],
        stackwise_kernel_size=[[3, 3], [3, 3]],
        stackwise_num_strides=[[2, 1], [2, 1]],
        stackwise_se_ratio=[[None, None], [0.25, 0.25]],
        stackwise_activation=[["relu", "relu"], ["hard_swish", "hard_swish"]],
        stackwise_padding=[[1, 1], [1, 1]],
        output_num_filters=32,
        depthwise_filters=8,
        depthwise_stride=2,
        depthwise_residual=False,
        last_layer_filter=32,
        squeeze_and_excite=0.5,
        image_shape=(None, None, 3),
    )
    backbone.save_to_preset(str(folder))
    keras_hub.layers.MobileNetImageConverter(scale=1 / 127.5, offset=-1.0).save_to_preset(
        str(folder)
    )
    return folder


# The real presets' image converters: CLIP's mean and std (OpenAI), SigLIP's x / 127.5 - 1.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def save_image_text(folder: Path, family: str, size: int = 32) -> Path:
    """A two-tower CLIP or SigLIP ("clip" | "siglip"): an image encoder of 2 layers of width
    32, patch 16, trained at ``size`` px, a 1-layer text encoder, and the image converter of
    the family's real presets; in KerasHub's layout (the only one KerasHub loads them from)."""
    import keras
    import keras_hub

    models, converters = keras_hub.models, keras_hub.layers
    keras.utils.set_random_seed(0)
    vision = dict(patch_size=16, hidden_dim=32, num_layers=2, num_heads=2, intermediate_dim=64)
    text = dict(
        vocabulary_size=64,
        embedding_dim=16,
        hidden_dim=16,
        num_layers=1,
        num_heads=2,
        intermediate_dim=32,
        max_sequence_length=8,
    )
    if family == "clip":
        backbone = models.CLIPBackbone(
            vision_encoder=models.CLIPVisionEncoder(**vision, image_shape=(size, size, 3)),
            text_encoder=models.CLIPTextEncoder(**text),
            projection_dim=8,
        )
        converter = converters.CLIPImageConverter(
            image_size=(size, size),
            scale=[1 / (255 * s) for s in CLIP_STD],
            offset=[-m / s for m, s in zip(CLIP_MEAN, CLIP_STD)],
        )
    else:
        backbone = models.SigLIPBackbone(
            vision_encoder=models.SigLIPVisionEncoder(**vision, image_shape=(size, size, 3)),
            text_encoder=models.SigLIPTextEncoder(**text),
        )
        converter = converters.SigLIPImageConverter(
            image_size=(size, size), scale=1 / 127.5, offset=-1.0
        )
    backbone.save_to_preset(str(folder))
    converter.save_to_preset(str(folder))
    return folder
