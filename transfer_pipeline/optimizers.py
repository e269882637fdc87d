"""The optimizers and the learning-rate schedule of both training stages."""

from __future__ import annotations

import keras


def optimizer(name: str, lr, momentum: float = 0.9, weight_decay: float = 0.0):
    """The optimizer a stage's params name; weight decay > 0 turns adam into adamw (decoupled
    decay) and is applied by every other optimizer too."""
    decay = weight_decay if weight_decay > 0 else None
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=momentum, weight_decay=decay)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr, weight_decay=decay)
    if name == "adamw" or decay:
        return keras.optimizers.AdamW(
            learning_rate=lr, **({"weight_decay": decay} if decay else {})
        )
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
