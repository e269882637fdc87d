"""One training step of the head (build_head, one BatchNorm) on one batch of 8 features, on one
device and under the pipeline's own mirrored strategy over two logical CPUs (4 images per
replica); prints, as JSON, the largest differences from the one-device step with BatchNorm
synchronized over the global batch (as train_head sets it) and per replica. Run by
test_experiments.py in a process of its own: logical devices must be set before TensorFlow
starts."""

import json

import keras
import numpy as np
import tensorflow as tf

from transfer_pipeline.models.model import batchnorm_statistics, build_head, synchronize_batchnorm
from transfer_pipeline.models.optimizers import optimizer
from transfer_pipeline.running.compute import _tensorflow_strategy

mirrored = _tensorflow_strategy("mirrored")
rng = np.random.default_rng(0)
features = rng.normal(0, 1, (8, 64)).astype("float32")
labels = np.eye(3, dtype="float32")[rng.integers(0, 3, 8)]


def one_step(strategy, synchronized: bool):
    keras.utils.set_random_seed(0)  # the same initial weights in every run
    with strategy.scope():
        head = build_head(64, [32], 0.0, 3)
        synchronize_batchnorm(head, synchronized)
        # Plain SGD: the update is lr x gradient, so a gradient's rounding stays that size
        # (Adam divides by |gradient| and magnifies the rounding of a near-zero one).
        head.compile(optimizer=optimizer("sgd", 0.1, 0.0), loss="categorical_crossentropy")
    data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(8)
    head.fit(data, epochs=1, verbose=0, shuffle=False)
    return head.get_weights(), batchnorm_statistics(head)


def largest(first, second) -> float:
    return max(float(np.abs(a - b).max()) for a, b in zip(first, second, strict=True))


weights, statistics = one_step(tf.distribute.get_strategy(), False)
result = {"replicas": mirrored.num_replicas_in_sync}
for synchronized in (True, False):
    mirrored_weights, mirrored_statistics = one_step(mirrored, synchronized)
    result["global" if synchronized else "per_replica"] = {
        "weights": largest(weights, mirrored_weights),
        "statistics": largest(statistics, mirrored_statistics),
    }
print(json.dumps(result))
