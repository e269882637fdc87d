"""Test-set metrics from predicted probabilities (scikit-learn), each accuracy with its 95 %
interval; shared by evaluate, the report and tests."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, precision_recall_fscore_support

from .statistics import accuracy_figures


def summarize(
    labels, fine_tuned, head_only, validation: dict[str, float], validation_images: int
) -> dict:
    """The headline figures, each accuracy with its 95 % Wilson interval and its image count.

    ``validation`` holds the validation accuracy of the weights each model ships
    (``shipped``: the best fine-tuning epoch's, or the head's when fine-tuning did not run;
    ``head_only``: the head's), as training measured it on ``validation_images`` images.
    """
    everything = list(range(fine_tuned.shape[1]))
    images = len(labels)

    def right(probabilities) -> int:
        return int((probabilities.argmax(1) == labels).sum())

    def loss(probabilities) -> float:
        return round(float(log_loss(labels, probabilities, labels=everything)), 6)

    def interval(right_answers: int, count: int) -> dict:
        figures = accuracy_figures(right_answers, count)
        return {"low": figures["low"], "high": figures["high"]}

    def validation_right(accuracy: float) -> int:
        return round(accuracy * validation_images)  # Keras' accuracy is right / images

    fine_right, head_right = right(fine_tuned), right(head_only)
    # Key order is column order in `dvc exp show`: the validation accuracy runs are chosen by,
    # then the two test accuracies.
    return {
        "validation_accuracy": round(validation["shipped"], 6),
        "test_accuracy": round(fine_right / images, 6),
        "head_only": {
            "validation_accuracy": round(validation["head_only"], 6),
            "test_accuracy": round(head_right / images, 6),
            "test_loss": loss(head_only),
        },
        "test_loss": loss(fine_tuned),
        "interval95": {
            "validation_accuracy": interval(
                validation_right(validation["shipped"]), validation_images
            ),
            "test_accuracy": interval(fine_right, images),
            "head_only": {"test_accuracy": interval(head_right, images)},
        },
        "images": {"validation": int(validation_images), "test": int(images)},
    }


def shipped_validation_accuracy(head_curve: list[float], fine_tune_curve: list[float]) -> dict:
    """The validation accuracy of the weights each model ships, from the training stages'
    per-epoch DVCLive curves: the head's last epoch (train_head saves its last weights) and the
    best fine-tuning epoch (fine_tune keeps the epoch of the highest validation accuracy); the
    head's when fine-tuning did not run (no curve)."""
    head = float(head_curve[-1])
    fine = max(fine_tune_curve) if fine_tune_curve else head
    return {"shipped": float(fine), "head_only": head}


def fingerprint_of_test_split(images, labels) -> str:
    """SHA-256 of the test images and labels in their order: two runs with the same
    fingerprint were evaluated on the same test images (tl-compare checks it)."""
    digest = hashlib.sha256()
    digest.update(str(images.shape).encode())
    for start in range(0, len(images), 1024):  # a memory map: a chunk at a time
        digest.update(np.ascontiguousarray(images[start : start + 1024]).tobytes())
    digest.update(np.asarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def per_class_table(labels, fine_tuned, class_names: list[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per class (a `dvc plots` table and the report's)."""
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, fine_tuned.argmax(1), labels=list(range(len(class_names))), zero_division=0
    )
    return pd.DataFrame(
        {
            "class": class_names,
            "precision": np.round(precision, 6),
            "recall": np.round(recall, 6),
            "f1": np.round(f1, 6),
            "support": support.astype(int),
        }
    )
