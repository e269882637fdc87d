"""The backbone registry: one entry per supported ``keras.applications`` model
(``BACKBONES``) and per supported KerasHub preset (``HUB_BACKBONES``, loaded by hub.py).

Each entry knows how its weights expect pixels, its input sizes and its feature width. Kept
free of TensorFlow and KerasHub imports so params can be validated without paying for them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backbone:
    name: str
    constructor: str  # attribute of keras.applications
    preprocess_module: str  # keras.applications.<module>.preprocess_input is the reference
    # How pixels in [0, 255] (RGB) must be transformed before the network:
    #   "minus_one_to_one": x / 127.5 - 1          (Xception, InceptionV3, MobileNetV2)
    #   "caffe":            RGB->BGR, minus ImageNet channel means (ResNet50)
    #   "inside_model":     the model normalises itself and takes 0..255 (EfficientNet*, ConvNeXt)
    preprocessing: str
    min_size: int
    default_size: int
    feature_width: int
    keras_weights_file: str  # the file Keras downloads for weights="imagenet", include_top=False


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in [
        Backbone(
            "xception",
            "Xception",
            "xception",
            "minus_one_to_one",
            71,
            299,
            2048,
            "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        Backbone(
            "resnet50",
            "ResNet50",
            "resnet50",
            "caffe",
            32,
            224,
            2048,
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        Backbone(
            "inception_v3",
            "InceptionV3",
            "inception_v3",
            "minus_one_to_one",
            75,
            299,
            2048,
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        Backbone(
            "mobilenet_v2",
            "MobileNetV2",
            "mobilenet_v2",
            "minus_one_to_one",
            32,
            224,
            1280,
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        ),
        Backbone(
            "efficientnet_b0",
            "EfficientNetB0",
            "efficientnet",
            "inside_model",
            32,
            224,
            1280,
            "efficientnetb0_notop.h5",
        ),
        Backbone(
            "efficientnetv2_b0",
            "EfficientNetV2B0",
            "efficientnet_v2",
            "inside_model",
            32,
            224,
            1280,
            "efficientnetv2-b0_notop.h5",
        ),
        Backbone(
            "efficientnetv2_s",
            "EfficientNetV2S",
            "efficientnet_v2",
            "inside_model",
            32,
            384,
            1280,
            "efficientnetv2-s_notop.h5",
        ),
        Backbone(
            "convnext_tiny",
            "ConvNeXtTiny",
            "convnext",
            "inside_model",
            32,
            224,
            768,
            "convnext_tiny_notop.h5",
        ),
    ]
}


# How many blocks fine_tune.unfreeze can count from the top of each keras.applications backbone
# (blocks.py cuts them; a test checks these against the real models): Xception's 14 blocks
# (1: block 14; 2: blocks 13 and 14, the exit flow), ResNet50's 16 bottleneck blocks,
# InceptionV3's 11 mixed blocks (the lowest cannot be cut off), MobileNetV2's block_1 to
# block_16, EfficientNet's blocks (1a, 2a, 2b, ...; the top convolution goes with the top
# block), ConvNeXt's 18. KerasHub presets: unfreeze all only.
BLOCKS = {
    "xception": 14,
    "resnet50": 16,
    "inception_v3": 10,
    "mobilenet_v2": 16,
    "efficientnet_b0": 16,
    "efficientnetv2_b0": 21,
    "efficientnetv2_s": 40,
    "convnext_tiny": 18,
}


@dataclass(frozen=True)
class HubBackbone:
    """A KerasHub vision preset. ``model.backbone`` names it; ``model.weights: imagenet`` loads
    it by name (network), ``weights/<folder>`` from a preset folder (docs/backbones.md)."""

    name: str  # the KerasHub preset name
    keras_hub_class: str  # attribute of keras_hub.models; "keras_hub>" + it in a folder's config
    # config.json "model_type" (transformers) or "architecture" prefix (timm) of folders that
    # KerasHub converts into this class
    converted_from: tuple[str, ...]
    # How the backbone's output becomes one feature vector, as the preset's authors evaluate it:
    #   "class_and_patch_mean": class token ++ mean of the patch tokens, registers left out
    #                           (DINOv2's linear evaluation)
    #   "class_token":          the class token (ViT's pre-logits)
    #   "average":              global average pooling of the last feature map (CNNs)
    #   "pooled":               the encoder's own pooled output (SigLIP's attention-pooling head)
    pooling: str
    patch_size: int  # 0 for CNNs; the model's input side must be a multiple of it
    fixed_size: int  # 0 = any size; else the only input size the preset loads at
    feature_width: int
    params_millions: float
    # A random-weights architecture (model.weights: null) where one is built in; None = only
    # from a preset folder or by name
    random_config: dict | None = None
    # The attribute of the loaded KerasHub model that is its image encoder, for two-tower
    # image-text models (CLIP, SigLIP); "" = the loaded model is the image encoder
    image_encoder: str = ""
    # The backbone's config key of its stochastic-depth rate ("" = it has none), which
    # fine_tune.drop_path_rate sets: DINOv2's drop path (the same rate in every block),
    # KerasHub EfficientNet's dropout at the skip connections (rising towards it block by block)
    drop_path_key: str = ""

    def size_problem(self, image_size: int) -> str | None:
        """Why ``image_size`` cannot be this preset's input, or None."""
        if self.fixed_size and image_size != self.fixed_size:
            return (
                f"model.image_size = {image_size} does not fit {self.name}, which loads only at "
                f"{self.fixed_size} px; set model.image_size: {self.fixed_size}"
            )
        if self.patch_size and image_size % self.patch_size:
            below = image_size // self.patch_size * self.patch_size
            return (
                f"model.image_size = {image_size} is not a multiple of {self.name}'s patch size "
                f"{self.patch_size}; use {below or self.patch_size} or {below + self.patch_size}"
            )
        return None


def _dinov2(size: str, registers: bool, width: int, layers: int, heads: int, params: float):
    random_config = {
        "patch_size": 14,
        "num_layers": layers,
        "hidden_dim": width,
        "num_heads": heads,
        "intermediate_dim": 4 * width,
        "num_register_tokens": 4 if registers else 0,
        "position_embedding_shape": (518, 518),
    }
    return HubBackbone(
        f"dinov2_with_registers_{size}" if registers else f"dinov2_{size}",
        "DINOV2Backbone",
        ("dinov2_with_registers",) if registers else ("dinov2",),
        "class_and_patch_mean",
        14,
        0,
        2 * width,
        params,
        random_config,
        drop_path_key="drop_path_rate",
    )


def _image_text(name: str, keras_hub_class: str, pooling: str, patch: int, width: int, params):
    """The image encoder of a two-tower image-text preset; KerasHub 0.32 converts no
    transformers or timm folder for these (KerasHub-layout presets only)."""
    return HubBackbone(
        name, keras_hub_class, (), pooling, patch, 0, width, params, image_encoder="vision_encoder"
    )


HUB_BACKBONES: dict[str, HubBackbone] = {
    b.name: b
    for b in [
        _dinov2("small", False, 384, 12, 6, 22.6),
        _dinov2("base", False, 768, 12, 12, 87.6),
        _dinov2("large", False, 1024, 24, 16, 305.8),
        _dinov2("small", True, 384, 12, 6, 22.6),
        _dinov2("base", True, 768, 12, 12, 87.6),
        _dinov2("large", True, 1024, 24, 16, 305.8),
        HubBackbone(
            "vit_base_patch16_224_imagenet21k",
            "ViTBackbone",
            ("vit",),
            "class_token",
            16,
            224,
            768,
            86.4,
        ),
        HubBackbone(
            "mobilenet_v3_large_100_imagenet_21k",
            "MobileNetBackbone",
            ("mobilenetv3",),
            "average",
            0,
            0,
            960,
            3.0,
        ),
        HubBackbone(
            "efficientnet_b0_ra_imagenet",
            "EfficientNetBackbone",
            ("efficientnet",),
            "average",
            0,
            0,
            1280,
            4.0,
            drop_path_key="dropout",
        ),
        # CLIP's linear probes take the class token after the final LayerNorm, before the
        # projection into the joint embedding space (Radford et al. 2021, appendix A).
        _image_text("clip_vit_base_patch16", "CLIPBackbone", "class_token", 16, 768, 85.8),
        _image_text("clip_vit_large_patch14", "CLIPBackbone", "class_token", 14, 1024, 303.2),
        _image_text("siglip_base_patch16_224", "SigLIPBackbone", "pooled", 16, 768, 92.9),
        _image_text("siglip2_base_patch16_224", "SigLIPBackbone", "pooled", 16, 768, 92.9),
    ]
}


ALL_BACKBONES = (*BACKBONES, *HUB_BACKBONES)
