"""The optimizers and the learning-rate schedule of both training stages."""

from __future__ import annotations

import keras


def optimizer(lr, weight_decay: float = 0.0):
    if weight_decay > 0:
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay)
    return keras.optimizers.Adam(learning_rate=lr)


def cosine_with_warmup(lr: float, epochs: int, warmup_epochs: int, steps_per_epoch: int):
    total = epochs * steps_per_epoch
    warmup = warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else lr,
        decay_steps=max(1, total - warmup),
        warmup_target=lr if warmup else None,
        warmup_steps=warmup,
    )
