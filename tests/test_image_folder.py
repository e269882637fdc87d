"""Your own images and CIFAR-100: the loaders directly, then one image-folder `dvc repro`."""

import json
import pickle
import shutil
import tarfile

import numpy as np
import pandas as pd
import pytest
from conftest import new_repo
from PIL import Image
from synthetic import CIFAR100_CLASSES, write_cifar10_tarball, write_cifar100_tarball

from transfer_pipeline.data import load_cifar, load_dataset, load_image_folder, split_indices
from transfer_pipeline.errors import PipelineError

CLASSES = ["cats", "dogs", "owls"]
PER_CLASS = 14
CORRUPT = "dogs/broken.png"


def _write_images(root, per_class=PER_CLASS, seed=0):
    """Class folders of learnable images at odd sizes, in several formats and colour modes."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        folder = root / name
        (folder / "more").mkdir(parents=True)  # subfolders are searched too
        colour = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]][label])
        for i in range(per_class):
            height, width = 23 + 3 * i, 50 - 2 * i  # 50x23 ... 24x62: never square, never 32
            noise = rng.normal(0, 25, (height, width, 3))
            image = Image.fromarray(np.clip(colour + noise, 0, 255).astype(np.uint8))
            if i % 5 == 0:
                image.convert("L").save(folder / f"gray_{i}.png")
            elif i % 5 == 1:
                image.save(folder / f"photo_{i}.jpg", quality=90)
            elif i % 5 == 2:
                image.convert("RGBA").save(folder / "more" / f"alpha_{i}.png")
            elif i % 5 == 3:
                image.convert("P").save(folder / f"palette_{i}.gif")
            else:
                image.save(folder / f"plain_{i}.bmp")
        (folder / "labels.txt").write_text("not an image: ignored")
    (root / CORRUPT).write_bytes(b"\x89PNG\r\n\x1a\n truncated before the first chunk")
    (root / ".hidden").mkdir()  # not a class
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return _write_images(tmp_path_factory.mktemp("image-folder") / "images")


def test_class_names_are_the_folder_names_and_images_are_rgb(images, capsys):
    dataset = load_image_folder(images, 16, "skip")
    assert dataset.class_names == CLASSES
    assert dataset.images.shape == (3 * PER_CLASS, 16, 16, 3)
    assert dataset.images.dtype == np.uint8
    assert np.bincount(dataset.labels).tolist() == [PER_CLASS] * 3
    gray = dataset.sources.index(str(images / "cats" / "gray_0.png"))
    assert (dataset.images[gray, ..., 0] == dataset.images[gray, ..., 2]).all()
    assert str(images / "owls" / "more" / "alpha_2.png") in dataset.sources
    # Every colour image keeps its class's colour through the conversion and the resize.
    colourful = np.array(["gray_" not in source for source in dataset.sources])
    means = dataset.images[colourful].reshape(colourful.sum(), -1, 3).mean(1)
    assert (means.argmax(1) == dataset.labels[colourful]).all()
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1
    assert warnings[0].startswith(f"warning: skipped unreadable image {images / CORRUPT} (")


def test_bad_images_error_names_the_file(images):
    with pytest.raises(PipelineError, match="unreadable image") as error:
        load_image_folder(images, 16, "error")
    assert str(images / CORRUPT) in str(error.value)
    assert "data.bad_images: skip" in str(error.value)


def test_a_class_with_two_images_is_a_clear_split_error(tmp_path):
    root = _write_images(tmp_path / "images")
    for path in sorted((root / "owls").rglob("*.*"))[2:]:
        path.unlink()
    dataset = load_image_folder(root, 8, "skip")
    assert np.bincount(dataset.labels).tolist() == [PER_CLASS, PER_CLASS, 2]
    sizes = {"train": 12, "val": 6, "test": 6}
    with pytest.raises(PipelineError, match="every class needs at least 3 images") as error:
        split_indices(dataset.labels, sizes, 0, dataset.class_names)
    assert "'owls' has 2; add images or remove the class" in str(error.value)
    with pytest.raises(PipelineError, match="label 2 has 2"):
        split_indices(dataset.labels, sizes, 0)  # without names: the label number


def test_a_class_folder_without_readable_images_is_an_error(tmp_path):
    root = _write_images(tmp_path / "images")
    shutil.rmtree(root / "owls")
    (root / "owls").mkdir()
    (root / "owls" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(PipelineError, match="have no readable images") as error:
        load_image_folder(root, 8, "skip")
    assert str(root / "owls") in str(error.value)


def test_cifar100_tarball_gives_100_fine_classes(tmp_path):
    tarball = write_cifar100_tarball(tmp_path / "cifar-100-python.tar.gz")
    with tarfile.open(tarball) as archive:
        assert sorted(archive.getnames()) == [
            "cifar-100-python/meta",
            "cifar-100-python/test",
            "cifar-100-python/train",
        ]
        batches = {
            name: pickle.loads(
                archive.extractfile(f"cifar-100-python/{name}").read(), encoding="bytes"
            )
            for name in ("train", "test")
        }
    fine = np.concatenate([batches[name][b"fine_labels"] for name in ("train", "test")])
    coarse = np.concatenate([batches[name][b"coarse_labels"] for name in ("train", "test")])

    dataset = load_cifar(tarball, "cifar100")
    assert dataset.class_names == CIFAR100_CLASSES
    assert len(dataset.class_names) == 100
    assert (dataset.labels == fine).all() and not (dataset.labels == coarse).all()
    assert dataset.labels.max() == 99
    assert dataset.images.shape == (len(fine), 32, 32, 3)
    rows = batches["train"][b"data"][:1].reshape(3, 32, 32).transpose(1, 2, 0)
    assert (dataset.images[0] == rows).all()

    # The extracted folder and load_dataset (as prepare calls it) give the same data set.
    with tarfile.open(tarball) as archive:
        archive.extractall(tmp_path / "extracted", filter="data")
    extracted = load_cifar(tmp_path / "extracted", "cifar100")
    assert (extracted.images == dataset.images).all() and extracted.class_names == CIFAR100_CLASSES
    params = {"data": {"dataset": "cifar100", "source": str(tarball), "md5": None}}
    assert (load_dataset(params).labels == fine).all()


def test_cifar10_tarball_is_not_taken_for_cifar100(tmp_path):
    tarball = write_cifar10_tarball(tmp_path / "cifar-10-python.tar.gz", n_per_class=1)
    with pytest.raises(PipelineError, match="is not a cifar100 python archive: missing train"):
        load_cifar(tarball, "cifar100")


def test_image_folder_pipeline_end_to_end(images, tmp_path):
    """The real `dvc repro` on a folder of images: the folder names are the classes throughout."""
    overrides = {
        "data": {
            "dataset": "image_folder",
            "source": "data/raw/images",
            "md5": None,
            "image_size": 32,
            "train_size": 24,
            "val_size": 9,
            "test_size": 9,
        },
        "model": {"backbone": "mobilenet_v2", "weights": None, "image_size": 32},
        "train_head": {"epochs": 1},
        "fine_tune": {"epochs": 1},
    }
    repo = new_repo(tmp_path / "repo", overrides)
    shutil.copytree(images, repo.path / "data/raw/images")
    repo.dvc("add", "-q", "data/raw/images")
    repo.commit("add the image folder")
    result = repo.dvc("repro")
    log = result.stdout + result.stderr
    assert f"skipped unreadable image data/raw/images/{CORRUPT}" in log

    assert json.loads((repo.path / "data/prepared/classes.json").read_text()) == CLASSES
    index = pd.read_csv(repo.path / "data/prepared/index.csv")
    assert len(index) == 42 and index.source.str.startswith("data/raw/images/").all()
    assert (index.label_name == index.source.str.split("/").str[3]).all()  # folder = class
    confusion = pd.read_csv(repo.path / "plots/confusion.csv")
    assert len(confusion) == 9
    assert sorted(set(confusion.actual)) == CLASSES
    assert set(confusion.predicted) <= set(CLASSES)
    evaluation = repo.json("metrics/evaluate.json")
    assert list(evaluation["per_class"]) == CLASSES
    assert [evaluation["per_class"][c]["support"] for c in CLASSES] == [3, 3, 3]
    report = (repo.path / "report/report.md").read_text()
    assert all(name in report for name in CLASSES)
    assert "mobilenet_v2 on image_folder" in report
