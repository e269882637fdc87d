"""Convert the fine-tuned Keras model into a deployable format, on the TensorFlow backend.

    saved_model   TensorFlow SavedModel folder        keras model.export(format="tf_saved_model")
    onnx          models/export/onnx/model.onnx       keras model.export(format="onnx"): tf2onnx
    litert        model.tflite, float16 weights       keras model.export(format="litert")
    litert_int8   model.tflite, int8 (calibrated)     the same, with a representative sample

Every format keeps the whole graph: uint8 images of the stored size in, probabilities out
(resizing and the backbone's preprocessing are layers of the model). Keras' own exporter is
used for every format; the converters (tf2onnx, onnx, the TFLite converter inside TensorFlow)
and the runtimes that check the result (onnxruntime, ai-edge-litert) come with the
``export`` extra.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..plumbing.errors import PipelineError
from ..plumbing.param_schema import EXPORT_FORMATS as FORMATS

FLOAT_FORMATS = ("saved_model", "onnx", "litert")  # parity within export.parity_pp
EXTRA = 'pip install -e ".[export]"'
# The file of each format inside its output folder (None: the folder is the SavedModel).
FILES = {"saved_model": None, "onnx": "model.onnx", "litert": "model.tflite"}
FILES["litert_int8"] = "model.tflite"
# Python packages each format needs to convert and to run the result in its own runtime.
NEEDS = {
    "saved_model": ("tensorflow",),
    "onnx": ("tf2onnx", "onnx", "onnxruntime"),
    "litert": ("ai_edge_litert",),
    "litert_int8": ("ai_edge_litert",),
}


def exported_file(folder: Path, fmt: str) -> Path:
    """Where the model of ``fmt`` lies inside its output folder."""
    name = FILES[fmt]
    return Path(folder) if name is None else Path(folder) / name


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise PipelineError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")


def require_converter(fmt: str) -> None:
    """One line naming the extra to install when a package the format needs is missing."""
    check_format(fmt)
    missing = [name for name in NEEDS[fmt] if not _installed(name)]
    if missing:
        raise PipelineError(
            f"export format {fmt} needs {', '.join(missing)}, which is not installed; run "
            f"`{EXTRA}` (or remove {fmt} from export.formats)"
        )


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a parent package fails to import (or is blocked in a test)
        return False


def float32_copy(model):
    """The model itself, or a float32 rebuild (same weights) when any layer is mixed precision:
    the ONNX exporter requires the float32 dtype policy (Keras 3.15). The pipeline's own models
    are saved in float32 already (saving.py); this covers a model saved elsewhere."""
    import keras

    from ..models.model import all_layers
    from ..models.saving import float32_config

    if not any(_mixed(layer) for layer in all_layers(model)):
        return model
    config = float32_config(keras.saving.serialize_keras_object(model))
    rebuilt = keras.saving.deserialize_keras_object(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _mixed(layer) -> bool:
    return str(getattr(layer.dtype_policy, "name", "")).startswith("mixed_")


def convert(model, fmt: str, folder: Path, calibration=None) -> Path:
    """Write ``model`` as ``fmt`` into ``folder`` (which exists); return the exported path.

    ``calibration``: uint8 images of the stored size (litert_int8's representative sample).
    A conversion that fails is one line naming the format and the converter's first line.
    """
    check_format(fmt)
    target = exported_file(folder, fmt)
    model = float32_copy(model)
    _call_once(model)
    options = {}
    if fmt in ("litert", "litert_int8"):
        import tensorflow as tf

        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
        if fmt == "litert":
            options["target_spec"] = {"supported_types": [tf.float16]}
        else:
            if calibration is None or len(calibration) == 0:
                raise PipelineError(
                    "litert_int8 needs calibration images (export.calibration_images)"
                )
            options["representative_dataset"] = lambda: ([image[None]] for image in calibration)
    keras_format = {"saved_model": "tf_saved_model", "onnx": "onnx"}.get(fmt, "litert")
    if fmt == "onnx":
        _teach_tf2onnx_erfc()
    try:
        with warnings.catch_warnings():  # Keras' tf2onnx patch probes np.object (NumPy 2)
            warnings.filterwarnings("ignore", message=".*np.object", category=FutureWarning)
            model.export(str(target), format=keras_format, verbose=False, **options)
    except PipelineError:
        raise
    except Exception as error:  # converters raise many types, often with pages of text
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise PipelineError(
            f"exporting the model as {fmt} failed ({type(error).__name__}: {reason}); nothing "
            f"was replaced; remove {fmt} from export.formats or report the model's layers"
        ) from None
    if not target.exists():
        raise PipelineError(f"exporting the model as {fmt} wrote no {target.name}")
    if fmt == "onnx":
        _check_onnx(target)
    return target


def _check_onnx(path: Path) -> None:
    """tf2onnx writes a model even when it could not convert some ops (it logs them): such a
    file holds ops ONNX does not know, which its checker names."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as error:
        reason = (str(error).strip().splitlines() or ["invalid graph"])[0][:200]
        raise PipelineError(
            f"exporting the model as onnx failed: tf2onnx could not convert every op of this "
            f"model ({reason}); remove onnx from export.formats (docs/export.md lists the "
            f"backbones that convert)"
        ) from None


def _teach_tf2onnx_erfc() -> None:
    """tf2onnx 1.16 cannot convert TensorFlow's Erfc, which the exact GELU of every transformer
    (DINOv2, ViT) is made of: 0.5 x erfc(-x / sqrt 2). erfc(x) = 1 - erf(x), with ONNX's Erf."""
    import numpy as np
    from tf2onnx import handler, utils

    if any("Erfc" in handlers for handlers in handler.tf_op.get_opsets().get("", [])):
        return

    @handler.tf_op("Erfc")
    class Erfc:
        @classmethod
        def version_9(cls, ctx, node, **kwargs):
            node.type = "Erf"
            dtype = ctx.get_dtype(node.output[0])
            one = ctx.make_const(
                utils.make_name("erfc_one"), np.array(1, utils.map_onnx_to_numpy_type(dtype))
            )
            complement = ctx.insert_new_node_on_output(
                "Sub",
                node.output[0],
                name=utils.make_name(node.name),
                inputs=[one.output[0], node.output[0]],
            )
            ctx.set_dtype(complement.output[0], dtype)
            ctx.copy_shape(node.output[0], complement.output[0])


def _call_once(model) -> None:
    """Keras' ONNX exporter refuses a model that was loaded but never called (Keras 3.15)."""
    import numpy as np

    try:
        inputs = list(model.inputs)  # a functional model's; a subclassed model has none
    except (AttributeError, TypeError, ValueError):
        return
    if len(inputs) == 1:
        shape = [1 if side is None else side for side in inputs[0].shape]
        model(np.zeros(shape, dtype=inputs[0].dtype), training=False)


def size_bytes(path: Path) -> int:
    """A file's size, or the total size of a folder's files (a SavedModel)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# The numeric resolution of each format's probabilities, from its arithmetic: float32 (SavedModel,
# ONNX) differs from Keras in the order of its sums, about 1e-6 per layer; LiteRT's float16
# weights round at 2^-11 (5e-4) of every weight; int8 at 1/256 of each tensor's range. Where
# the Keras model's top two classes are closer than this, the exported model may rank them the
# other way without being wrong: a near tie, counted apart and not a parity failure. int8's
# margin is twice its measured error (a flip closes the margin from both sides): a small
# trained convolutional net calibrated on its own images moved probabilities by 0.0025
# (median), 0.0055 (99th percentile), 0.018 at most over 300 images (tests/test_export.py);
# 0.02 excuses what that error can flip, not every low-confidence image.
RESOLUTION = {"saved_model": 1e-5, "onnx": 1e-5, "litert": 1e-2, "litert_int8": 2e-2}
# The largest probability difference from the Keras model's that each float format's arithmetic
# allows, on any image. Measured on the tiny test pipeline (60 images, ResNet50 at 32 px):
# saved_model 0, onnx 2.3e-6, litert 7.1e-4. The bounds leave a margin of about 400x (float32)
# and 28x (float16 weights) for deeper models and other CPUs, and still catch a scaled
# classifier (x1.5: 0.18) or a scaled convolution (x1.5: 0.05). litert_int8's bound is a param
# (export.parity_int8_probability): int8's error depends on the model's calibrated ranges.
MAX_PROBABILITY_DIFFERENCE = {"saved_model": 1e-3, "onnx": 1e-3, "litert": 0.02}


def parity_sample(labels, count: int | None):
    """Indices of ``count`` test images (all where None or more): every class in proportion to
    its share, each spread evenly through its own images. The same labels give the same sample
    on every run (no random draw)."""
    import numpy as np

    labels = np.asarray(labels)
    if count is None or count >= len(labels):
        return np.arange(len(labels))
    classes = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    # Each class's share of ``count``, by largest remainder (ties to the earlier class).
    shares = np.array([len(members) for members in classes]) * count / len(labels)
    taken = np.floor(shares).astype(int)
    for extra in np.argsort(-(shares - taken), kind="stable")[: count - taken.sum()]:
        taken[extra] += 1
    chosen = [
        members[((np.arange(k) + 0.5) * len(members) / k).astype(int)]  # the middle of k strata
        for members, k in zip(classes, taken)
        if k
    ]
    return np.sort(np.concatenate(chosen))


@dataclass
class Parity:
    """The exported model's predictions against the Keras model's on the same test images."""

    images: int  # how many were compared
    runtime_accuracy: float
    keras_accuracy: float
    settled_accuracy: float  # the runtime's, where each near tie takes the Keras class
    changed: int  # images whose top-1 class changed, near ties left out
    near_ties: int  # flips where the Keras top-2 margin is below the format's resolution
    max_probability_difference: float

    @property
    def accuracy_difference_pp(self) -> float:
        """Percentage points between the two accuracies, near ties counted as agreeing."""
        return 100 * abs(self.settled_accuracy - self.keras_accuracy)


def compare(fmt: str, keras_probabilities, runtime_probabilities, labels) -> Parity:
    import numpy as np

    keras_probabilities = np.asarray(keras_probabilities, dtype=np.float64)
    runtime_probabilities = np.asarray(runtime_probabilities, dtype=np.float64)
    keras_top, runtime_top = keras_probabilities.argmax(1), runtime_probabilities.argmax(1)
    top_two = np.sort(keras_probabilities, axis=1)[:, -2:]
    margin = top_two[:, 1] - top_two[:, 0] if keras_probabilities.shape[1] > 1 else np.inf
    flipped = keras_top != runtime_top
    near_tie = flipped & (margin < RESOLUTION[fmt])
    settled = np.where(near_tie, keras_top, runtime_top)  # a near tie counts as agreeing
    return Parity(
        images=len(labels),
        runtime_accuracy=float(np.mean(runtime_top == labels)),
        keras_accuracy=float(np.mean(keras_top == labels)),
        settled_accuracy=float(np.mean(settled == labels)),
        changed=int((flipped & ~near_tie).sum()),
        near_ties=int(near_tie.sum()),
        max_probability_difference=float(
            np.abs(keras_probabilities - runtime_probabilities).max(initial=0.0)
        ),
    )


def bounds(fmt: str, params: dict) -> tuple[float, float, float]:
    """The parity bounds of ``fmt`` from the export params: (accuracy difference in points,
    share of images whose class may change beyond near ties in percent, largest probability
    difference). Float formats: parity_pp for both the accuracy and the share, and the
    format's arithmetic (MAX_PROBABILITY_DIFFERENCE) for the probabilities. litert_int8: its
    own keys, since int8's error depends on the model and its calibration, not on the format
    alone."""
    if fmt in FLOAT_FORMATS:
        return params["parity_pp"], params["parity_pp"], MAX_PROBABILITY_DIFFERENCE[fmt]
    return (
        params["parity_int8_pp"],
        params["parity_int8_changed_pp"],
        params["parity_int8_probability"],
    )


def check_parity(
    fmt: str,
    parity: Parity,
    accuracy_pp: float,
    changed_pp: float | None = None,
    max_difference: float | None = None,
) -> None:
    """One line, and a failed stage, when the exported model answers otherwise than the Keras
    model on the sample: more than ``changed_pp`` percent of the images changed class (near
    ties left out), the test accuracy is off by more than ``accuracy_pp`` points (near ties
    counted as agreeing), or a probability differs by more than ``max_difference``. None: the
    bound is ``accuracy_pp`` for the share, the format's arithmetic for the probabilities."""
    changed_pp = accuracy_pp if changed_pp is None else changed_pp
    if max_difference is None:
        max_difference = MAX_PROBABILITY_DIFFERENCE.get(fmt, 1.0)
    ties = f", {parity.near_ties} near ties left out" if parity.near_ties else ""
    accuracies = (
        f"test accuracy {100 * parity.runtime_accuracy:.2f} % against the Keras model's "
        f"{100 * parity.keras_accuracy:.2f} % on the same {parity.images} test images"
    )
    allowed_changes = int(changed_pp / 100 * parity.images + 1e-9)
    if parity.changed > allowed_changes:
        raise PipelineError(
            f"{fmt}: {parity.changed} of {parity.images} test images changed class against the "
            f"Keras model (allowed {allowed_changes}: {changed_pp:g} % of them{ties}); "
            f"{accuracies}; nothing was replaced"
        )
    difference = parity.accuracy_difference_pp
    if difference > accuracy_pp + 1e-9:
        raise PipelineError(
            f"{fmt}: test accuracy {100 * parity.runtime_accuracy:.2f} % differs from the Keras "
            f"model's {100 * parity.keras_accuracy:.2f} % by {difference:.2f} points on "
            f"{parity.images} test images (allowed {accuracy_pp:g}); {parity.changed} of "
            f"them changed class{ties}; nothing was replaced"
        )
    if parity.max_probability_difference > max_difference:
        raise PipelineError(
            f"{fmt}: a probability differs from the Keras model's by "
            f"{parity.max_probability_difference:.2g} (allowed {max_difference:g}, what "
            f"{fmt}'s arithmetic allows) on {parity.images} test images, {parity.changed} of "
            f"them changed class; the exported model computes something else; nothing was "
            f"replaced"
        )
