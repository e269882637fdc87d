"""Accuracy with its uncertainty: Wilson intervals, McNemar's exact test, a paired difference.

Every accuracy the project prints carries its 95 % interval and its image count. Two models
evaluated on the same test images are compared image by image (the discordant images decide):
McNemar's exact test (Dietterich 1998) is a binomial test on them, and the interval of the
difference in accuracy is Newcombe's (1998, method 10), built from the two Wilson intervals
and the correlation of the paired answers; a Wald interval is poor with few discordant images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import binomtest, norm

CONFIDENCE = 0.95
Z = float(norm.ppf(0.5 + CONFIDENCE / 2))  # 1.96
Z_POWER = float(norm.ppf(0.80))  # 0.84: 80 % power for the images-needed arithmetic
SIGNIFICANT = 0.05  # a p-value below this: the test split tells the two models apart


def wilson_interval(right: int, images: int) -> tuple[float, float]:
    """The 95 % Wilson score interval of ``right`` of ``images`` (scipy's, exact bounds)."""
    if images <= 0:
        raise ValueError("an accuracy needs at least one image")
    interval = binomtest(int(right), int(images)).proportion_ci(CONFIDENCE, method="wilson")
    return float(interval.low), float(interval.high)


def accuracy_figures(right: int, images: int) -> dict:
    """An accuracy as the metrics files store it: the value, its interval, the count."""
    low, high = wilson_interval(right, images)
    return {
        "accuracy": round(right / images, 6),
        "low": round(low, 6),
        "high": round(high, 6),
        "images": int(images),
    }


def describe_accuracy(right: int, images: int) -> str:
    """ "82.0 % (78.4-85.1 %, 500 images)"."""
    low, high = wilson_interval(right, images)
    return f"{100 * right / images:.1f} % ({100 * low:.1f}-{100 * high:.1f} %, {images:,} images)"


def mcnemar_p_value(only_first: int, only_second: int) -> float:
    """McNemar's exact two-sided p-value: the binomial test of the discordant images at 1/2.
    1.0 when no image is discordant."""
    discordant = int(only_first) + int(only_second)
    if discordant == 0:
        return 1.0
    return float(binomtest(int(only_first), discordant, 0.5).pvalue)


def paired_difference_interval(
    both: int, only_first: int, only_second: int, neither: int
) -> tuple[float, float]:
    """The 95 % interval of accuracy(first) - accuracy(second) on the same images (Newcombe
    1998, method 10: the Wilson intervals of both accuracies, combined with the
    continuity-corrected phi correlation of the paired answers)."""
    n = both + only_first + only_second + neither
    first, second = (both + only_first) / n, (both + only_second) / n
    low1, high1 = wilson_interval(both + only_first, n)
    low2, high2 = wilson_interval(both + only_second, n)
    margins = (both + only_first) * (only_second + neither) * (both + only_second)
    margins *= only_first + neither
    # phi with Newcombe's continuity correction: agreement beyond n/2 only, disagreement as is.
    agreement = both * neither - only_first * only_second
    if agreement > n / 2:
        agreement -= n / 2
    elif agreement > 0:
        agreement = 0
    phi = 0.0 if margins == 0 else agreement / math.sqrt(margins)
    difference = first - second
    below = math.sqrt(
        max(
            (first - low1) ** 2
            - 2 * phi * (first - low1) * (high2 - second)
            + (high2 - second) ** 2,
            0.0,
        )
    )
    above = math.sqrt(
        max(
            (high1 - first) ** 2
            - 2 * phi * (high1 - first) * (second - low2)
            + (second - low2) ** 2,
            0.0,
        )
    )
    return max(difference - below, -1.0), min(difference + above, 1.0)


def unpaired_difference(
    first_right: int, first_images: int, second_right: int, second_images: int
) -> tuple[float, float, float, float]:
    """accuracy(second) - accuracy(first) on different images, the weaker comparison: the
    difference, its 95 % interval (Newcombe's square-and-add of the two Wilson intervals) and
    Fisher's exact p-value."""
    from scipy.stats import fisher_exact

    p1, p2 = first_right / first_images, second_right / second_images
    low1, high1 = wilson_interval(first_right, first_images)
    low2, high2 = wilson_interval(second_right, second_images)
    difference = p2 - p1
    low = difference - math.sqrt((p2 - low2) ** 2 + (high1 - p1) ** 2)
    high = difference + math.sqrt((high2 - p2) ** 2 + (p1 - low1) ** 2)
    table = [
        [first_right, first_images - first_right],
        [second_right, second_images - second_right],
    ]
    return difference, low, high, float(fisher_exact(table).pvalue)


def images_to_resolve(only_first: int, only_second: int, images: int) -> int | None:
    """Arithmetic: about how many test images McNemar's test would need to call the observed
    difference significant with 80 % power, at the observed rate of discordant images
    (n = (z_0.975 + z_0.80)^2 * q / d^2, q the discordant share, d the difference).
    None when there is no difference to resolve."""
    if only_first == only_second:
        return None
    discordant_share = (only_first + only_second) / images
    difference = (only_first - only_second) / images
    return math.ceil((Z + Z_POWER) ** 2 * discordant_share / difference**2)


@dataclass(frozen=True)
class PairedComparison:
    """Two models' answers on the same test images, counted image by image."""

    images: int
    both: int  # images both got right
    only_first: int
    only_second: int
    neither: int
    same_answers: bool  # every image got the same class from both

    @classmethod
    def of(cls, labels, first_classes, second_classes) -> PairedComparison:
        first_right = first_classes == labels
        second_right = second_classes == labels
        return cls(
            images=int(len(labels)),
            both=int((first_right & second_right).sum()),
            only_first=int((first_right & ~second_right).sum()),
            only_second=int((~first_right & second_right).sum()),
            neither=int((~first_right & ~second_right).sum()),
            same_answers=bool((first_classes == second_classes).all()),
        )

    @property
    def first_right(self) -> int:
        return self.both + self.only_first

    @property
    def second_right(self) -> int:
        return self.both + self.only_second

    @property
    def difference(self) -> float:
        """accuracy(second) - accuracy(first)."""
        return (self.only_second - self.only_first) / self.images

    def difference_interval(self) -> tuple[float, float]:
        """The 95 % interval of accuracy(second) - accuracy(first)."""
        low, high = paired_difference_interval(
            self.both, self.only_second, self.only_first, self.neither
        )
        return low, high

    @property
    def p_value(self) -> float:
        return mcnemar_p_value(self.only_first, self.only_second)

    def verdict(self, first: str, second: str) -> str:
        """One plain sentence: which is better, or that this split cannot tell them apart."""
        if self.same_answers:
            return (
                f"identical predictions: {first} and {second} gave every test image the same class."
            )
        if self.only_first == self.only_second:
            return (
                f"{first} and {second} are equally accurate on these {self.images:,} test images "
                f"(each got {self.only_first} right that the other missed): nothing to resolve."
            )
        better, worse = (second, first) if self.difference > 0 else (first, second)
        points = 100 * abs(self.difference)
        if self.p_value < SIGNIFICANT:
            return (
                f"{better} is better than {worse} by {points:.1f} points on the same "
                f"{self.images:,} test images (McNemar p = {self.p_value:.3g})."
            )
        needed = images_to_resolve(self.only_first, self.only_second, self.images)
        return (
            f"this test split cannot tell {first} and {second} apart (McNemar p = "
            f"{self.p_value:.2g}); by arithmetic, a difference of {points:.1f} points at this "
            f"rate of disagreement would need about {needed:,} test images to resolve "
            f"(80 % power)."
        )

    def as_dict(self, first: str, second: str) -> dict:
        low, high = self.difference_interval()
        return {
            "first": first,
            "second": second,
            "images": self.images,
            "first_accuracy": accuracy_figures(self.first_right, self.images),
            "second_accuracy": accuracy_figures(self.second_right, self.images),
            "difference": round(self.difference, 6),
            "difference_low": round(low, 6),
            "difference_high": round(high, 6),
            "only_first_right": self.only_first,
            "only_second_right": self.only_second,
            "mcnemar_p": round(self.p_value, 6),
            "same_answers": self.same_answers,
            "verdict": self.verdict(first, second),
        }
