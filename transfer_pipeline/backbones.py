"""The backbone registry: one entry per supported ``keras.applications`` model.

Each entry knows the constructor, the preprocessing its ImageNet weights expect, its minimum
and default input size, and its feature width. Kept free of TensorFlow imports so params can
be validated without paying for TensorFlow; ``build_backbone`` imports Keras lazily.
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
