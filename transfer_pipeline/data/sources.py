"""Obtaining a data set: the CIFAR-10/100 tarball (a local file, its extracted folder, or a URL
downloaded once and checked by MD5), or a folder of images (one subfolder per class, listed
and header-checked here, decoded when the split is stored).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..plumbing.errors import PipelineError
from ..plumbing.stage_outputs import StageOutputs
from ..running.progress import ProgressBar
from .images import (
    FORMATS_EXAMPLE,
    UnreadableImage,
    check_image_header,
    decode_into,
    image_suffixes,
    not_regular,
)

DOWNLOAD_DIR = Path("data/downloads")
SHOWN_PER_WARNING = 5


@dataclass
class Dataset:
    """A data set before splitting. CIFAR's pixels are in memory (``images``, 184 MB for all of
    CIFAR-10); an image folder is a list of files, decoded only when a split is stored
    (``prepare.save_prepared``), so memory does not grow with the number of images."""

    labels: np.ndarray  # int64, (N,)
    class_names: list[str]
    sources: list[str]  # where each image came from (batch file + row, or image path)
    images: np.ndarray | None = None  # uint8, (N, H, W, 3): CIFAR
    image_size: int | None = None  # image folders: decoded to image_size x image_size
    skipped: int = 0  # image folders: files passed over (not images, unreadable, ...)

    def decode_all(self, workers: int = 1) -> np.ndarray:
        """Every image in memory (for small data and tests; the stage never does this)."""
        if self.images is not None:
            return self.images
        out = np.empty((len(self.sources), self.image_size, self.image_size, 3), np.uint8)
        unreadable = decode_into(out, self.sources, self.image_size, workers)
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
            self.skipped + len(unreadable),
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
    listed = FolderListing.merged([FolderListing(symlinks_not_followed=linked_dirs), *per_class])
    listed.warn()
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
        np.asarray(labels, np.int64),
        [d.name for d in class_dirs],
        sources,
        image_size=size,
        skipped=listed.skipped + len(bad),
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


@dataclass
class FolderListing:
    """What a search of folders found: the image files, and what it passed over."""

    images: list[Path] = field(default_factory=list)
    not_images: list[Path] = field(default_factory=list)
    symlinks_not_followed: list[Path] = field(default_factory=list)
    not_regular: list[Path] = field(default_factory=list)  # FIFOs, sockets, devices

    @classmethod
    def merged(cls, listings: list[FolderListing]) -> FolderListing:
        return cls(
            [path for listing in listings for path in listing.images],
            [path for listing in listings for path in listing.not_images],
            [path for listing in listings for path in listing.symlinks_not_followed],
            [path for listing in listings for path in listing.not_regular],
        )

    @property
    def skipped(self) -> int:
        """How many files (and symlinked folders) were passed over."""
        return len(self.not_images) + len(self.symlinks_not_followed) + len(self.not_regular)

    def warn(self) -> None:
        """One warning line for the files that are not images, one for the symlinks skipped,
        one for the files that are not regular files."""
        _warn_ignored(self.not_images, "file(s) that are not images")
        _warn_ignored(
            self.symlinks_not_followed,
            "symlink(s) that lead to a folder, nowhere, or out of the folder searched",
        )
        _warn_ignored(
            self.not_regular,
            "file(s) that are not regular files (a FIFO, a socket or a device: reading one "
            "could wait forever)",
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
    (default: the folder itself). Only regular files are read: a FIFO, a socket or a device
    named like an image is passed over (reading it could block for ever).
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
            elif _not_a_regular_file(path):
                listing.not_regular.append(path)
            elif path.suffix.lower() in suffixes:
                listing.images.append(path)
            else:
                listing.not_images.append(path)
    for paths in (
        listing.images,
        listing.not_images,
        listing.symlinks_not_followed,
        listing.not_regular,
    ):
        paths.sort()
    return listing


def _not_a_regular_file(path: Path) -> bool:
    try:
        return not_regular(os.stat(path).st_mode) is not None
    except OSError:  # gone meanwhile, or not readable: its read says why
        return False


def _leads_to_a_file_inside(link: Path, folder: Path) -> bool:
    """A link to a regular file in the data folder, or into DVC's cache (``cache.type:
    symlink`` makes every tracked file such a link)."""
    target = Path(os.path.realpath(link))
    dvc_cache = Path(os.path.realpath(".dvc/cache"))
    return target.is_file() and (target.is_relative_to(folder) or target.is_relative_to(dvc_cache))
