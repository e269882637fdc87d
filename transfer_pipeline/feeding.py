"""Feeding in-memory arrays to Keras on every backend: batches, seeded order, one-hot labels."""

from __future__ import annotations

import math

import keras
import numpy as np


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[labels]


class ArrayBatches(keras.utils.PyDataset):
    """In-memory arrays in batches, for every backend; the model resizes and preprocesses.

    With a seed, each epoch's order is a permutation drawn from (seed, epoch): a run resumed
    after epoch N sees the same batches as one that never stopped.
    """

    def __init__(self, x, y, batch_size: int, shuffle_seed: int | None = None, first_epoch=0):
        super().__init__()  # one worker: the order is set in on_epoch_begin, before any batch
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, shuffle_seed
        self.epoch = first_epoch - 1
        self.order = np.arange(len(x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        if self.y is None:
            return (self.x[rows],)
        return self.x[rows], self.y[rows]

    def on_epoch_begin(self) -> None:
        self.epoch += 1
        if self.seed is not None:
            self.order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))
