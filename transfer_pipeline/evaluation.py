"""Test-set metrics from predicted probabilities (scikit-learn), shared by evaluate and tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, log_loss, precision_recall_fscore_support


def summarize(labels, fine_tuned, head_only, class_names: list[str]) -> dict:
    everything = list(range(len(class_names)))
    predicted = fine_tuned.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=everything, zero_division=0
    )
    return {
        "test_accuracy": round(float(accuracy_score(labels, predicted)), 6),
        "test_loss": round(float(log_loss(labels, fine_tuned, labels=everything)), 6),
        "head_only": {
            "test_accuracy": round(float(accuracy_score(labels, head_only.argmax(1))), 6),
            "test_loss": round(float(log_loss(labels, head_only, labels=everything)), 6),
        },
        "per_class": {
            name: {
                "precision": round(float(precision[i]), 6),
                "recall": round(float(recall[i]), 6),
                "f1": round(float(f1[i]), 6),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
    }


def confusion_rows(labels, predicted, class_names: list[str]) -> pd.DataFrame:
    """One row per test image with class names: the input of DVC's `confusion` template."""
    names = np.asarray(class_names)
    return pd.DataFrame({"actual": names[labels], "predicted": names[predicted]})
