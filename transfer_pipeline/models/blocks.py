"""The top blocks of a backbone, and the cache of the output below them.

``fine_tune.unfreeze: N`` trains the top N blocks of the base (backbones.BLOCKS names how many
each backbone has). The blocks below stay frozen and in inference mode, and without
augmentation their output is a fixed function of the image: the ``boundary`` stage computes it
once per image and caches it (float16, chunk by chunk into a memory-mapped .npy), and
fine_tune trains the top blocks and the head from it. The model fine_tune saves is still the
whole model: the top part shares its layers with it.

A block is a run of layers whose names carry the block's name (``block13_...`` in Xception,
``conv5_block3_...`` in ResNet50); its boundary is the input of its first layer, and cutting
there must leave nothing else crossing it (Keras refuses the cut otherwise, and so do we).
InceptionV3's blocks end at its ``mixed<i>`` layers.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import keras
import numpy as np

from ..data.feeding import predict_in_batches
from ..plumbing.errors import PipelineError
from ..running.progress import ProgressBar
from .backbones import BLOCKS, HUB_BACKBONES
from .model import backbone_of

# The part of a layer's name that names its block, per keras.applications backbone.
BLOCK_NAME = {
    "xception": r"(block\d+)_",
    "resnet50": r"(conv\d_block\d+)_",
    "mobilenet_v2": r"(block_\d+)_",
    "efficientnet_b0": r"(block\d+[a-z])_",
    "efficientnetv2_b0": r"(block\d+[a-z])_",
    "efficientnetv2_s": r"(block\d+[a-z])_",
    "convnext_tiny": r"(.*_stage_\d+_block_\d+)_",
}
CACHE_DTYPE = "float16"  # why float16 is enough: docs/params.md (fine_tune.unfreeze)
CHUNK_IMAGES = 512  # images computed and written at once: memory does not grow with the split
PLAN_FILE = "cache.json"  # in the boundary stage's folder: whether there is a cache, and why


def cache_plan(backbone: str, settings: dict) -> str | None:
    """Why fine_tune runs through the whole model, or None: it trains from the cache."""
    if settings["unfreeze"] == "all":
        return "fine_tune.unfreeze all: every block trains"
    if settings["augment"]:
        return "fine_tune.augment: every epoch sees other pixels, so the blocks below run each time"
    if backbone not in BLOCK_NAME:  # params.py refuses counted blocks for any other backbone
        return f"{backbone} has no blocks the pipeline can cut"
    return None


def boundaries(base: keras.Model, backbone: str) -> list:
    """The base's tensors below its top 1, 2, ... blocks, top first."""
    if backbone == "inception_v3":  # each block ends at its concatenation, mixed0 ... mixed10
        return [base.get_layer(f"mixed{i}").output for i in range(BLOCKS[backbone] - 1, -1, -1)]
    if backbone not in BLOCK_NAME:
        preset = " (a KerasHub preset)" if backbone in HUB_BACKBONES else ""
        raise PipelineError(
            f"fine_tune.unfreeze counts blocks; the pipeline cannot cut {backbone}{preset} into "
            f"blocks: set fine_tune.unfreeze: all"
        )
    first_layers = {}
    for layer in base.layers:
        found = re.match(BLOCK_NAME[backbone], layer.name)
        if found and found.group(1) not in first_layers:
            first_layers[found.group(1)] = layer
    return [layer.input for layer in reversed(first_layers.values())]


def _boundary(base: keras.Model, backbone: str, blocks: int):
    below = boundaries(base, backbone)
    if not 1 <= blocks <= len(below):
        raise PipelineError(
            f"fine_tune.unfreeze = {blocks}: {backbone} has {len(below)} blocks to count from "
            f"the top; use 1 to {len(below)}, or all"
        )
    return below[blocks - 1]


def top_part(base: keras.Model, backbone: str, blocks: int) -> keras.Model:
    """The base's top ``blocks`` blocks as a model from their boundary to the base's output,
    sharing its layers (training it trains the base)."""
    return keras.Model(_boundary(base, backbone, blocks), base.output, name="top_blocks")


def top_layers(base: keras.Model, backbone: str, blocks: int) -> list:
    """The layers of the base in its top ``blocks`` blocks."""
    part = top_part(base, backbone, blocks)
    return [layer for layer in part.layers if not isinstance(layer, keras.layers.InputLayer)]


def trunk(extractor: keras.Model, backbone: str, blocks: int) -> keras.Model:
    """Images of the stored size -> the base's output below its top ``blocks`` blocks: the
    extractor's resize and preprocessing, then the frozen blocks (inference mode)."""
    base = backbone_of(extractor)
    below = keras.Model(base.input, _boundary(base, backbone, blocks), name="frozen_blocks")
    inputs = keras.Input(extractor.input.shape[1:], dtype="float32", name="pixels")
    x = extractor.get_layer("resize")(inputs)
    if any(layer.name == "preprocess" for layer in extractor.layers):
        x = extractor.get_layer("preprocess")(x)
    return keras.Model(inputs, below(x, training=False), name="trunk")


def trainable_top(classifier: keras.Model, backbone: str, blocks: int) -> keras.Model:
    """Boundary activations -> class probabilities: the classifier's top blocks and head, the
    same layer objects, so what trains here trains in the classifier."""
    extractor = next(layer for layer in classifier.layers if layer.name == "feature_extractor")
    head = classifier.get_layer("head")
    base = backbone_of(extractor)
    part = top_part(base, backbone, blocks)
    inputs = keras.Input(part.input.shape[1:], name="boundary")
    return keras.Model(inputs, head(part(inputs, training=False)), name="top_and_head")


def copy_trained(top: keras.Model, classifier: keras.Model) -> None:
    """The weights of a trained top part (``trainable_top``'s model, or one a checkpoint
    brought back) into the classifier's layers of the same names."""
    base = backbone_of(classifier.get_layer("feature_extractor"))
    for layer in top.get_layer("top_blocks").layers:
        if layer.weights:
            base.get_layer(layer.name).set_weights(layer.get_weights())
    classifier.get_layer("head").set_weights(top.get_layer("head").get_weights())


class AsFloat32:
    """A float16 cache (memory-mapped) read as float32 rows: the top part's input dtype, so no
    float16 tensor reaches the backend (TensorFlow's oneDNN has no float16 kernels without
    AVX-512 and says so)."""

    def __init__(self, array):
        self.array, self.shape = array, array.shape

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, rows) -> np.ndarray:
        return np.asarray(self.array[rows], dtype=np.float32)


def cache_bytes(images: int, shape, dtype: str = CACHE_DTYPE) -> int:
    return images * int(np.prod(shape)) * np.dtype(dtype).itemsize


def ensure_room(folder: Path, needed: int, what: str) -> None:
    """Refuse, before anything is written, a cache the file system under ``folder`` cannot
    hold (with 5 % to spare for everything else writing there)."""
    free = shutil.disk_usage(folder).free
    if needed > free * 0.95:
        raise PipelineError(
            f"{what} needs {size_text(needed)} and the disk under {folder} has "
            f"{size_text(free)} free: free some space, or set fine_tune.unfreeze to fewer "
            "blocks (or all)"
        )


def size_text(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def write_cache(
    model: keras.Model, images: np.ndarray, batch_size: int, out, label: str, chunk=CHUNK_IMAGES
) -> None:
    """``model``'s outputs for uint8 images, in order, written into ``out`` (a memory-mapped
    array of the cache's dtype) chunk by chunk. A value float16 cannot hold is an error, not
    an infinity in the cache."""
    bar = ProgressBar(len(images), f"boundary {label}", unit=" images")
    limit = np.finfo(out.dtype).max
    for start in range(0, len(images), chunk):
        # float32 first: a mixed bfloat16 trunk's outputs are cast once, exactly, then rounded
        # to the cache's dtype.
        part = np.asarray(
            predict_in_batches(model, images[start : start + chunk], batch_size), np.float32
        )
        if not np.all(np.abs(part) <= limit):
            raise PipelineError(
                f"boundary: an activation of {label} image {start}+ is {np.abs(part).max():.3g}, "
                f"beyond {out.dtype}; set fine_tune.unfreeze: all"
            )
        out[start : start + len(part)] = part
        bar.update(len(part))
    bar.close()


def multiply_adds(model_layers) -> int:
    """Multiply-adds of one image through these layers (convolutions and dense layers, the
    bulk of a vision backbone's arithmetic), counted from their shapes."""
    total = 0
    for layer in model_layers:
        if not hasattr(layer, "kernel_size") and not isinstance(layer, keras.layers.Dense):
            continue
        out = layer.output.shape
        positions = int(np.prod(out[1:-1])) if len(out) > 2 else 1
        c_in = layer.input.shape[-1]
        if isinstance(layer, keras.layers.Dense):
            total += positions * c_in * out[-1]
            continue
        window = int(np.prod(layer.kernel_size))
        if isinstance(layer, keras.layers.SeparableConv2D):
            total += positions * c_in * layer.depth_multiplier * (window + out[-1])
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            total += positions * c_in * layer.depth_multiplier * window
        else:
            total += positions * out[-1] * window * c_in // getattr(layer, "groups", 1)
    return total


def top_fraction(base: keras.Model, backbone: str, blocks: int) -> float:
    """The share of the base's multiply-adds in its top ``blocks`` blocks."""
    return multiply_adds(top_layers(base, backbone, blocks)) / max(1, multiply_adds(base.layers))
