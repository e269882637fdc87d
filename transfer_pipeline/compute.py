"""Hardware setup shared by the TensorFlow stages: precision, determinism, distribution.

``configure()`` must run before any model or tensor exists: logical devices and the global
dtype policy can only be set while TensorFlow is still uninitialised.
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from .errors import PipelineError


def _gpus():
    return tf.config.list_physical_devices("GPU")


def _compute_capability(gpu) -> tuple[int, int]:
    details = tf.config.experimental.get_device_details(gpu)
    return details.get("compute_capability", (0, 0))


def resolve_precision(choice: str) -> str:
    """auto: bfloat16 mixed on Ampere or newer, float16 mixed on Volta/Turing, float32 on CPU."""
    if choice != "auto":
        return choice
    gpus = _gpus()
    if not gpus:
        return "float32"
    capability = _compute_capability(gpus[0])
    if capability >= (8, 0):
        return "mixed_bfloat16"
    if capability >= (7, 0):
        return "mixed_float16"
    return "float32"


def resolve_distribute(choice: str) -> str:
    if choice != "auto":
        return choice
    if os.environ.get("TF_CONFIG"):
        return "multi_worker"
    return "mirrored" if len(_gpus()) > 1 else "none"


def _strategy(kind: str) -> tf.distribute.Strategy:
    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise PipelineError(
                "compute.distribute = multi_worker needs the TF_CONFIG environment variable "
                "(cluster and task) on every worker; see README 'Several machines'"
            )
        json.loads(os.environ["TF_CONFIG"])  # fail early on a malformed TF_CONFIG
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = _gpus()
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    # No GPUs to mirror over: split the CPU into two logical devices. Slower than one device;
    # it exists so the mirrored code path can be exercised (and tested) on any machine.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def configure(params: dict) -> tf.distribute.Strategy:
    """Seed everything, set the dtype policy, and return the distribution strategy."""
    compute = params["compute"]
    distribute = resolve_distribute(compute["distribute"])
    strategy = _strategy(distribute)
    precision = resolve_precision(compute["precision"])
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(params["seed"])
    if not _gpus():
        # Same params, same seed -> same numbers on CPU. GPUs keep their fast
        # non-deterministic kernels (README, Determinism).
        tf.config.experimental.enable_op_determinism()
    print(
        f"compute: precision={precision} distribute={distribute} "
        f"replicas={strategy.num_replicas_in_sync} gpus={len(_gpus())}",
        flush=True,
    )
    return strategy


def jit_compile(params: dict):
    value = params["compute"]["jit_compile"]
    return "auto" if value == "auto" else bool(value)
