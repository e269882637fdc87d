"""What this run should take on this machine, from rates measured on it in this run.

The features stage, before its long work, times a few batches of its own forward pass and a
few training steps of a throwaway copy of the backbone (random weights, a throwaway dense head):
of the whole base, and of its top 1 and 2 blocks fed from an input of their boundary's shape.
From these it prints what the run's slow parts should take: the extraction, and one
fine-tuning epoch through the whole base or of the top blocks from the boundary cache. No rate
measured elsewhere is used. The training steps are timed at TIMING_TRAIN_BATCH images (the
stage's batch is larger and a little faster per image); validation runs forward only.
"""

from __future__ import annotations

import keras
import numpy as np

from ..data.feeding import predict_in_batches
from ..models.backbones import BLOCKS
from ..models.blocks import top_fraction, top_layers, top_part
from ..models.model import backbone_of, unfreeze
from .precision import TIMING_TRAIN_BATCH, images_per_s

SHOWN_BLOCKS = (1, 2)


def measure_and_expect(extractor, throwaway, backbone: str, images, sizes: dict) -> str:
    """The estimate as one line. ``extractor``: the model that will extract (its forward pass
    is timed); ``throwaway``: an extractor of the same architecture whose training is timed
    (its weights change); ``images``: a few uint8 images."""
    forward = images_per_s(lambda: predict_in_batches(extractor, images, len(images)), len(images))
    x = images[:TIMING_TRAIN_BATCH]
    base = backbone_of(throwaway)
    whole = _training_rate(throwaway, x, base, "all")
    tops = {}
    for blocks in (n for n in SHOWN_BLOCKS if n <= BLOCKS.get(backbone, 0)):
        part = top_part(base, backbone, blocks)
        boundary = np.random.default_rng(blocks).standard_normal((len(x), *part.input.shape[1:]))
        rate = _training_rate(
            part, boundary.astype(np.float32), base, top_layers(base, backbone, blocks)
        )
        tops[blocks] = (rate, top_fraction(base, backbone, blocks))
    return expected_run(forward, sizes, whole, tops)


def _training_rate(model, x, base, trained) -> float:
    """Images/s of training steps of ``model`` (its ``trained`` part) under a dense head."""
    unfreeze(base, trained)
    inputs = keras.Input(model.input.shape[1:])
    outputs = keras.layers.Dense(10, activation="softmax")(model(inputs))
    trainer = keras.Model(inputs, outputs)
    trainer.compile(optimizer="adam", loss="categorical_crossentropy")  # after unfreezing
    y = np.eye(10, dtype=np.float32)[np.arange(len(x)) % 10]
    return images_per_s(lambda: trainer.train_on_batch(x, y), len(x))


def expected_run(forward: float, sizes: dict[str, int], whole: float, tops: dict) -> str:
    """The estimate as one line, from measured rates (images a second): ``forward`` through the
    whole base, ``whole`` training it, ``tops`` {blocks: (training rate, share of the base's
    multiply-adds)} of its top blocks (empty where the backbone has no blocks to count)."""
    train, val = sizes["train"], sizes["val"]
    features = sum(sizes.values()) / forward
    epoch = train / whole + val / forward
    parts = [
        f"expected here: features about {format_duration(features)} for these "
        f"{sum(sizes.values()):,} images; a fine-tuning epoch ({train:,} + {val:,} images) of "
        f"the whole base about {format_duration(epoch)}"
    ]
    for blocks, (rate, share) in tops.items():
        cache = (train + val) * (1 - share) / forward
        top_epoch = train / rate + val * share / forward
        parts.append(
            f"of the top {blocks} block{'s' if blocks > 1 else ''} from the cache about "
            f"{format_duration(top_epoch)} (the cache once, {format_duration(cache)})"
        )
    trained = ", ".join(
        [f"whole base {whole:.1f}"] + [f"top {n} {rate:.1f}" for n, (rate, _) in tops.items()]
    )
    return (
        "; ".join(parts)
        + f" (measured here, images a second: forward {forward:.1f}; training {trained})"
    )


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes / 60:.1f} h"
