"""Test-set metrics from predicted probabilities (scikit-learn), shared by evaluate and tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, log_loss, precision_recall_fscore_support


def summarize(labels, fine_tuned, head_only) -> dict:
    """The headline figures: accuracy and loss of the fine-tuned model and of the head alone."""
    everything = list(range(fine_tuned.shape[1]))

    def figures(probabilities):
        return {
            "test_accuracy": round(float(accuracy_score(labels, probabilities.argmax(1))), 6),
            "test_loss": round(float(log_loss(labels, probabilities, labels=everything)), 6),
        }

    fine, head = figures(fine_tuned), figures(head_only)
    # Key order is column order in `dvc exp show`: the two test accuracies first.
    return {
        "test_accuracy": fine["test_accuracy"],
        "head_only": head,
        "test_loss": fine["test_loss"],
    }


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
