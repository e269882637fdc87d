"""Input-pipeline overhead, shared by benchmark.py and gpu.py: training steps fed by the stages'
feeding (ArrayBatches: seeded order, a thread gathering the next batch) against the same steps
fed one constant in-memory batch, which costs nothing to gather."""

from __future__ import annotations

import time

import keras

from transfer_pipeline.data.feeding import ArrayBatches


class ConstantBatch(keras.utils.PyDataset):
    """One in-memory batch, `steps` times: feeding that costs nothing, on every backend."""

    def __init__(self, x, y, steps: int):
        super().__init__()
        self.x, self.y, self.steps = x, y, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int):
        return self.x, self.y


def step_seconds(model, x, y, batch: int, callbacks=(), rounds: int = 3) -> tuple[float, float]:
    """Seconds per step of a compiled model's `fit`, ArrayBatches vs a constant batch: the best
    of `rounds` interleaved epochs, after one warm-up epoch of each."""
    steps = len(x) // batch
    real = ArrayBatches(x[: steps * batch], y[: steps * batch], batch, shuffle_seed=0)
    constant = ConstantBatch(x[:batch], y[:batch], steps)

    def epoch_seconds(data):
        started = time.perf_counter()
        model.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=list(callbacks))
        return (time.perf_counter() - started) / steps

    epoch_seconds(real), epoch_seconds(constant)
    timed = [(epoch_seconds(real), epoch_seconds(constant)) for _ in range(rounds)]
    return min(r for r, _ in timed), min(c for _, c in timed)
