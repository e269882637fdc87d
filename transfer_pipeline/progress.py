"""Progress a person can follow, quiet enough for CI logs.

In a terminal a bar redraws in place; under ``CI=true`` (or when output is not a terminal)
it prints one line per quarter (or per ``every``), so logs stay short. With ``delay`` nothing
is shown until that many seconds have passed (progress inside a long epoch only).
"""

from __future__ import annotations

import os
import sys
import time


def quiet_logs() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or not sys.stderr.isatty()


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class ProgressBar:
    def __init__(
        self,
        total: float,
        label: str,
        unit: str = "",
        scale: float = 1.0,
        every: float = 0.25,
        delay: float = 0.0,
    ):
        self.total, self.label, self.unit, self.scale = total, label, unit, scale
        self.done = 0.0
        self.start = time.monotonic()
        self.quiet = quiet_logs()
        self.every, self.delay = every, delay
        self.next_line = every
        self.drawn = False

    def update(self, amount: float) -> None:
        self.done += amount
        fraction = self.done / self.total if self.total else 0.0
        elapsed = time.monotonic() - self.start
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        text = (
            f"{self.label}: {self._amount(self.done)}/{self._amount(self.total)}{self.unit} "
            f"({fraction:.0%}, {format_seconds(elapsed)} elapsed, ETA {format_seconds(eta)})"
        )
        if elapsed < self.delay:
            return
        if not self.quiet:
            bar = "#" * int(30 * fraction)
            print(f"\r[{bar:<30}] {text}", end="", file=sys.stderr, flush=True)
            self.drawn = True
        elif self.total and fraction >= self.next_line:
            print(text, file=sys.stderr, flush=True)
            while fraction >= self.next_line:
                self.next_line += self.every

    def _amount(self, value: float) -> str:
        """Counts as integers ("1024/4000 images"); scaled amounts with one decimal (MB)."""
        return f"{value * self.scale:.1f}" if self.scale != 1 else str(int(round(value)))

    def close(self) -> None:
        if self.drawn:
            print(file=sys.stderr, flush=True)


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
