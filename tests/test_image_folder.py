"""Your own images and CIFAR-100: the loaders directly, then one image-folder `dvc repro`."""

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO_ROOT, new_repo, tool_env
from PIL import Image
from synthetic import CIFAR100_CLASSES, write_cifar10_tarball, write_cifar100_tarball

from transfer_pipeline.data import images as image_reader
from transfer_pipeline.data.images import decode_at_least, read_image, resize_for_model
from transfer_pipeline.data.prepare import save_prepared
from transfer_pipeline.data.sources import load_cifar, load_dataset, load_image_folder
from transfer_pipeline.data.split import split_indices
from transfer_pipeline.plumbing.errors import PipelineError

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
    pixels = dataset.decode_all()
    assert dataset.class_names == CLASSES
    assert pixels.shape == (3 * PER_CLASS, 16, 16, 3)
    assert pixels.dtype == np.uint8
    assert np.bincount(dataset.labels).tolist() == [PER_CLASS] * 3
    gray = dataset.sources.index(str(images / "cats" / "gray_0.png"))
    assert (pixels[gray, ..., 0] == pixels[gray, ..., 2]).all()
    assert str(images / "owls" / "more" / "alpha_2.png") in dataset.sources
    # Every colour image keeps its class's colour through the conversion and the resize.
    colourful = np.array(["gray_" not in source for source in dataset.sources])
    means = pixels[colourful].reshape(colourful.sum(), -1, 3).mean(1)
    assert (means.argmax(1) == dataset.labels[colourful]).all()
    # One line lists the files that are not images, one line per unreadable image.
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2
    not_images = ", ".join(str(images / name / "labels.txt") for name in CLASSES)
    assert warnings[0] == f"warning: ignored 3 file(s) that are not images: {not_images}"
    assert warnings[1].startswith(f"warning: skipped unreadable image {images / CORRUPT} (")


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


# --------------------------------------------------------------------------- reading faithfully


def _two_classes(root):
    """cats and dogs, three small plain images each: the baseline the cases below add to."""
    for label, name in enumerate(["cats", "dogs"]):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (200 * (1 - label), 40 * i, 200 * label)).save(
                root / name / f"plain_{i}.png"
            )
    return root


def _image_count(root):
    return len(load_image_folder(root, 8, "skip").sources)


@pytest.mark.parametrize(("name", "dtype"), [("gray16.png", np.uint16), ("int32.tif", np.int32)])
def test_16_bit_and_integer_images_are_scaled_not_clipped(tmp_path, name, dtype):
    path = tmp_path / name
    Image.fromarray(np.full((8, 8), 30000, dtype)).save(path)
    assert Image.open(path).mode in ("I;16", "I")
    assert (read_image(path, 4) == 117).all()  # 30000 / 65535 * 255, mid-gray, not white


def test_float_image_is_scaled_from_0_1(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(path)
    assert Image.open(path).mode == "F"
    assert (read_image(path, 4) == 128).all()


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_is_applied(tmp_path, orientation):
    upright = np.zeros((32, 32, 3), np.uint8)
    upright[:16, :, 0] = 255  # top half red
    upright[16:, :16, 2] = 255  # bottom-left quarter blue
    # Orientation 6: the viewer turns the stored pixels 90 degrees clockwise; 8: anticlockwise.
    stored = Image.fromarray(upright).rotate(90 if orientation == 6 else -90)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    pixels = read_image(tmp_path / "phone.jpg", 32).astype(int)
    assert np.abs(pixels - upright).mean() < 8
    assert np.abs(np.asarray(stored, int) - upright).mean() > 60  # the test can tell


def _full_decode(path, size):
    with Image.open(path) as image:
        return resize_for_model(image, size).astype(int)


def test_large_jpegs_are_scaled_while_decoding_small_ones_are_not(tmp_path):
    """A photo 4x larger than the input (and EXIF-rotated) is decoded at 1/2 or 1/4 scale: at
    most 2 levels from a full decode, upright; a smaller JPEG decodes exactly as before."""
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    upright = np.asarray(smooth.resize((400, 300), Image.BICUBIC))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned anticlockwise: the viewer turns it back
    Image.fromarray(upright).rotate(90, expand=True).save(tmp_path / "big.jpg", exif=exif)
    with Image.open(tmp_path / "big.jpg") as image:
        decode_at_least(image, 64)
        assert image.size == (75, 100)  # 1/4 of 300x400 on disk, never below 64
    pixels = read_image(tmp_path / "big.jpg", 32).astype(int)
    assert np.abs(pixels - _full_decode(tmp_path / "big.jpg", 32)).max() <= 2
    expected = np.asarray(Image.fromarray(upright).resize((32, 32), Image.BILINEAR), int)
    assert np.abs(pixels - expected).mean() < 3  # upright: EXIF applied after the scaling
    Image.fromarray(upright[:100, :120]).save(tmp_path / "small.jpg")  # < 2 x 2 x 32 px
    assert (
        read_image(tmp_path / "small.jpg", 32) == _full_decode(tmp_path / "small.jpg", 32)
    ).all()


@pytest.mark.parametrize("mode", ["RGBA", "P"])
def test_transparent_pixels_become_white(tmp_path, mode):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, 8:, 3] = 255  # left half transparent, right half opaque red
    image = Image.fromarray(rgba)
    if mode == "P":  # a GIF-style palette image with one transparent index
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=2)
        image.info["transparency"] = int(np.asarray(image)[0, 0])
    image.save(tmp_path / "cut-out.png", transparency=image.info.get("transparency"))
    pixels = read_image(tmp_path / "cut-out.png", 16)
    assert (pixels[:, :7] == 255).all()
    assert (pixels[:, 9:] == [255, 0, 0]).all()


def test_every_format_pillow_reads_is_found_and_read(tmp_path, capsys):
    root = _two_classes(tmp_path / "images")
    suffixes = [".tif", ".tiff", ".webp", ".bmp", ".TIF"]
    for suffix in suffixes:
        Image.new("RGB", (8, 8), (10, 200, 30)).save(root / "cats" / f"more{suffix}", lossless=True)
    dataset = load_image_folder(root, 8, "skip")
    assert sorted(s for s in dataset.sources if "more" in s) == sorted(
        str(root / "cats" / f"more{suffix}") for suffix in suffixes
    )
    more = np.array(["more" in s for s in dataset.sources])
    assert (dataset.decode_all()[more] == [10, 200, 30]).all()
    assert capsys.readouterr().err == ""


def test_a_hidden_folder_in_a_class_is_ignored(tmp_path, capsys):
    root = _two_classes(tmp_path / "images")
    (root / "cats" / ".ipynb_checkpoints").mkdir()
    shutil.copy(root / "cats" / "plain_0.png", root / "cats" / ".ipynb_checkpoints" / "x.png")
    assert _image_count(root) == 6
    assert capsys.readouterr().err == ""


def test_hidden_files_are_ignored(tmp_path, capsys):
    root = _two_classes(tmp_path / "images")
    shutil.copy(root / "cats" / "plain_0.png", root / "cats" / ".plain_0.png")
    (root / "dogs" / "._plain_0.png").write_bytes(b"macOS resource fork, not a png")
    (root / "dogs" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    assert _image_count(root) == 6
    assert capsys.readouterr().err == ""


def test_a_top_level_symlink_back_into_the_folder_is_not_a_class(tmp_path, capsys):
    root = _two_classes(tmp_path / "images")
    (root / "kittens").symlink_to(root / "cats")
    dataset = load_image_folder(root, 8, "skip")
    assert dataset.class_names == ["cats", "dogs"] and len(dataset.sources) == 6
    assert capsys.readouterr().err == (
        "warning: ignored 1 symlink(s) that lead to a folder, nowhere, or out of the folder "
        f"searched: {root / 'kittens'}\n"
    )


def test_symlinks_out_of_the_folder_are_not_followed(tmp_path, capsys):
    root = _two_classes(tmp_path / "images")
    outside = _two_classes(tmp_path / "elsewhere")
    (root / "cats" / "borrowed").symlink_to(outside / "cats")  # a folder outside
    (root / "birds").symlink_to(outside / "dogs")  # a class folder outside
    (root / "dogs" / "borrowed.png").symlink_to(outside / "dogs" / "plain_0.png")  # a file outside
    (root / "dogs" / "alias.png").symlink_to(root / "cats" / "plain_0.png")  # inside: read
    dataset = load_image_folder(root, 8, "skip")
    assert dataset.class_names == ["cats", "dogs"]
    assert str(root / "dogs" / "alias.png") in dataset.sources and len(dataset.sources) == 7
    skipped = [root / "birds", root / "cats" / "borrowed", root / "dogs" / "borrowed.png"]
    assert capsys.readouterr().err == (
        "warning: ignored 3 symlink(s) that lead to a folder, nowhere, or out of the folder "
        f"searched: {', '.join(map(str, skipped))}\n"
    )


def test_files_linked_into_the_dvc_cache_are_read(tmp_path, monkeypatch, capsys):
    """DVC with `cache.type: symlink` turns every tracked file into a link into .dvc/cache."""
    monkeypatch.chdir(tmp_path)
    root = _two_classes(tmp_path / "data/raw/images")
    cached = tmp_path / ".dvc/cache/files/md5/ab/cdef0123"
    cached.parent.mkdir(parents=True)
    (root / "cats" / "plain_0.png").rename(cached)
    (root / "cats" / "plain_0.png").symlink_to(cached)
    assert _image_count(root) == 6
    assert capsys.readouterr().err == ""


def test_symlink_loops_end(tmp_path, capsys):
    root = _two_classes(tmp_path / "images")
    (root / "cats" / "again").symlink_to(root / "cats")  # a folder loop
    (root / "dogs" / "a.png").symlink_to(root / "dogs" / "b.png")  # a file loop
    (root / "dogs" / "b.png").symlink_to(root / "dogs" / "a.png")
    assert _image_count(root) == 6
    assert "ignored 3 symlink(s)" in capsys.readouterr().err


def test_files_that_are_not_images_are_listed_once_with_the_count(tmp_path, capsys):
    root = _two_classes(tmp_path / "images")
    for name in ["cats/a.txt", "cats/b.csv", "cats/c.json", "dogs/d.txt", "dogs/e", "dogs/f.md"]:
        (root / name).write_text("not an image")
    assert _image_count(root) == 6
    shown = ", ".join(str(root / n) for n in ["cats/a.txt", "cats/b.csv", "cats/c.json"])
    shown += f", {root / 'dogs/d.txt'}, {root / 'dogs/e'}"
    assert capsys.readouterr().err == (
        f"warning: ignored 6 file(s) that are not images: {shown} (first 5 shown)\n"
    )


# Lists an image folder with a FIFO in it, then reads the FIFO directly (as a file turned into
# a FIFO after the listing would be read): in a process of its own, which a blocking read
# would hang, so the test can stop it.
READS_A_FIFO = """
import sys
from pathlib import Path
from transfer_pipeline.data.images import UnreadableImage, read_image
from transfer_pipeline.data.sources import load_image_folder
dataset = load_image_folder(Path(sys.argv[1]), 8, "skip")
print(len(dataset.sources), dataset.skipped, flush=True)
try:
    read_image(Path(sys.argv[2]), 8)
except UnreadableImage as error:
    print(error, flush=True)
"""


def _reads(code: str, *args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``code`` in a Python process of its own, stopped if it waits (a blocking read)."""
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=cwd,
        env={**tool_env(), "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,  # TimeoutExpired fails the test: a FIFO read would wait here for ever
    )


def test_a_fifo_named_like_an_image_is_one_line_and_never_read(tmp_path):
    root = _two_classes(tmp_path / "images")
    fifo = root / "cats" / "x.jpg"
    os.mkfifo(fifo)
    result = _reads(READS_A_FIFO, root, fifo)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["6 1", f"{fifo} (a FIFO, not a regular file)"]
    assert result.stderr == (
        "warning: ignored 1 file(s) that are not regular files (a FIFO, a socket or a device: "
        f"reading one could wait forever): {fifo}\n"
    )


def test_prepare_with_a_fifo_in_the_folder_says_how_many_files_it_skipped(tmp_path):
    """The prepare stage run by hand on an image folder holding a FIFO named like an image and
    a text file: it splits the images, and its last line counts the two files skipped."""
    sizes = {"train_size": 2, "val_size": 2, "test_size": 2}
    data = {"dataset": "image_folder", "source": "data/raw/images", "md5": None, **sizes}
    repo = new_repo(tmp_path / "repo", {"data": {**data, "image_size": 8}})
    root = _two_classes(repo.path / "data/raw/images")
    os.mkfifo(root / "dogs" / "photo.png")
    (root / "dogs" / "notes.txt").write_text("not an image")
    code = "import runpy; runpy.run_module('stages.prepare', run_name='__main__')"
    result = _reads(code, "data/prepared", "metrics/prepare.json", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("prepare: {'images_available': 6, 'classes': 2}"), last
    assert last.endswith("; skipped 2 file(s) (see the warnings above)"), last
    assert (
        "warning: ignored 1 file(s) that are not regular files (a FIFO, a socket or a device: "
        "reading one could wait forever): data/raw/images/dogs/photo.png"
    ) in result.stderr.splitlines(), result.stderr


def test_a_decompression_bomb_is_one_clean_unreadable_line(tmp_path, capsys, monkeypatch):
    root = _two_classes(tmp_path / "images")  # 8 x 8 = 64 pixels each
    Image.new("RGB", (12, 12)).save(root / "cats" / "big.png")  # over the limit: a warning in PIL
    Image.new("RGB", (30, 30)).save(root / "dogs" / "huge.png")  # over twice the limit: an error
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings(record=True) as python_warnings:
        warnings.simplefilter("always")
        assert _image_count(root) == 6
    assert python_warnings == []
    assert capsys.readouterr().err.splitlines() == [
        f"warning: skipped unreadable image {root / name} (too large: more than 100 pixels)"
        for name in ["cats/big.png", "dogs/huge.png"]
    ]
    with pytest.raises(PipelineError, match="big.png \\(too large: more than 100 pixels\\)"):
        load_image_folder(root, 8, "error")


def _photos(root, per_class=10):
    """Three class folders of small real JPEGs and PNGs, and in cats/ a JPEG cut in half: its
    header reads, its pixels do not (found only when decoded)."""
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = Image.new("RGB", (12 + i, 10), (100 * label, 20 * i, 90))
            image.save(root / name / (f"{i}.jpg" if i % 2 else f"{i}.png"))
    whole = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(whole, "JPEG")  # mostly pixels: half of it holds the header
    (root / "cats" / "cut.jpg").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    return root


def test_an_image_unreadable_only_when_decoded_is_dropped_and_nothing_is_decoded_twice(
    tmp_path, monkeypatch, capsys
):
    """The cut JPEG is in the first split; the split is drawn again without it, as if it had
    never been listed: every image is decoded once (the decoder's calls counted, in this
    process: workers=1), and the stored files equal a run on the folder without it."""
    root = _photos(tmp_path / "photos")
    decoded = []

    def counted(path, size):
        decoded.append(str(path))
        return read_image(path, size)

    monkeypatch.setattr(image_reader, "read_image", counted)
    listed = load_image_folder(root, 8, "skip")
    assert len(listed.sources) == 31 and decoded == []  # the header check decodes nothing
    sizes = {"train": 20, "val": 5, "test": 5}  # 30 of the 31 listed: every readable image
    (tmp_path / "with-cut").mkdir()
    dataset, split = save_prepared(tmp_path / "with-cut", listed, sizes, 0, 1, "skip")
    assert sorted(decoded) == sorted(listed.sources)  # each once, the cut JPEG included
    cut = root / "cats" / "cut.jpg"
    assert str(cut) not in dataset.sources and len(dataset.sources) == 30
    assert sum(len(index) for index in split.values()) == 30
    output = capsys.readouterr()
    (warning,) = [line for line in output.err.splitlines() if line.startswith("warning:")]
    assert warning.startswith(f"warning: skipped unreadable image {cut} (image file is truncated")
    assert "prepare: decoding: 30/30 images (100%" in output.err  # the first split
    assert "prepare: decoding: 1/1 images (100%" in output.err  # the image it left out
    assert (
        "prepare: split drawn again without the unreadable image(s): 1 image(s) to decode, "
        "29 decoded already"
    ) in output.out

    cut.unlink()
    decoded.clear()
    (tmp_path / "without").mkdir()
    save_prepared(tmp_path / "without", load_image_folder(root, 8, "skip"), sizes, 0, 1, "skip")
    assert len(decoded) == 30
    stored = {
        folder: {path.name: path.read_bytes() for path in (tmp_path / folder).iterdir()}
        for folder in ("with-cut", "without")
    }
    assert stored["with-cut"] == stored["without"]  # no .decoded-* file left behind either
    assert sorted(stored["without"]) == sorted(
        [f"{name}_{xy}.npy" for name in ("train", "val", "test") for xy in "xy"]
        + ["index.csv", "classes.json"]
    )


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
        "fine_tune": {"epochs": 1, "unfreeze": "all"},  # the tiny pipeline's is 20
        "export": {"formats": ["onnx"]},  # one format: the export stages are not its subject
    }
    repo = new_repo(tmp_path / "repo", overrides)
    shutil.copytree(images, repo.path / "data/raw/images")
    # A JPEG cut short: its header reads, its pixels do not (found only while decoding); the
    # first split (seed 42, 42 of the 43 listed) holds it, so the split is drawn again.
    whole = tmp_path / "whole.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(whole)  # mostly pixels: half of it holds the whole header
    cut = repo.path / "data/raw/images/cats/photo_cut.jpg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    repo.dvc("add", "-q", "data/raw/images")
    repo.commit("add the image folder")
    result = repo.dvc("repro")  # compute.workers: all (2 here): a pool decodes
    log = result.stdout + result.stderr
    assert f"skipped unreadable image data/raw/images/{CORRUPT}" in log
    assert (
        "skipped unreadable image data/raw/images/cats/photo_cut.jpg (image file is truncated"
    ) in log
    assert "prepare: decoding: 42/42 images (100%" in log and "images/s" in log
    assert "split drawn again without the unreadable image(s): 1 image(s) to decode" in log
    prepared = {p.name: p.read_bytes() for p in (repo.path / "data/prepared").iterdir()}

    assert json.loads((repo.path / "data/prepared/classes.json").read_text()) == CLASSES
    index = pd.read_csv(repo.path / "data/prepared/index.csv")
    assert len(index) == 42 and index.source.str.startswith("data/raw/images/").all()
    assert (index.label_name == index.source.str.split("/").str[3]).all()  # folder = class
    confusion = pd.DataFrame(repo.json("dvclive/evaluate/plots/sklearn/confusion_matrix.json"))
    assert len(confusion) == 9
    assert sorted(set(confusion.actual)) == CLASSES
    assert set(confusion.predicted) <= set(CLASSES)
    per_class = pd.read_csv(repo.path / "eval/per_class.csv")
    assert per_class["class"].tolist() == CLASSES
    assert per_class.support.tolist() == [3, 3, 3]
    report = (repo.path / "report/report.md").read_text()
    assert all(name in report for name in CLASSES)
    assert "mobilenet_v2 on image_folder" in report

    # One process decodes the same bytes as the pool, the cut JPEG dropped the same way.
    repo.set_params({"compute": {"workers": 1}})
    repo.dvc("repro", "-s", "prepare")
    assert {p.name: p.read_bytes() for p in (repo.path / "data/prepared").iterdir()} == prepared
