"""Feeding in-memory arrays to Keras on every backend: full batches, seeded order, one-hot."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np

from ..plumbing.errors import PipelineError
from ..running import cluster


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[labels]


class ArrayBatches(keras.utils.PyDataset):
    """In-memory arrays in batches of `batch_size` rows, for every backend; the model resizes
    and preprocesses.

    Every batch is full, so a compiled step never meets a second shape (on JAX each new shape is
    a new XLA compilation): the last batch is completed with the first rows of the epoch's order.
    - Training (a seed): each epoch's order is a permutation drawn from (seed, epoch), so a run
      resumed after epoch N sees the same batches as one that never stopped; the completing
      rows are trained on a second time in that epoch.
    - Validation (labels, no seed): the completing rows are padding, weighted 0. Compile with
      `weighted_metrics=["accuracy"]` (Keras' `metrics` ignore weights) and add
      `UnpaddedValLoss` (callbacks.py): Keras divides the loss by every row fed.
    - Prediction (no labels): `predict_in_batches` cuts the padding's outputs off.

    In a multi-host run (cluster.py) each process gets its share of every batch: process i of
    N the i-th of N equal slices, in the same seeded order. Keras (training) or
    ``predict_in_batches`` (prediction) puts the slices back together, so `batch_size` stays
    the global batch and N processes see the batches one process would.

    While a step runs, a thread gathers the next batch. Keras' own workers are not used: they
    start before `on_epoch_begin` sets the order, and serve batches left from an interrupted
    epoch (Keras' first look at the data) at the start of the next one.
    """

    def __init__(self, x, y, batch_size: int, shuffle_seed: int | None = None, first_epoch=0):
        super().__init__()
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, shuffle_seed
        self.process, self.processes = cluster.this_process()
        if batch_size % self.processes:
            raise PipelineError(
                f"a batch of {batch_size} cannot be split evenly between {self.processes} "
                f"processes; make the batch sizes in params.yaml multiples of {self.processes}"
            )
        self.share = batch_size // self.processes  # rows of each batch this process feeds
        self.epoch = first_epoch - 1
        self.order = np.arange(len(x))
        self.rows_fed = len(self) * batch_size  # the padding or repeated rows included
        self._gatherer = ThreadPoolExecutor(max_workers=1)
        self._next = None  # (index, future) of the batch gathered ahead

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int):
        ahead, self._next = self._next, None
        batch = ahead[1].result() if ahead and ahead[0] == index else self._gather(index)
        if index + 1 < len(self):
            self._next = (index + 1, self._gatherer.submit(self._gather, index + 1))
        return batch

    def _gather(self, index: int):
        first = index * self.batch_size + self.process * self.share
        positions = np.arange(first, first + self.share)
        rows = self.order[positions % len(self.x)]
        if self.y is None:
            return (self.x[rows],)
        if self.seed is not None:
            return self.x[rows], self.y[rows]
        return self.x[rows], self.y[rows], (positions < len(self.x)).astype(np.float32)

    def on_epoch_begin(self) -> None:
        self._next = None  # gathered in the previous order
        self.epoch += 1
        if self.seed is not None:
            self.order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))


def predict_in_batches(model: keras.Model, x, batch_size: int, callbacks=None) -> np.ndarray:
    """`model.predict` over `x` in full batches; the padding's outputs are cut off. In a
    multi-host run each process predicts its share of every batch on its own device, and
    every process gets all the rows back, in order."""
    batches = ArrayBatches(x, None, batch_size)
    predicted = model.predict(batches, verbose=0, callbacks=callbacks)
    if batches.processes > 1:
        # (process, batch, row of the share) -> (batch, process, row): the batches' order
        shares = cluster.gather(predicted).reshape(
            batches.processes, len(batches), batches.share, -1
        )
        predicted = shares.transpose(1, 0, 2, 3).reshape(len(batches) * batch_size, -1)
    return predicted[: len(x)]
