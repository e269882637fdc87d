"""Callbacks of both training stages: the epoch line, the NaN guard, DVCLive, a test hook.

None of them makes a step wait for the device: no batch hook, or one Keras may run on its
thread pool (`async_safe`). A batch hook without it turns Keras' asynchronous dispatch off and
converts the logs to Python floats after every step (keras/src/callbacks/callback_list.py).
"""

from __future__ import annotations

import math
import os
import subprocess
import time

import keras
import numpy as np

from ..plumbing.errors import PipelineError
from .live import HISTORY_KEYS, log_epoch
from .progress import ProgressBar, format_seconds


class EpochLog(keras.callbacks.Callback):
    """One line per epoch with the metrics, the epoch time and the ETA of the stage; an epoch
    that runs longer than a minute also shows its progress (a bar, or a line per 10 % in CI)."""

    # The batch hook only moves the bar (thread-safe); Keras waits for it before epoch end.
    async_safe = True

    def __init__(self, stage: str, epochs: int, images_per_epoch: int, batch_size: int):
        super().__init__()
        self.stage, self.epochs, self.images = stage, epochs, images_per_epoch
        self.batch_size = batch_size
        self.durations: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.monotonic()
        label = f"{self.stage} epoch {epoch + 1}/{self.epochs}"
        self.bar = ProgressBar(self.images, label, unit=" images", every=0.1, delay=60)
        self.counted = 0  # images of this epoch the bar has been given

    def on_train_batch_end(self, batch, logs=None):
        # ``batch`` is the last step of the call: with steps_per_execution > 1 a call covers
        # several batches (Keras calls this once per call; its last may name steps past the
        # epoch's end), so count every image up to that step's end, the epoch's at most.
        covered = min((batch + 1) * self.batch_size, self.images)
        self.bar.update(covered - self.counted)
        self.counted = covered

    def on_epoch_end(self, epoch, logs=None):
        self.bar.close()
        seconds = time.monotonic() - self.started
        self.durations.append(seconds)
        eta = np.mean(self.durations) * (self.epochs - epoch - 1)
        shown = "  ".join(f"{k} {logs[k]:.4f}" for k in HISTORY_KEYS if k in (logs or {}))
        print(
            f"{self.stage} epoch {epoch + 1}/{self.epochs}  {shown}  "
            f"{format_seconds(seconds)} ({self.images / seconds:.0f} img/s, validation included)  "
            f"ETA {format_seconds(eta)}",
            flush=True,
        )


class FailOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop at the end of the first epoch whose loss is NaN/Inf, with an error naming it: never
    save a NaN model. The epoch's loss is the mean over its batches: one NaN batch makes it NaN.
    Checked once per epoch, not per batch: a per-batch check would wait for every step."""

    def __init__(self, stage: str, lr_key: str):
        super().__init__()
        self.stage, self.lr_key = stage, lr_key

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise PipelineError(
                f"{self.stage}: the loss became {float(loss)} in epoch {epoch + 1}; nothing was "
                f"saved. Lower {self.lr_key} and run again"
            )


class UnpaddedValLoss(keras.callbacks.Callback):
    """Keras divides val_loss by every validation row fed, the padding that completes the last
    batch (weight 0, feeding.py) included: scale it to the mean over the real rows. First in
    the list, so that the other callbacks and the history see the mean."""

    def __init__(self, validation):
        super().__init__()
        self.factor = validation.rows_fed / len(validation.x)

    def on_epoch_end(self, epoch, logs=None):
        if logs and "val_loss" in logs:
            logs["val_loss"] *= self.factor


class AfterEpochHook(keras.callbacks.Callback):
    """For tests: ``TL_AFTER_EPOCH="<stage>:<epoch>:<shell command>"`` runs the command once that
    epoch (and its checkpoint) is complete, e.g. ``kill -KILL $PPID`` to stop a run at a
    deterministic point. Does nothing when the variable is unset."""

    def __init__(self, stage: str):
        super().__init__()
        stage_name, epoch, self.command = (os.environ.get("TL_AFTER_EPOCH") or "::").split(":", 2)
        self.epoch = int(epoch) if stage_name == stage and epoch else None

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            subprocess.run(self.command, shell=True, check=False)


class LiveEpochs(keras.callbacks.Callback):
    """Log every finished epoch to DVCLive."""

    def __init__(self, live):
        super().__init__()
        self.live = live

    def on_epoch_end(self, epoch, logs=None):
        log_epoch(self.live, logs or {})
