"""Metrics and curves through DVCLive: each epoch is on disk as soon as it ends, in the
stage's partial DVCLive folder (``stage_outputs.StageOutputs``), moved into place when it finishes.

dvc.yaml declares the DVCLive folders itself (``dvcyaml=False``), and DVC runs the stages
(``save_dvc_exp=False``: DVCLive must not make experiments of its own). ``dvclive.keras``
imports TensorFlow, so the Keras callback is our own (``callbacks.LiveEpochs``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def open_live(folder, writer: bool = True):
    """A fresh DVCLive logger writing to ``folder``; ``writer=False`` (a multi-host run's
    processes but the first) logs nothing: DVCLive also writes into the project's .dvc/tmp."""
    if not writer:
        return _NotLogged()
    from dvclive import Live

    return Live(str(folder), dvcyaml=False, save_dvc_exp=False, report=None)


class _NotLogged:
    """A DVCLive logger that keeps nothing: every call does nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def log_epoch(live, values: dict) -> None:
    """One finished epoch: its metrics as one DVCLive step."""
    for key in HISTORY_KEYS:
        live.log_metric(key, round(float(values[key]), 6))
    live.next_step()


def log_summary(live, values: dict, prefix: str = "") -> None:
    """Figures of the whole run, in metrics.json only (no curve); nested dicts stay nested."""
    for key, value in values.items():
        if isinstance(value, dict):
            log_summary(live, value, f"{prefix}{key}/")
        else:
            live.log_metric(f"{prefix}{key}", value, plot=False)


def read_history(folder) -> pd.DataFrame:
    """The per-epoch curves a stage logged (columns epoch, loss, accuracy, val_*)."""
    metrics = Path(folder) / "plots" / "metrics"
    frame = None
    for key in HISTORY_KEYS:
        column = pd.read_csv(metrics / f"{key}.tsv", sep="\t")[["step", key]]
        frame = column if frame is None else frame.merge(column, on="step")
    frame.insert(0, "epoch", frame.pop("step") + 1)
    return frame
