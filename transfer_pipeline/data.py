"""Obtain a data set (CIFAR-10/100 tarball or URL, or a folder of images), split it, store it.

TensorFlow-free on purpose: the prepare stage starts in a second and bad input fails fast.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import pickle
import sys
import tarfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from .atomic import StageOutputs
from .dvcfile import rebuild_hint
from .errors import PipelineError
from .progress import ProgressBar

SPLITS = ("train", "val", "test")
DOWNLOAD_DIR = Path("data/downloads")


@dataclass
class Dataset:
    """A data set before splitting. CIFAR's pixels are in memory (``images``, 184 MB for all of
    CIFAR-10); an image folder is a list of files, decoded only when a split is stored
    (``save_prepared``), so memory does not grow with the number of images."""

    labels: np.ndarray  # int64, (N,)
    class_names: list[str]
    sources: list[str]  # where each image came from (batch file + row, or image path)
    images: np.ndarray | None = None  # uint8, (N, H, W, 3): CIFAR
    image_size: int | None = None  # image folders: decoded to image_size x image_size

    def decode_all(self, workers: int = 1) -> np.ndarray:
        """Every image in memory (for small data and tests; the stage never does this)."""
        if self.images is not None:
            return self.images
        out = np.empty((len(self.sources), self.image_size, self.image_size, 3), np.uint8)
        unreadable = _decode_into(out, self.sources, self.image_size, workers)
        if unreadable:
            raise UnreadableImage(unreadable[0][1])
        return out

    def without(self, unreadable: list[tuple[int, str]], bad_images: str) -> Dataset:
        """The data set less the images found unreadable while decoding (data.bad_images)."""
        report_unreadable([reason for _, reason in unreadable], bad_images)
        keep = np.setdiff1d(np.arange(len(self.labels)), [i for i, _ in unreadable])
        dataset = Dataset(
            self.labels[keep],
            self.class_names,
            [self.sources[i] for i in keep],
            None if self.images is None else self.images[keep],
            self.image_size,
        )
        _check_every_class_has_images(dataset, self.class_names)
        return dataset


# --------------------------------------------------------------------------- obtaining


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, expected_md5: str | None) -> Path:
    """Download once into data/downloads/, verify, and reuse while the checksum matches."""
    target = DOWNLOAD_DIR / url.rsplit("/", 1)[-1]
    if target.exists() and (expected_md5 is None or md5_of(target) == expected_md5):
        return target
    print(f"downloading {url}", flush=True)
    try:
        with (
            urllib.request.urlopen(url, timeout=30) as response,
            StageOutputs("download", files=[target]) as outputs,
        ):
            total = int(response.headers.get("Content-Length") or 0)
            bar = ProgressBar(total, "download", unit="MB", scale=1 / 2**20)
            tmp = outputs.path(target)
            with open(tmp, "wb") as out:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
            bar.close()
            _check_md5(tmp, expected_md5, f"the download from {url}", "download it again")
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise PipelineError(
            f"cannot download {url} ({reason}). Without network: fetch {target.name} on a machine "
            f"with internet, copy it to data/raw/{target.name} and run "
            f"`dvc exp run -S data.source=data/raw/{target.name}` "
            f"(or set data.source in params.yaml)"
        ) from None
    return target


def _check_md5(path: Path, expected: str | None, what: str, fix: str) -> None:
    if expected is None:
        return
    actual = md5_of(path)
    if actual != expected:
        raise PipelineError(
            f"{what} has MD5 {actual}, expected {expected} (data.md5): the file is corrupt or "
            f"not the official one; {fix}"
        )


def load_dataset(params: dict) -> Dataset:
    data = params["data"]
    source, kind = data["source"], data["dataset"]
    if kind == "image_folder":
        if is_url(source):
            raise PipelineError(
                "data.source must be a local folder when data.dataset is image_folder"
            )
        return load_image_folder(Path(source), data["image_size"], data["bad_images"])
    if is_url(source):
        path = download(source, data["md5"])
    else:
        path = Path(source)
        if not path.exists():
            raise PipelineError(
                f"data.source {source} does not exist; give the path of the {kind} python tarball "
                f"(or its extracted folder), or the official URL"
            )
        if path.is_file():
            _check_md5(
                path, data["md5"], str(path), "fetch the official tarball again or set data.md5"
            )
    return load_cifar(path, kind)


# --------------------------------------------------------------------------- CIFAR


def _unpickle(raw: bytes, name: str) -> dict:
    try:
        batch = pickle.loads(raw, encoding="bytes")
    except Exception as error:  # a truncated or foreign file: report which one
        raise PipelineError(f"{name} is not a readable CIFAR pickle ({error})") from None
    # The official files were pickled by Python 2: keys come back as bytes.
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}


def _cifar_members(kind: str) -> tuple[list[str], str, str, str]:
    if kind == "cifar10":
        batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        return batches, "batches.meta", "labels", "label_names"
    return ["train", "test"], "meta", "fine_labels", "fine_label_names"


def load_cifar(path: Path, kind: str) -> Dataset:
    """Parse the official python-version pickles, from the tarball or from the extracted folder."""
    batch_names, meta_name, label_key, names_key = _cifar_members(kind)
    wanted = batch_names + [meta_name]
    files = _read_tar_members(path, wanted) if path.is_file() else _read_dir_members(path, wanted)
    missing = [name for name in wanted if name not in files]
    if missing:
        raise PipelineError(
            f"{path} is not a {kind} python archive: missing {', '.join(missing)}; "
            f"check data.dataset and data.source"
        )
    meta = _unpickle(files[meta_name], meta_name)
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key]]
    images, labels, sources = [], [], []
    for name in batch_names:
        batch = _unpickle(files[name], name)
        pixels = np.asarray(batch["data"], dtype=np.uint8)
        # Rows are 3072 bytes: 1024 red, 1024 green, 1024 blue, each 32x32 row-major.
        images.append(pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
        sources += [f"{name}:{row}" for row in range(len(pixels))]
    return Dataset(np.concatenate(labels), class_names, sources, images=np.concatenate(images))


def _read_tar_members(path: Path, wanted: list[str]) -> dict[str, bytes]:
    files = {}
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted:
                    files[base] = archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise PipelineError(
            f"{path} is not a readable tar.gz archive ({error}); it is truncated or corrupt: "
            "fetch it again"
        ) from None
    return files


def _read_dir_members(path: Path, wanted: list[str]) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.rglob("*") if p.is_file() and p.name in wanted}


# --------------------------------------------------------------------------- image folders

SIXTEEN_BIT_FULL_SCALE = 65535  # 16-bit images, and 32-bit integer ("I") images, are 0..65535
FORMATS_EXAMPLE = "any format Pillow reads: .jpg .png .tif .webp .bmp ..."
SHOWN_PER_WARNING = 5


def load_image_folder(root: Path, size: int, bad_images: str) -> Dataset:
    """One subfolder per class; every readable image is converted to RGB and resized to size.

    Hidden entries are ignored; a symlinked folder is never a class nor searched (see
    image_files_under for symlinked files).
    """
    if not root.is_dir():
        raise PipelineError(f"data.source {root} is not a folder of class subfolders")
    entries = sorted(e for e in root.iterdir() if not e.name.startswith("."))
    class_dirs = [e for e in entries if e.is_dir() and not e.is_symlink()]
    if len(class_dirs) < 2:
        raise PipelineError(f"{root} needs at least two class subfolders, found {len(class_dirs)}")
    per_class = [image_files_under(class_dir, root) for class_dir in class_dirs]
    linked_dirs = [e for e in entries if e.is_dir() and e.is_symlink()]
    FolderListing.merged([FolderListing(symlinks_not_followed=linked_dirs), *per_class]).warn()
    labels, sources, bad = [], [], []
    for label, listing in enumerate(per_class):
        for path in listing.images:
            try:
                check_image_header(path)
            except UnreadableImage as error:
                bad.append(str(error))
                continue
            labels.append(label)
            sources.append(str(path))
    report_unreadable(bad, bad_images)
    dataset = Dataset(
        np.asarray(labels, np.int64), [d.name for d in class_dirs], sources, image_size=size
    )
    _check_every_class_has_images(dataset, [str(d) for d in class_dirs])
    return dataset


def report_unreadable(bad: list[str], bad_images: str) -> None:
    """data.bad_images: ``error`` stops with one line naming them, ``skip`` warns per image."""
    if bad and bad_images == "error":
        raise PipelineError(
            f"{len(bad)} unreadable image(s): {'; '.join(bad)}; remove them or set "
            "data.bad_images: skip"
        )
    for line in bad:
        print(f"warning: skipped unreadable image {line}", file=sys.stderr, flush=True)


def _check_every_class_has_images(dataset: Dataset, class_folders: list[str]) -> None:
    found = set(dataset.labels.tolist())
    empty = [folder for label, folder in enumerate(class_folders) if label not in found]
    if empty:
        raise PipelineError(
            f"class folder(s) {', '.join(empty)} have no readable images "
            f"({FORMATS_EXAMPLE}); add images or remove the folder(s)"
        )


class UnreadableImage(PipelineError):
    """An image file PIL cannot decode; the message is '<path> (<reason>)'."""


@dataclass
class FolderListing:
    """What a search of folders found: the image files, and what it passed over."""

    images: list[Path] = field(default_factory=list)
    not_images: list[Path] = field(default_factory=list)
    symlinks_not_followed: list[Path] = field(default_factory=list)

    @classmethod
    def merged(cls, listings: list[FolderListing]) -> FolderListing:
        return cls(
            [path for listing in listings for path in listing.images],
            [path for listing in listings for path in listing.not_images],
            [path for listing in listings for path in listing.symlinks_not_followed],
        )

    def warn(self) -> None:
        """One warning line for the files that are not images, one for the symlinks skipped."""
        _warn_ignored(self.not_images, "file(s) that are not images")
        _warn_ignored(
            self.symlinks_not_followed,
            "symlink(s) that lead to a folder, nowhere, or out of the folder searched",
        )


def _warn_ignored(paths: list[Path], what: str) -> None:
    if not paths:
        return
    shown = ", ".join(str(p) for p in paths[:SHOWN_PER_WARNING])
    more = f" (first {SHOWN_PER_WARNING} shown)" if len(paths) > SHOWN_PER_WARNING else ""
    print(f"warning: ignored {len(paths)} {what}: {shown}{more}", file=sys.stderr, flush=True)


def image_files_under(folder: Path, root: Path | None = None) -> FolderListing:
    """Every image file below a folder (recursive, by suffix), in a stable order.

    Files and folders whose name starts with "." are ignored. Symlinked folders are not searched
    (no loops, no escape); a symlinked file is read only if it leads to a file inside root
    (default: the folder itself).
    """
    inside = Path(os.path.realpath(root or folder))
    suffixes = image_suffixes()
    listing = FolderListing()
    for parent, dir_names, file_names in os.walk(folder):
        here = Path(parent)
        dir_names[:] = sorted(name for name in dir_names if not name.startswith("."))
        listing.symlinks_not_followed += [here / d for d in dir_names if (here / d).is_symlink()]
        for path in (here / name for name in file_names if not name.startswith(".")):
            if path.is_symlink() and not _leads_to_a_file_inside(path, inside):
                listing.symlinks_not_followed.append(path)
            elif path.suffix.lower() in suffixes:
                listing.images.append(path)
            else:
                listing.not_images.append(path)
    for paths in (listing.images, listing.not_images, listing.symlinks_not_followed):
        paths.sort()
    return listing


def _leads_to_a_file_inside(link: Path, folder: Path) -> bool:
    """A link to a regular file in the data folder, or into DVC's cache (``cache.type:
    symlink`` makes every tracked file such a link)."""
    target = Path(os.path.realpath(link))
    dvc_cache = Path(os.path.realpath(".dvc/cache"))
    return target.is_file() and (target.is_relative_to(folder) or target.is_relative_to(dvc_cache))


@functools.cache
def image_suffixes() -> frozenset[str]:
    """The suffixes of every format this Pillow can decode, from Pillow's own registry."""
    from PIL import Image, ImageFile

    def decodes(format_name: str) -> bool:
        factory = Image.OPEN.get(format_name, (None,))[0]
        stub = isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile)
        return factory is not None and not stub  # stubs (HDF5, GRIB, WMF...) need a handler

    return frozenset(
        suffix for suffix, name in Image.registered_extensions().items() if decodes(name)
    )


def read_image(path: Path, size: int) -> np.ndarray:
    """The one way prepare and predict read an image file: RGB, size x size, uint8."""
    with _opened(path) as image:
        decode_at_least(image, 2 * size)
        return resize_for_model(image, size)


def check_image_header(path: Path) -> None:
    """What can be known without decoding: Pillow identifies the file and its size is not a
    decompression bomb (the pixels are decoded later, when the split is stored)."""
    with _opened(path):
        pass


@contextlib.contextmanager
def _opened(path: Path):
    """The image file opened by Pillow; any reason it cannot be read is an UnreadableImage."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                yield image
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        reason = f"too large: more than {Image.MAX_IMAGE_PIXELS} pixels"
        raise UnreadableImage(f"{path} ({reason})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise UnreadableImage(f"{path} ({type(error).__name__})") from None


def decode_at_least(image, size: int) -> None:
    """A JPEG at least twice as large as needed is decoded smaller: the decoder's own DCT
    scaling (1/2, 1/4 or 1/8; Pillow's ``draft``), never below ``size`` on either side (the
    EXIF orientation is kept). Other formats, and JPEGs that need no such scaling, decode
    in full, exactly as before (bench/decode.py measures speed and pixel difference)."""
    if image.format == "JPEG" and min(image.size) // size >= 2:
        image.draft(None, (size, size))


def resize_for_model(image, size: int) -> np.ndarray:
    """The one resize used by prepare and predict: RGB, bilinear, square size x size, uint8."""
    from PIL import Image

    return np.asarray(rgb_as_viewed(image).resize((size, size), Image.BILINEAR), np.uint8)


def rgb_as_viewed(image):
    """RGB as a viewer shows the image: EXIF orientation applied, 16-bit and float images scaled
    to 8 bit, transparency composited on white."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode == "F" or image.mode == "I" or image.mode.startswith("I;16"):
        image = _to_8_bit_gray(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        on_white = Image.new("RGBA", image.size, "white")
        return Image.alpha_composite(on_white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _to_8_bit_gray(image):
    """Float images ("F") span 0..1; integer ones ("I;16...", "I") 0..65535; both clipped."""
    from PIL import Image

    full_scale = 1.0 if image.mode == "F" else SIXTEEN_BIT_FULL_SCALE
    pixels = np.asarray(image, np.float64) * (255 / full_scale)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


# --------------------------------------------------------------------------- splitting


def split_indices(
    labels: np.ndarray, sizes: dict[str, int], seed: int, class_names: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Stratified, exact-size, disjoint train/val/test indices; same seed -> same split.

    ``class_names`` (optional) only makes the error messages name classes instead of labels.
    """
    n_classes = len(np.unique(labels))
    counts = np.bincount(labels)

    def named(classes) -> str:
        return ", ".join(
            repr(class_names[c]) if class_names is not None else f"label {c}" for c in classes
        )

    total = sum(sizes.values())
    if total > len(labels):
        raise PipelineError(
            f"data.train_size + data.val_size + data.test_size = {total} but the data set has "
            f"only {len(labels)} images; lower the sizes"
        )
    for split, size in sizes.items():
        if size < n_classes:
            raise PipelineError(
                f"data.{split}_size = {size} is smaller than the {n_classes} classes; every class "
                "must appear in every split"
            )
    sparse = np.flatnonzero(counts < 3)
    if len(sparse):
        found = ", ".join(f"{named([c])} has {counts[c]}" for c in sparse)
        raise PipelineError(
            f"every class needs at least 3 images (one per split): {found}; "
            "add images or remove the class"
        )
    everything = np.arange(len(labels))
    if total < len(labels):
        everything, _ = train_test_split(
            everything, train_size=total, stratify=labels, random_state=seed
        )
    rest, test = train_test_split(
        everything, test_size=sizes["test"], stratify=labels[everything], random_state=seed
    )
    train, val = train_test_split(
        rest, test_size=sizes["val"], stratify=labels[rest], random_state=seed
    )
    split = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
    for name, index in split.items():
        missing = sorted(set(range(n_classes)) - set(labels[index].tolist()))
        if missing:
            raise PipelineError(
                f"the {name} split has no image of class(es) {named(missing)}; "
                f"raise data.{name}_size"
            )
    return split


# --------------------------------------------------------------------------- storing


DECODE_CHUNK = 256  # images decoded per round: what the decoding holds in memory at once


def save_prepared(
    folder: Path, dataset: Dataset, split: dict[str, np.ndarray], workers: int = 1
) -> list[tuple[int, str]]:
    """Write uint8 arrays per split, an index table and the class names into ``folder``.

    Each split's images go straight into its ``.npy`` (a memory map), chunk by chunk: image
    folders are decoded here, by ``workers`` processes, each image placed by its index (the
    same bytes whatever the count). Returns the images found unreadable while decoding
    (their data-set position and reason); the caller drops them and stores a new split.
    """
    from numpy.lib.format import open_memmap

    unreadable: list[tuple[int, str]] = []
    bar = None
    if dataset.images is None:
        total = sum(len(index) for index in split.values())
        bar = ProgressBar(total, "prepare: decoding", unit=" images", every=0.1)
    rows = []
    for name in SPLITS:
        index = split[name]
        if dataset.images is not None:
            shape = (len(index), *dataset.images.shape[1:])
        else:
            shape = (len(index), dataset.image_size, dataset.image_size, 3)
        images = open_memmap(folder / f"{name}_x.npy", mode="w+", dtype=np.uint8, shape=shape)
        if dataset.images is not None:
            for start in range(0, len(index), DECODE_CHUNK):
                chunk = index[start : start + DECODE_CHUNK]
                images[start : start + len(chunk)] = dataset.images[chunk]
        else:
            files = [dataset.sources[i] for i in index]
            for position, reason in _decode_into(images, files, dataset.image_size, workers, bar):
                unreadable.append((int(index[position]), reason))
        images.flush()
        del images  # closes the memory map
        np.save(folder / f"{name}_y.npy", dataset.labels[index])
        rows += [
            (
                name,
                position,
                int(i),
                dataset.sources[i],
                int(dataset.labels[i]),
                dataset.class_names[dataset.labels[i]],
            )
            for position, i in enumerate(index)
        ]
    if bar is not None:
        bar.close()
    columns = ["split", "position", "source_index", "source", "label", "label_name"]
    pd.DataFrame(rows, columns=columns).to_csv(folder / "index.csv", index=False)
    (folder / "classes.json").write_text(json.dumps(dataset.class_names, indent=1) + "\n")
    return unreadable


def _decode_or_reason(path: str, size: int):
    """In a worker: the image, or why it cannot be read."""
    try:
        return read_image(Path(path), size)
    except UnreadableImage as error:
        return str(error)


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the stage process, which stops them and reports it once."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode_into(out, files: list[str], size: int, workers: int, bar=None):
    """Decode ``files`` into ``out`` (rows in order); return (row, reason) of unreadable ones."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    unreadable = []
    pool = None
    if workers > 1 and len(files) > 1:
        pool = ProcessPoolExecutor(
            min(workers, len(files)),
            mp_context=multiprocessing.get_context("forkserver"),  # no threads of ours copied
            initializer=_ignore_interrupts,
        )
    try:
        for start in range(0, len(files), DECODE_CHUNK):
            chunk = files[start : start + DECODE_CHUNK]
            sizes = [size] * len(chunk)
            if pool is None:
                decoded = map(_decode_or_reason, chunk, sizes)
            else:
                decoded = pool.map(_decode_or_reason, chunk, sizes, chunksize=4)
            for row, image in enumerate(decoded, start):
                if isinstance(image, str):
                    unreadable.append((row, image))
                else:
                    out[row] = image
                if bar is not None:
                    bar.update(1)
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    if pool is not None:
        pool.shutdown()
    return unreadable


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


def split_summary(dataset: Dataset, split: dict[str, np.ndarray]) -> dict:
    """The data set's size and classes (the split sizes are params: exact by construction)."""
    return {"images_available": int(len(dataset.labels)), "classes": len(dataset.class_names)}
