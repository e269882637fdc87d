"""What a run should take on a 2-core CPU, by arithmetic from rates the team measured there.

Printed by the features stage when it starts; only for the setting the rates were measured
for, nothing otherwise.
"""

from __future__ import annotations

# Measured by the team (issue 26) through `dvc repro` on a 2-core CPU, with real CIFAR-10 and
# Xception's ImageNet weights, TensorFlow, float32 at 224 px: features at 4.5 images/s, and one
# fine-tuning epoch of the whole base (batch 32) over 2,000 train + 500 val images in 16 min.
MEASURED_SETTING = {"backbone": "xception", "image_size": 224, "backend": "tensorflow"}
EXTRACTION_IMAGES_PER_S = 4.5
FINE_TUNE_EPOCH_S, FINE_TUNE_TRAIN, FINE_TUNE_VAL = 16 * 60, 2000, 500


def expected_on_two_cpus(setting: dict, precision: str, sizes: dict[str, int]) -> str | None:
    """What the features stage and each fine-tuning epoch should take on a 2-core CPU, by
    arithmetic from the rates measured for one setting; None for any other setting or precision.
    Validation images count at the extraction rate (inference only), training images at the
    rest of the measured epoch."""
    if setting != MEASURED_SETTING or precision != "float32":
        return None
    per_inference = 1 / EXTRACTION_IMAGES_PER_S
    per_training = (FINE_TUNE_EPOCH_S - FINE_TUNE_VAL * per_inference) / FINE_TUNE_TRAIN
    features = sum(sizes.values()) * per_inference
    epoch = sizes["train"] * per_training + sizes["val"] * per_inference
    return (
        f"expected on a 2-core CPU: about {_minutes(features)} for these "
        f"{sum(sizes.values()):,} images, then about {_minutes(epoch)} per fine-tuning epoch of "
        "the whole base (arithmetic from rates measured for xception at 224 px in float32: "
        f"{EXTRACTION_IMAGES_PER_S} images/s extracting, {FINE_TUNE_EPOCH_S // 60} min for an "
        f"epoch over {FINE_TUNE_TRAIN:,} + {FINE_TUNE_VAL:,} images)"
    )


def _minutes(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes} min" if minutes < 90 else f"{minutes / 60:.1f} h"
