"""Split facts, on the tiny pipeline's stored split and directly on split_indices."""

import numpy as np
import pandas as pd
import pytest

from transfer_pipeline.data import load_cifar, split_indices
from transfer_pipeline.errors import PipelineError


def test_split_sizes_are_exact_and_splits_disjoint(pipeline):
    index = pd.read_csv(pipeline.path / "data/prepared/index.csv")
    params = pipeline.params()["data"]
    for split in ("train", "val", "test"):
        rows = index[index.split == split]
        assert len(rows) == params[f"{split}_size"]
        assert len(np.load(pipeline.path / f"data/prepared/{split}_x.npy")) == len(rows)
        assert (
            np.load(pipeline.path / f"data/prepared/{split}_y.npy") == rows.label.to_numpy()
        ).all()
    assert index.source_index.is_unique  # disjoint


def test_stored_images_are_the_tarballs_images(pipeline):
    """prepare parses the real pickle layout: stored pixels equal the source rows."""
    dataset = load_cifar(pipeline.path / "data/raw/cifar-10-python.tar.gz", "cifar10")
    index = pd.read_csv(pipeline.path / "data/prepared/index.csv")
    train = index[index.split == "train"]
    stored = np.load(pipeline.path / "data/prepared/train_x.npy")
    assert (stored == dataset.images[train.source_index.to_numpy()]).all()
    assert dataset.class_names[0] == "airplane"


def _labels(per_class):
    return np.repeat(np.arange(len(per_class)), per_class)


def test_split_covers_everything_and_is_stratified_within_one_image():
    labels = _labels([600, 600, 500, 700, 600, 600, 600, 600, 600, 600])
    sizes = {"train": 3500, "val": 1500, "test": 1000}
    split = split_indices(labels, sizes, seed=0)
    together = np.concatenate(list(split.values()))
    assert len(together) == len(set(together.tolist())) == len(labels)  # disjoint and covering
    shares = np.bincount(labels) / len(labels)
    for name, index in split.items():
        assert len(index) == sizes[name]
        counts = np.bincount(labels[index], minlength=10)
        assert np.all(np.abs(counts - shares * sizes[name]) <= 1.0), (name, counts)


def test_same_seed_same_split_other_seed_other_split():
    labels = _labels([40] * 10)
    sizes = {"train": 200, "val": 100, "test": 100}
    first, again, other = (split_indices(labels, sizes, s) for s in (7, 7, 8))
    assert all((first[k] == again[k]).all() for k in sizes)
    assert any((first[k] != other[k]).any() for k in sizes)


def test_subsampled_split_keeps_exact_sizes():
    labels = _labels([50] * 10)
    split = split_indices(labels, {"train": 100, "val": 50, "test": 50}, seed=1)
    assert [len(v) for v in split.values()] == [100, 50, 50]
    assert all(len(np.unique(labels[v])) == 10 for v in split.values())


@pytest.mark.parametrize(
    "sizes, message",
    [
        ({"train": 300, "val": 100, "test": 100}, "only 400 images"),
        ({"train": 300, "val": 5, "test": 50}, "data.val_size = 5 is smaller than the 10 classes"),
    ],
)
def test_impossible_splits_are_clear_errors(sizes, message):
    with pytest.raises(PipelineError, match=message):
        split_indices(_labels([40] * 10), sizes, seed=0)
