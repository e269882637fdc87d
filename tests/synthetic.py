"""Small data sets the tests generate in the real on-disk formats (no network needed)."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]


def class_images(n_per_class: int, n_classes: int, size: int, seed: int):
    """Learnable images: each class has its own colour and stripe direction, plus noise."""
    rng = np.random.default_rng(seed)
    palette = rng.uniform(40, 215, size=(n_classes, 3))
    images, labels = [], []
    grid = np.arange(size)
    for label in range(n_classes):
        stripes = (grid[:, None] if label % 2 else grid[None, :]) % 8 < 4
        for _ in range(n_per_class):
            image = palette[label] + 30 * stripes[..., None] + rng.normal(0, 20, (size, size, 3))
            images.append(np.clip(image, 0, 255).astype(np.uint8))
            labels.append(label)
    order = rng.permutation(len(labels))
    return np.stack(images)[order], np.asarray(labels)[order]


def _batch(images: np.ndarray, labels: np.ndarray, name: str) -> bytes:
    # The official batches were pickled by Python 2: bytes keys, 3072-byte rows (R, G, B planes).
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    batch = {
        b"batch_label": name.encode(),
        b"labels": [int(v) for v in labels],
        b"data": rows,
        b"filenames": [f"{name}_{i}.png".encode() for i in range(len(images))],
    }
    return pickle.dumps(batch, protocol=2)


def write_cifar10_tarball(path: Path, n_per_class: int = 30, seed: int = 0) -> Path:
    """cifar-10-python.tar.gz with data_batch_1..5, test_batch and batches.meta."""
    images, labels = class_images(n_per_class, 10, 32, seed)
    n_test = len(images) // 6
    parts = np.array_split(np.arange(len(images) - n_test), 5)
    members = {
        f"data_batch_{i + 1}": _batch(images[part], labels[part], f"training batch {i + 1} of 5")
        for i, part in enumerate(parts)
    }
    members["test_batch"] = _batch(images[-n_test:], labels[-n_test:], "testing batch 1 of 1")
    members["batches.meta"] = pickle.dumps(
        {b"label_names": [n.encode() for n in CIFAR10_CLASSES], b"num_cases_per_batch": 10000,
         b"num_vis": 3072},
        protocol=2,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path
