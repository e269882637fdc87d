"""Run a classifier in its own runtime: uint8 images of the stored size in, probabilities out.

    .keras                      Keras (the backend chosen by KERAS_BACKEND)
    .onnx                       ONNX Runtime: imports neither TensorFlow nor Keras
    SavedModel folder           TensorFlow, the ``serving_default`` signature
    .tflite                     the LiteRT interpreter (ai-edge-litert)
    models/export/<format>      the model file inside an export stage's folder

Only NumPy is imported here; each runtime is imported when a model of its kind is loaded.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from ..plumbing.dvcfile import rebuild_hint
from ..plumbing.errors import PipelineError

EXTRA = 'pip install -e ".[export]"'


class Runtime:
    kind = "?"
    image_size: int
    n_classes: int

    def predict(self, images: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def predict_batches(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return np.concatenate(
            [self.predict(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        )


def _import(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise PipelineError(
            f"running this model needs {package}, which is not installed; run `{EXTRA}`"
        ) from None


class OnnxRuntime(Runtime):
    kind = "onnx"

    def __init__(self, path: Path):
        ort = _import("onnxruntime", "onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:
            raise PipelineError(
                f"{path} is not a readable ONNX model ({_first_line(error)}); {rebuild_hint(path)}"
            ) from None
        (source,) = self.session.get_inputs()
        self.input, shape = source.name, source.shape
        self.image_size = _side(path, shape)
        self.n_classes = self.session.get_outputs()[0].shape[-1]

    def predict(self, images):
        return self.session.run(None, {self.input: np.ascontiguousarray(images)})[0]


class SavedModelRuntime(Runtime):
    kind = "saved_model"

    def __init__(self, path: Path):
        tf = _import("tensorflow", "tensorflow")
        try:
            self.function = tf.saved_model.load(str(path)).signatures["serving_default"]
        except Exception as error:
            raise PipelineError(
                f"{path} is not a readable SavedModel ({_first_line(error)}); {rebuild_hint(path)}"
            ) from None
        _, specs = self.function.structured_input_signature
        (self.input, spec), *_ = specs.items()
        self.image_size = _side(path, spec.shape.as_list())
        (self.output, out_spec), *_ = self.function.structured_outputs.items()
        self.n_classes = out_spec.shape[-1]
        self.tf = tf

    def predict(self, images):
        return self.function(**{self.input: self.tf.constant(images)})[self.output].numpy()


class LiteRtRuntime(Runtime):
    kind = "litert"

    def __init__(self, path: Path):
        interpreter = _import("ai_edge_litert.interpreter", "ai-edge-litert")
        try:
            self.interpreter = interpreter.Interpreter(model_path=str(path), num_threads=None)
        except Exception as error:
            raise PipelineError(
                f"{path} is not a readable LiteRT model ({_first_line(error)}); "
                f"{rebuild_hint(path)}"
            ) from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.image_size = _side(path, [int(side) for side in self.input["shape"]])
        self.n_classes = int(self.output["shape"][-1])
        self.batch = None

    def predict(self, images):
        if self.batch != len(images):
            self.interpreter.resize_tensor_input(
                self.input["index"], [len(images), *images.shape[1:]]
            )
            self.interpreter.allocate_tensors()
            self.batch = len(images)
        self.interpreter.set_tensor(self.input["index"], images.astype(self.input["dtype"]))
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"])
        scale, zero = self.output.get("quantization", (0.0, 0))
        if scale:  # an integer output: back to probabilities
            out = (out.astype(np.float32) - zero) * scale
        return out


class KerasRuntime(Runtime):
    kind = "keras"

    def __init__(self, path: Path):
        from ..models.model import load_model

        self.model = load_model(path)
        shape = self.model.input_shape
        self.image_size = _side(path, list(shape))
        self.n_classes = self.model.output_shape[-1]

    def predict(self, images):
        return self.predict_batches(images, batch_size=max(1, len(images)))

    def predict_batches(self, images, batch_size=64):
        from ..data.feeding import (
            predict_in_batches,  # not Keras' array feeding: see stages/evaluate.py
        )

        return predict_in_batches(self.model, images, batch_size)


def _side(path, shape) -> int:
    if len(shape) != 4 or shape[1] != shape[2] or not isinstance(shape[1], int) or shape[3] != 3:
        raise PipelineError(
            f"{path} is not an image classifier (it takes inputs of shape {shape}); pass the "
            "fine-tuned model, models/fine_tuned.keras, or one of models/export/"
        )
    return shape[1]


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:150]


def model_file(path: Path) -> tuple[Path, type[Runtime]]:
    """The model file and the runtime for a path given by the user (or an export folder)."""
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return path, SavedModelRuntime
        for name in ("model.onnx", "model.tflite"):
            if (path / name).is_file():
                return model_file(path / name)
        raise PipelineError(
            f"{path} is a folder but holds no saved_model.pb, model.onnx or model.tflite; pass "
            "a .keras, .onnx or .tflite file or a SavedModel folder"
        )
    suffix = path.suffix.lower()
    runtimes = {".onnx": OnnxRuntime, ".tflite": LiteRtRuntime, ".keras": KerasRuntime}
    if suffix not in runtimes:
        raise PipelineError(
            f"{path}: unknown model type {suffix or '(no suffix)'}; pass a .keras, .onnx or "
            ".tflite file or a SavedModel folder"
        )
    return path, runtimes[suffix]


def load(path: Path) -> Runtime:
    path, runtime = model_file(path)
    return runtime(path)


def median_latency_ms(runtime: Runtime, images: np.ndarray, runs: int) -> float:
    """Median wall time of ``runs`` batch-1 predictions (after two warm-up runs), in ms."""
    one = images[:1]
    for _ in range(2):
        runtime.predict(one)
    times = []
    for i in range(runs):
        image = images[i % len(images)][None]
        started = time.perf_counter()
        runtime.predict(image)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def images_per_s(runtime: Runtime, images: np.ndarray, batch_size: int = 64, rounds: int = 3):
    """Throughput at ``batch_size`` (the images repeated to fill a batch), best of rounds."""
    batch = np.resize(images, (batch_size, *images.shape[1:]))
    runtime.predict(batch)  # warm-up (and LiteRT's resize to this batch)
    best = min(_timed(runtime, batch) for _ in range(rounds))
    return batch_size / best


def _timed(runtime, batch) -> float:
    started = time.perf_counter()
    runtime.predict(batch)
    return time.perf_counter() - started
