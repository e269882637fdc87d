"""Feature extraction with the frozen backbone: large batches, a progress bar, and outputs
written chunk by chunk (into a memory-mapped .npy in the stage), so memory does not grow with
the split."""

from __future__ import annotations

import keras
import numpy as np

from ..data.feeding import predict_in_batches
from ..running.progress import ProgressBar

CHUNK_BATCHES = 32  # batches per predict call: the features extraction holds at once


class _NotKept:
    """An ``out`` that keeps nothing (``extract_features(..., out=NOT_KEPT)``)."""

    def __setitem__(self, rows, values) -> None:
        pass


NOT_KEPT = _NotKept()


class _PredictProgress(keras.callbacks.Callback):
    # The batch hook only moves the bar (thread-safe); Keras waits for it before predict ends.
    async_safe = True

    def __init__(self, total_images: int, batch_size: int, label: str):
        super().__init__()
        self.bar = ProgressBar(total_images, label, unit=" images")
        self.batch_size, self.total = batch_size, total_images
        self.offset = 0  # images before the current predict call

    def on_predict_batch_end(self, batch, logs=None):
        done = self.offset + batch * self.batch_size
        self.bar.update(min(self.batch_size, self.total - done))


def extract_features(
    extractor: keras.Model, images: np.ndarray, batch_size: int, label: str, out=None
) -> np.ndarray:
    """Pooled features (float32) for uint8 images, in order, written into ``out`` (a new
    array if None) every CHUNK_BATCHES batches; every chunk is whole batches but the last,
    which is padded, so the predict step compiles once."""
    if out is None:
        out = np.empty((len(images), extractor.output.shape[-1]), np.float32)
    progress = _PredictProgress(len(images), batch_size, f"features {label}")
    rows = CHUNK_BATCHES * batch_size
    for start in range(0, len(images), rows):
        progress.offset = start
        chunk = images[start : start + rows]
        out[start : start + len(chunk)] = predict_in_batches(
            extractor, chunk, batch_size, callbacks=[progress]
        )
    progress.bar.close()
    return out
