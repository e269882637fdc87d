"""Split facts, on the tiny pipeline's stored split and directly on split_indices."""

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split
from synthetic import write_cifar10_tarball

from transfer_pipeline.data.sources import load_cifar
from transfer_pipeline.data.split import split_indices
from transfer_pipeline.plumbing.errors import PipelineError


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


def _split_as_before(labels, sizes, seed):
    """The split as the pipeline drew it before issue 31 (three scikit-learn draws)."""
    everything = np.arange(len(labels))
    if sum(sizes.values()) < len(labels):
        everything, _ = train_test_split(
            everything, train_size=sum(sizes.values()), stratify=labels, random_state=seed
        )
    rest, test = train_test_split(
        everything, test_size=sizes["test"], stratify=labels[everything], random_state=seed
    )
    train, val = train_test_split(
        rest, test_size=sizes["val"], stratify=labels[rest], random_state=seed
    )
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


@pytest.mark.parametrize(
    "per_class, sizes, seed",
    [
        ([30] * 10, (150, 60, 60), 42),  # the tiny pipeline's split
        ([600, 600, 500, 700, 600, 600, 600, 600, 600, 600], (3500, 1500, 1000), 0),
        ([200] * 3, (420, 90, 90), 7),  # every image
        ([50, 20, 9], (40, 15, 15), 3),
    ],
)
def test_splits_that_drew_before_are_unchanged(per_class, sizes, seed):
    labels = _labels(per_class)
    sizes = dict(zip(("train", "val", "test"), sizes))
    before, now = _split_as_before(labels, sizes, seed), split_indices(labels, sizes, seed)
    assert all((before[name] == now[name]).all() for name in sizes)


def _check_split(labels, split, sizes, within):
    """Exact sizes, disjoint, every class in every split, and each class's count in each part
    (the images left over too) within ``within`` of its proportional share."""
    together = np.concatenate(list(split.values()))
    assert len(together) == len(set(together.tolist())) == sum(sizes.values())
    counts = np.bincount(labels)
    left_over = np.setdiff1d(np.arange(len(labels)), together)
    for name, index in [*split.items(), ("left over", left_over)]:
        assert len(index) == sizes.get(name, len(labels) - sum(sizes.values()))
        got = np.bincount(labels[index], minlength=len(counts))
        if name in sizes:
            assert got.min() >= 1, (name, got)
        assert np.abs(got - counts * len(index) / len(labels)).max() <= within, (name, got)


def test_fewer_images_left_over_than_classes_split_stratified():
    """419 / 90 / 90 of 600 photos in 3 classes: one image left over (scikit-learn's draw
    needs at least one per class there)."""
    labels = _labels([200, 200, 200])
    sizes = {"train": 419, "val": 90, "test": 90}
    split = split_indices(labels, sizes, seed=0)
    _check_split(labels, split, sizes, within=1)
    again = split_indices(labels, sizes, seed=0)
    assert all((split[name] == again[name]).all() for name in sizes)


def test_a_300_image_cifar_tarball_splits_175_60_60(tmp_path):
    dataset = load_cifar(write_cifar10_tarball(tmp_path / "c.tar.gz", n_per_class=30), "cifar10")
    sizes = {"train": 175, "val": 60, "test": 60}  # 5 left over, 10 classes
    split = split_indices(dataset.labels, sizes, seed=42, class_names=dataset.class_names)
    _check_split(dataset.labels, split, sizes, within=1)


def test_every_image_splits_even_with_a_class_of_three():
    labels = _labels([200, 200, 3])
    sizes = {"train": 323, "val": 40, "test": 40}
    split = split_indices(labels, sizes, seed=1)  # scikit-learn leaves the small class out
    _check_split(labels, split, sizes, within=2)
    assert [len(np.flatnonzero(labels[index] == 2)) for index in split.values()] == [1, 1, 1]


def test_a_class_with_fewer_images_than_splits_is_one_line_naming_sizes_and_classes():
    labels = _labels([200, 200, 2])
    sizes = {"train": 300, "val": 50, "test": 50}
    with pytest.raises(PipelineError) as error:
        split_indices(labels, sizes, seed=0, class_names=["cats", "dogs", "owls"])
    assert str(error.value) == (
        "cannot split 402 images ('cats' 200, 'dogs' 200, 'owls' 2) into train 300 / val 50 / "
        "test 50 with every class in every split: every class needs at least 3 images (one "
        "per split) and 'owls' has 2; add images or remove the class"
    )


@pytest.mark.parametrize(
    "sizes, message",
    [
        ({"train": 300, "val": 100, "test": 100}, "only 400 images; lower the sizes"),
        (
            {"train": 300, "val": 5, "test": 50},
            "cannot split 400 images (40 per class) into train 300 / val 5 / test 50 with every "
            "class in every split: data.val_size = 5 is smaller than the 10 classes; raise "
            "data.val_size to at least 10",
        ),
    ],
)
def test_impossible_splits_are_clear_errors(sizes, message):
    with pytest.raises(PipelineError) as error:
        split_indices(_labels([40] * 10), sizes, seed=0)
    assert message in str(error.value) and "\n" not in str(error.value)
