"""Feature extraction with the frozen backbone: large batches, a progress bar."""

from __future__ import annotations

import keras
import numpy as np

from .feeding import predict_in_batches
from .progress import ProgressBar


class _PredictProgress(keras.callbacks.Callback):
    # The batch hook only moves the bar (thread-safe); Keras waits for it before predict ends.
    async_safe = True

    def __init__(self, total_images: int, batch_size: int, label: str):
        super().__init__()
        self.bar = ProgressBar(total_images, label, unit=" images")
        self.batch_size, self.total = batch_size, total_images

    def on_predict_batch_end(self, batch, logs=None):
        self.bar.update(min(self.batch_size, self.total - batch * self.batch_size))

    def on_predict_end(self, logs=None):
        self.bar.close()


def extract_features(extractor: keras.Model, images: np.ndarray, batch_size: int, label: str):
    """Pooled features (float32) for uint8 images, in order."""
    progress = _PredictProgress(len(images), batch_size, f"features {label}")
    features = predict_in_batches(extractor, images, batch_size, callbacks=[progress])
    return features.astype(np.float32)
