"""What each param may be: its type, range or allowed values (``SCHEMA``), one checker per
kind of value, and the constants the checks and the stages share."""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..models.backbones import ALL_BACKBONES
from ..running.backend import BACKENDS
from .errors import PipelineError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"

DATASETS = ("cifar10", "cifar100", "image_folder")
OPTIMIZERS = (
    "adam",
    "adamw",
    "sgd",
    "rmsprop",
)  # transfer_pipeline/models/optimizers.py builds them
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
# multi_host is JAX's multi-process runtime (cluster.py); TensorFlow has no multi-machine option:
# tf.distribute.MultiWorkerMirroredStrategy does not train under Keras 3.15
# (docs/gpus-and-clusters.md).
DISTRIBUTE = ("auto", "none", "mirrored", "multi_host")
EXPORT_FORMATS = (
    "saved_model",
    "onnx",
    "litert",
    "litert_int8",
)  # transfer_pipeline/shipping/export.py
WEIGHTS_DIR = "weights"  # local weights files live here: it is a DVC dependency of the stages
RAW_DATA_DIR = "data/raw"  # local data lives here: it is a DVC dependency of prepare

# The seed report's data sizes and epochs (the shipped defaults): a CIFAR-10 run with less of
# any is a small run, and the report says so.
SEED_RECIPE = {
    "data.train_size": 35000,
    "data.val_size": 15000,
    "data.test_size": 10000,
    "train_head.epochs": 15,
    "fine_tune.epochs": 15,
}


class ParamError(PipelineError):
    pass


# --- one checker per kind of value; each returns the cleaned value or a reason it is wrong ---


def _float(minimum=None, maximum=None, above=None):
    def check(value):
        # DVC's `-S lr=1e-4` writes YAML 1.2, which PyYAML (YAML 1.1) reads back as a string.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None, "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, "a number"
        value = float(value)
        if not math.isfinite(value):
            return None, "a finite number"
        if above is not None and value <= above:
            return None, f"a number > {above}"
        if minimum is not None and value < minimum:
            return None, f"a number >= {minimum}"
        if maximum is not None and value > maximum:
            return None, f"a number <= {maximum}"
        return value, None

    return check


def _or_null(check_value):
    """``check_value``, or null (None)."""

    def check(value):
        if value is None:
            return None, None
        value, problem = check_value(value)
        return value, problem and f"{problem} or null"

    return check


def _int(minimum=None, maximum=None):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int):
            return None, "an integer" + (f" >= {minimum}" if minimum is not None else "")
        if minimum is not None and value < minimum:
            return None, f"an integer >= {minimum}"
        if maximum is not None and value > maximum:
            return None, f"an integer <= {maximum}"
        return value, None

    return check


def _choice(*allowed):
    def check(value):
        if value not in allowed:
            return None, "one of " + ", ".join(str(a) for a in allowed)
        return value, None

    return check


def _bool(value):
    if not isinstance(value, bool):
        return None, "true or false"
    return value, None


def _md5(value):
    if value is None:
        return None, None
    if isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdef" for c in value):
        return value, None
    return None, "null or a 32-character lowercase hex MD5"


def _under(value: str, folder: str) -> bool:
    """A relative path below ``folder`` that cannot climb out of it."""
    path = Path(value)
    inside = Path(*folder.split("/"))
    return (
        not path.is_absolute()
        and ".." not in path.parts
        and path.parts[: len(inside.parts)] == inside.parts
        and len(path.parts) > len(inside.parts)
    )


def _weights(value):
    if value is None or value == "imagenet":
        return value, None
    if isinstance(value, str) and _under(value, WEIGHTS_DIR):
        return value.rstrip("/"), None
    return None, (
        f"imagenet, null, or a .h5 file (a preset folder for KerasHub backbones) under "
        f"{WEIGHTS_DIR}/ without '..' (copy it there and `dvc add` it, so DVC tracks it as a "
        f"dependency)"
    )


def _source(value):
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return value, None
    if isinstance(value, str) and _under(value, RAW_DATA_DIR):
        return value, None
    return None, (
        f"a URL or a path under {RAW_DATA_DIR}/ without '..' (copy or move your data there and "
        f"`dvc add` it: {RAW_DATA_DIR} is the DVC dependency of prepare, so replacing the data "
        "reruns the pipeline)"
    )


def _units(value):
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return value, None
    return None, "a non-empty list of positive integers, e.g. [256, 128, 64]"


def _unfreeze(value):
    if value == "all":
        return value, None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value, None
    return None, "all, or an integer >= 1 (the number of top backbone blocks to train)"


def _workers(value):
    if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value, None
    return None, "all, or an integer >= 1 (processes decoding images in prepare)"


def _launcher(value):
    if value is None:
        return "", None
    if isinstance(value, str) and "\n" not in value:
        return value.strip(), None
    return None, 'a command prefix on one line, e.g. "srun --kill-on-bad-exit=1", or ""'


def worker_count(value) -> int:
    """compute.workers as a number: ``all`` is every core this process may use (every core
    where the system cannot say: macOS has no CPU affinity)."""
    if value != "all":
        return value
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _parity_images(value):
    """A count of test images, or all of them (None)."""
    if value == "all":
        return None, None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value, None
    return None, "an integer >= 1, or all"


def _formats(value):
    if (
        isinstance(value, list)
        and value
        and all(v in EXPORT_FORMATS for v in value)
        and len(set(value)) == len(value)
    ):
        return value, None
    return None, "a non-empty list of distinct formats from " + ", ".join(EXPORT_FORMATS)


SCHEMA = {
    "seed": _int(0),
    "lr": _float(above=0),
    "data.dataset": _choice(*DATASETS),
    "data.source": _source,
    "data.md5": _md5,
    "data.train_size": _int(1),
    "data.val_size": _int(1),
    "data.test_size": _int(1),
    "data.split_seed": _int(0),
    "data.image_size": _int(8, 1024),
    "data.bad_images": _choice("skip", "error"),
    "model.backbone": _choice(*ALL_BACKBONES),
    "model.weights": _weights,
    "model.image_size": _int(8, 1024),
    "model.head_units": _units,
    "model.dropout": _float(0.0, 0.95),
    "features.batch_size": _int(1),
    "train_head.epochs": _int(1),
    "train_head.batch_size": _int(1),
    "train_head.optimizer": _choice(*OPTIMIZERS),
    "train_head.momentum": _float(0.0, 0.999),
    "train_head.steps_per_execution": _int(1, 100000),
    "fine_tune.lr": _float(above=0),
    "fine_tune.epochs": _int(0),  # 0: head only, the backbone stays frozen
    "fine_tune.batch_size": _int(1),
    "fine_tune.optimizer": _choice(*OPTIMIZERS),
    "fine_tune.momentum": _float(0.0, 0.999),
    "fine_tune.unfreeze": _unfreeze,
    "fine_tune.augment": _bool,
    "fine_tune.label_smoothing": _float(0.0, 0.5),
    "fine_tune.schedule": _choice("constant", "cosine"),
    "fine_tune.warmup_epochs": _int(0),
    "fine_tune.weight_decay": _float(0.0, 1.0),
    "fine_tune.early_stopping_patience": _int(0),
    "fine_tune.layer_decay": _float(maximum=1.0, above=0.0),
    "fine_tune.drop_path_rate": _or_null(_float(0.0, 0.95)),  # null: the preset's own
    "compute.backend": _choice(*BACKENDS),
    "compute.precision": _choice(*PRECISIONS),
    "compute.jit_compile": _choice("auto", True, False),
    "compute.distribute": _choice(*DISTRIBUTE),
    "compute.workers": _workers,
    "compute.launcher": _launcher,
    "export.formats": _formats,
    "export.latency_runs": _int(1, 10000),
    "export.calibration_images": _int(1, 10000),
    "export.parity_images": _parity_images,
    "export.parity_pp": _float(0.0, 100.0),
    "export.parity_int8_pp": _float(0.0, 100.0),
    "export.parity_int8_changed_pp": _float(0.0, 100.0),
    "export.parity_int8_probability": _float(0.0, 1.0),
    "report.reference_accuracy": _float(0.0, 1.0),
    "report.wrong_examples": _int(0, 100),
}


def flatten(tree, prefix=""):
    """A nested params dict as one level: ``{"model.backbone": ...}``."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
