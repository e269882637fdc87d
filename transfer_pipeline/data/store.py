"""The prepared folder and the features on disk: reading them back, shapes checked.

A prepared folder holds, per split, ``<split>_x.npy`` (uint8 images, N x H x W x 3) and
``<split>_y.npy`` (int64 labels), plus ``index.csv`` (where each image came from) and
``classes.json`` (the class names in label order); prepare.py writes it. A features folder
holds one ``<split>.npy`` of float rows per split and ``precision.json``, the precision each
split was extracted in (the boundary stage runs its trunk in the train and val one).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..plumbing.dvcfile import rebuild_hint
from ..plumbing.errors import PipelineError

SPLITS = ("train", "val", "test")
FEATURES_PRECISION = "precision.json"


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """A .npy file written by a stage; a missing, truncated or corrupt one is a PipelineError."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} not found; {rebuild_hint(path)}")
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise PipelineError(
            f"{path} is not a readable .npy array ({str(error).splitlines()[0][:120]}): it is "
            f"truncated or corrupt; {rebuild_hint(path)}"
        ) from None
    if not isinstance(array, np.ndarray):
        raise PipelineError(f"{path} holds no array; {rebuild_hint(path)}")
    return array


def load_split(prepared: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The images (uint8, N x H x W x 3, a read-only memory map: no stage holds a whole split
    in memory) and labels (N) of one split, shapes checked."""
    prepared = Path(prepared)
    images = load_array(prepared / f"{name}_x.npy", mmap=True)
    labels = load_array(prepared / f"{name}_y.npy")
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels):
        raise PipelineError(
            f"{prepared}/{name}_x.npy has shape {images.shape} for {len(labels)} labels; "
            f"expected (N, H, W, 3) with N = {len(labels)}; {rebuild_hint(prepared)}"
        )
    return images, labels


def load_features(folder: Path, split: str, n_images: int, width: int | None = None):
    """The cached features of one split: one float row per image (a read-only memory map)."""
    path = Path(folder) / f"{split}.npy"
    features = load_array(path, mmap=True)
    if (
        features.ndim != 2
        or len(features) != n_images
        or features.dtype.kind != "f"
        or (width is not None and features.shape[1] != width)
    ):
        raise PipelineError(
            f"{path} holds {features.dtype} {features.shape}; expected float rows "
            f"({n_images}, {width or 'width'}) for the {split} split; {rebuild_hint(path)}"
        )
    return features


def load_class_names(path: Path) -> list[str]:
    """The class names in label order, from a ``classes.json`` file or a prepared folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "classes.json"
    if not path.is_file():
        raise PipelineError(f"{path} not found; {rebuild_hint(path)}")
    try:
        names = json.loads(path.read_text())
    except (ValueError, OSError) as error:
        raise PipelineError(
            f"{path} is not a readable JSON list of class names ({error})"
        ) from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise PipelineError(f"{path} must hold a JSON list of class names")
    return names


def load_features_precision(folder: Path) -> dict[str, str]:
    """The precision each split's features were extracted in ({"train": ..., "val": ...})."""
    path = Path(folder) / FEATURES_PRECISION
    try:
        precision = json.loads(path.read_text())
    except (OSError, ValueError):
        precision = None
    if not isinstance(precision, dict) or not all(
        isinstance(precision.get(split), str) for split in SPLITS
    ):
        raise PipelineError(
            f"{path} does not say what precision each split was extracted in; "
            f"{rebuild_hint(folder)}"
        )
    return precision
