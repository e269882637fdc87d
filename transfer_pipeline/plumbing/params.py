"""Read and validate params.yaml: the one place that knows every param's type, range and values.

Every stage calls ``load_params()`` before doing any work, so a typo or a bad value stops the
pipeline at once with one line that names the key and what is allowed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import yaml

from ..models.backbones import ALL_BACKBONES, BACKBONES, BLOCKS, HUB_BACKBONES
from ..running.backend import BACKENDS
from .dvcfile import declared_params
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

_loaded: dict[Path, object] = {}  # params file -> its parsed content when the stage started


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


def _flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def validate(raw: dict, source: str = "params.yaml") -> dict:
    """Check every key; return the params as a nested dict of cleaned values."""
    if not isinstance(raw, dict):
        raise ParamError(f"{source} must be a mapping of sections to values")
    flat = _flatten(raw)
    problems = []
    for key in flat:
        if key not in SCHEMA:
            problems.append(f"unknown key {key!r} (check the spelling against docs/params.md)")
    clean = {}
    for key, check in SCHEMA.items():
        if key not in flat:
            problems.append(f"{key} is missing")
            continue
        value, expected = check(flat[key])
        if expected is not None:
            problems.append(f"{key} = {flat[key]!r} is not allowed; expected {expected}")
        clean[key] = value
    if not problems:
        problems += _cross_checks(clean)
        _official_source(clean)
    if problems:
        raise ParamError(f"{source}: " + "; ".join(problems))
    nested: dict = {}
    for key, value in clean.items():
        *sections, leaf = key.split(".")
        node = nested
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    return nested


def _cross_checks(p: dict) -> list[str]:
    problems = []
    weights = p["model.weights"]
    local = weights not in (None, "imagenet")
    if p["model.backbone"] in HUB_BACKBONES:
        preset = HUB_BACKBONES[p["model.backbone"]]
        size = preset.size_problem(p["model.image_size"])
        problems += [size] if size else []
        if local and weights.endswith(".h5"):
            problems.append(
                f"model.weights = {weights!r} is a file; {preset.name} is a KerasHub preset, whose "
                f"weights are a preset folder under {WEIGHTS_DIR}/ (docs/backbones.md)"
            )
    else:
        backbone = BACKBONES[p["model.backbone"]]
        if p["model.image_size"] < backbone.min_size:
            problems.append(
                f"model.image_size = {p['model.image_size']} is too small for {backbone.name}; "
                f"expected >= {backbone.min_size}"
            )
        if local and not weights.endswith(".h5"):
            problems.append(
                f"model.weights = {weights!r} is not a .h5 weights file of {backbone.name} (a "
                f"preset folder is for KerasHub backbones: docs/backbones.md)"
            )
    preset = HUB_BACKBONES.get(p["model.backbone"])
    if p["fine_tune.layer_decay"] < 1 and not (preset and preset.patch_size):
        problems.append(
            f"fine_tune.layer_decay = {p['fine_tune.layer_decay']} decays the learning rate per "
            f"transformer block; {p['model.backbone']} has none (use a DINOv2 or ViT preset, or "
            f"fine_tune.layer_decay: 1.0)"
        )
    if p["fine_tune.drop_path_rate"] is not None and not (preset and preset.drop_path_key):
        with_it = ", ".join(name for name, hub in HUB_BACKBONES.items() if hub.drop_path_key)
        problems.append(
            f"fine_tune.drop_path_rate = {p['fine_tune.drop_path_rate']} sets a preset's "
            f"stochastic depth; {p['model.backbone']} has none (presets with it: {with_it}); "
            f"set fine_tune.drop_path_rate: null"
        )
    unfreeze, backbone = p["fine_tune.unfreeze"], p["model.backbone"]
    if unfreeze != "all" and unfreeze > BLOCKS.get(backbone, 0):
        problems.append(
            f"fine_tune.unfreeze = {unfreeze} counts blocks from the top of the base; "
            + (
                f"{backbone} has {BLOCKS[backbone]}: use 1 to {BLOCKS[backbone]}, or all"
                if backbone in BLOCKS
                else f"{backbone} is a KerasHub preset, which the pipeline does not cut into "
                "blocks: use all"
            )
        )
    if p["fine_tune.layer_decay"] < 1 and p["fine_tune.optimizer"] not in ("adam", "adamw"):
        problems.append("fine_tune.layer_decay < 1 works with fine_tune.optimizer adam or adamw")
    if p["fine_tune.warmup_epochs"] >= p["fine_tune.epochs"] and p["fine_tune.warmup_epochs"]:
        problems.append("fine_tune.warmup_epochs must be smaller than fine_tune.epochs")
    if p["compute.distribute"] == "multi_host" and p["compute.backend"] != "jax":
        problems.append(
            "compute.distribute = multi_host runs on JAX's multi-process runtime; set "
            "compute.backend = jax (TensorFlow's multi-worker strategy does not train under "
            "Keras 3)"
        )
    if p["compute.distribute"] == "multi_host" and not p["compute.launcher"]:
        problems.append(
            "compute.distribute = multi_host needs compute.launcher, the command that starts "
            'each model stage on every host, e.g. "srun --kill-on-bad-exit=1" '
            "(docs/gpus-and-clusters.md)"
        )
    if p["compute.launcher"] and p["compute.distribute"] != "multi_host":
        problems.append(
            f"compute.launcher = {p['compute.launcher']!r} starts a stage on several hosts; "
            'set compute.distribute = multi_host too, or compute.launcher to "" (every host '
            "would otherwise train alone and write the same outputs)"
        )
    return problems


def warnings_about(params: dict) -> list[str]:
    """Valid settings that still give a poor run, or a run not to be read as the seed's recipe:
    shown in the log and in the report. A note needs the keys it reads: a stage's params
    without them (load_params(stage)) get none of it."""
    notes = []
    if params["model"]["weights"] is None:
        notes.append(
            "model.weights is null: features of an untrained frozen base; expect near-chance "
            "accuracy from the head (only fine-tuning can learn)"
        )
    flat = _flatten(params)
    if flat.get("fine_tune.epochs") == 0:
        notes.append(
            "head only (fine_tune.epochs 0): the backbone stayed frozen; the seed fine-tuned "
            "it for 15 epochs"
        )
    smaller = [
        f"{key} {flat[key]:,} (the seed's {seed:,})"
        for key, seed in SEED_RECIPE.items()
        if key in flat and 0 < flat[key] < seed  # 0 fine-tuning epochs: the note above
    ]
    if smaller and flat.get("data.dataset") == "cifar10":
        notes.append(
            "a small run, not the seed's recipe: "
            + ", ".join(smaller)
            + "; its accuracy is this small run's, not what the recipe reaches"
        )
    return notes


def _official_source(p: dict) -> None:
    """CIFAR-100 with data.source left at the CIFAR-10 default: use CIFAR-100's URL and MD5."""
    if p["data.dataset"] == "cifar100" and p["data.source"] == CIFAR10_URL:
        p["data.source"] = CIFAR100_URL
        if p["data.md5"] == CIFAR10_MD5:
            p["data.md5"] = CIFAR100_MD5


def _read(path: Path):
    if not path.exists():
        raise ParamError(f"{path} not found; run from the repository root")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ParamError(f"{path} is not valid YAML: {error}") from None


def load_params(stage: str | None = None, path="params.yaml") -> dict:
    """The validated params; with a stage, only the keys dvc.yaml declares for it (reading any
    other key is a KeyError, so the declaration cannot fall behind the code). What was read is
    remembered for ``params_unchanged``."""
    path = Path(path)
    raw = _read(path)
    params = validate(raw, str(path))
    _loaded[path.absolute()] = raw
    if stage is None:
        return params
    return _only(params, declared_params(stage))


def _only(params: dict, keys: list[str]) -> dict:
    kept: dict = {}
    for key in keys:
        *sections, leaf = key.split(".")
        source, target = params, kept
        for section in sections:
            source, target = source[section], target.setdefault(section, {})
        target[leaf] = source[leaf]
    return kept


def params_unchanged(stage: str) -> None:
    """Fail if a params file changed since the stage read it: DVC would record the new values
    for outputs made from the old ones. Called before outputs are moved into place."""
    for path, raw in _loaded.items():
        try:
            now = _read(path)
        except ParamError:
            now = None
        if now != raw:
            raise ParamError(
                f"{path.name} changed while {stage} ran; nothing recorded (the outputs were made "
                "from the old values); run `dvc repro` again"
            )
