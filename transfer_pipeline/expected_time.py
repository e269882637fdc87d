"""What this run should take on this machine, from a rate measured on it in this run.

The features stage times a few batches of its own forward pass before its long work and prints
what the run's slow parts should take: the extraction, and one fine-tuning epoch through the
whole base or of the top blocks from the boundary cache. No rate measured elsewhere is used.

Training is estimated as TRAINING_FACTOR forward passes: the backward pass computes gradients
with respect to both the activations and the weights, each about the forward's multiply-adds,
so a step is about 3 forward passes (by FLOPs; on a 2-core Zen 3 the whole Xception base trained
at 3.4, issue 46). Fine-tuning the top blocks from the cache costs their share of the base's
multiply-adds (blocks.top_fraction) and the cache costs one pass of the blocks below.
"""

from __future__ import annotations

TRAINING_FACTOR = 3


def expected_run(images_per_s: float, sizes: dict[str, int], top_fractions: dict) -> str:
    """The estimate as one line: ``images_per_s`` is the measured forward rate, ``sizes`` the
    images per split, ``top_fractions`` {blocks: share of the base's multiply-adds} (empty
    where the backbone has no blocks to count)."""
    train, val = sizes["train"], sizes["val"]
    per_image = 1 / images_per_s
    features = sum(sizes.values()) * per_image
    epoch = (TRAINING_FACTOR * train + val) * per_image
    parts = [
        f"expected here: features about {format_duration(features)} for these "
        f"{sum(sizes.values()):,} images; a fine-tuning epoch ({train:,} + {val:,} images) of "
        f"the whole base about {format_duration(epoch)}"
    ]
    for blocks, share in top_fractions.items():
        cache = (train + val) * (1 - share) * per_image
        top_epoch = (TRAINING_FACTOR * train + val) * share * per_image
        parts.append(
            f"of the top {blocks} block{'s' if blocks > 1 else ''} from the cache about "
            f"{format_duration(top_epoch)} ({share:.0%} of the arithmetic; the cache once, "
            f"{format_duration(cache)})"
        )
    return (
        "; ".join(parts)
        + f" (measured here: the forward pass at {images_per_s:.1f} images a second; training "
        f"taken as {TRAINING_FACTOR} forward passes, by FLOPs)"
    )


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes / 60:.1f} h"
