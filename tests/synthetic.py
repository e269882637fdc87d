"""Small data sets the tests generate in the real on-disk formats (no network needed)."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
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
        {
            b"label_names": [n.encode() for n in CIFAR10_CLASSES],
            b"num_cases_per_batch": 10000,
            b"num_vis": 3072,
        },
        protocol=2,
    )
    return _write_tar_gz(path, "cifar-10-batches-py", members)


CIFAR100_CLASSES = """
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile
cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp
lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree
orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum
rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider
squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train
trout tulip turtle wardrobe whale willow_tree wolf woman worm
""".split()

CIFAR100_SUPERCLASSES = """
aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices
household_furniture insects large_carnivores large_man-made_outdoor_things
large_natural_outdoor_scenes large_omnivores_and_herbivores medium_mammals
non-insect_invertebrates people reptiles small_mammals trees vehicles_1 vehicles_2
""".split()


def _cifar100_batch(images: np.ndarray, fine: np.ndarray, name: str) -> bytes:
    # Same row layout as CIFAR-10; labels under fine_labels and coarse_labels (20 superclasses;
    # here coarse = fine % 20, which is not the official mapping: the loader ignores it).
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    batch = {
        b"filenames": [f"{name}_{i}.png".encode() for i in range(len(images))],
        b"batch_label": name.encode(),
        b"fine_labels": [int(v) for v in fine],
        b"coarse_labels": [int(v) % 20 for v in fine],
        b"data": rows,
    }
    return pickle.dumps(batch, protocol=2)


def write_cifar100_tarball(path: Path, n_per_class: int = 3, seed: int = 0) -> Path:
    """cifar-100-python.tar.gz with train, test and meta (one test image per class)."""
    images, labels = class_images(n_per_class, 100, 32, seed)
    test = np.sort(np.unique(labels, return_index=True)[1])  # the first image of every class
    train = np.setdiff1d(np.arange(len(labels)), test)
    members = {
        "train": _cifar100_batch(images[train], labels[train], "training batch 1 of 1"),
        "test": _cifar100_batch(images[test], labels[test], "testing batch 1 of 1"),
        "meta": pickle.dumps(
            {
                b"fine_label_names": [n.encode() for n in CIFAR100_CLASSES],
                b"coarse_label_names": [n.encode() for n in CIFAR100_SUPERCLASSES],
            },
            protocol=2,
        ),
    }
    return _write_tar_gz(path, "cifar-100-python", members)


def _write_tar_gz(path: Path, folder: str, members: dict[str, bytes]) -> Path:
    """The archives' layout: every member inside one top-level folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path
