"""The prepare stage's work: draw the split of a data set and store it in the prepared folder
(the layout store.py reads), each image of an image folder decoded once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.format import open_memmap

from ..running.progress import ProgressBar
from .images import DECODE_CHUNK, decode_into
from .sources import Dataset
from .split import split_indices
from .store import SPLITS


def save_prepared(
    folder: Path,
    dataset: Dataset,
    sizes: dict[str, int],
    seed: int,
    workers: int = 1,
    bad_images: str = "error",
) -> tuple[Dataset, dict[str, np.ndarray]]:
    """Draw the split (``split_indices``) and write it into ``folder``: uint8 arrays and labels
    per split, an index table and the class names.

    Each split's images go straight into its ``.npy`` (a memory map), chunk by chunk. An image
    folder is decoded here, by ``workers`` processes, each image placed by its index (the same
    bytes whatever the count). An image that turns out unreadable only when decoded is dropped
    (``data.bad_images``: ``skip`` warns with the reason, ``error`` stops) and the split drawn
    again from the readable images, exactly as if it had never been listed (the same files as
    a run on the folder without it); the rows already decoded are copied into the new split's
    arrays and only images the first split left out are decoded: no image is decoded twice.

    Returns the data set that was split (less the unreadable images) and the split.
    """
    split = split_indices(dataset.labels, sizes, seed, dataset.class_names)
    if dataset.images is not None:  # CIFAR: the pixels are in memory
        for name in SPLITS:
            index = split[name]
            out = _new_array(folder / f"{name}_x.npy", len(index), dataset.images.shape[1:])
            for start in range(0, len(index), DECODE_CHUNK):
                chunk = index[start : start + DECODE_CHUNK]
                out[start : start + len(chunk)] = dataset.images[chunk]
            out.flush()
    else:
        dataset, split = _decode_once(folder, dataset, split, sizes, seed, workers, bad_images)
    _write_labels_and_index(folder, dataset, split)
    return dataset, split


def _decode_once(folder, listed: Dataset, split, sizes, seed, workers, bad_images):
    """An image folder's split, decoded: see save_prepared. Positions below are in ``listed``
    (the folder as listed); ``dataset`` is what remains of it, ``kept`` its positions."""
    dataset, kept, rows = listed, np.arange(len(listed.labels)), _DecodedRows(listed, workers)
    bar = _decoding_bar(sum(len(index) for index in split.values()))
    unreadable = []
    for name in SPLITS:  # straight into the stored arrays: nothing to copy if every image reads
        unreadable += rows.decode(folder / f"{name}_x.npy", split[name], bar)
    bar.close()
    if not unreadable:
        return dataset, split
    rows.move_aside(folder)  # their rows are copied into the arrays of the split drawn again
    while unreadable:
        at = np.searchsorted(kept, [position for position, _ in unreadable])
        found = [(int(i), reason) for i, (_, reason) in zip(at, unreadable)]
        dataset = dataset.without(found, bad_images)  # warns, or stops (data.bad_images)
        kept = np.delete(kept, at)
        split = split_indices(dataset.labels, sizes, seed, dataset.class_names)
        wanted = np.concatenate([kept[split[name]] for name in SPLITS])
        new = np.array([p for p in wanted.tolist() if p not in rows.where], np.int64)
        print(
            f"prepare: split drawn again without the unreadable image(s): {len(new)} image(s) "
            f"to decode, {len(wanted) - len(new)} decoded already",
            flush=True,
        )
        unreadable = []
        if len(new):
            bar = _decoding_bar(len(new))
            unreadable = rows.decode(folder / f".decoded-{len(rows.files)}.npy", new, bar)
            bar.close()
    for name in SPLITS:
        rows.copy_into(folder / f"{name}_x.npy", kept[split[name]])
    rows.remove_files()
    return dataset, split


class _DecodedRows:
    """Where each decoded image of a folder lies: a row of one of a few .npy files."""

    def __init__(self, listed: Dataset, workers: int):
        self.listed, self.workers = listed, workers
        self.files: list[Path] = []
        self.where: dict[int, tuple[int, int]] = {}  # listed position -> (file number, row)

    def decode(self, path: Path, positions: np.ndarray, bar) -> list[tuple[int, str]]:
        """Decode these images into a new .npy at ``path``; (position, reason) of each
        unreadable one."""
        size = self.listed.image_size
        out = _new_array(path, len(positions), (size, size, 3))
        files = [self.listed.sources[p] for p in positions]
        unreadable = decode_into(out, files, size, self.workers, bar)
        out.flush()
        del out  # closes the memory map
        bad_rows = {row for row, _ in unreadable}
        number = len(self.files)
        self.files.append(path)
        for row, position in enumerate(positions.tolist()):
            if row not in bad_rows:
                self.where[position] = (number, row)
        return [(int(positions[row]), reason) for row, reason in unreadable]

    def move_aside(self, folder: Path) -> None:
        for number, path in enumerate(self.files):
            self.files[number] = path.rename(folder / f".decoded-{number}.npy")

    def copy_into(self, path: Path, positions: np.ndarray) -> None:
        """A new .npy at ``path`` holding these images' rows, in this order."""
        arrays = [np.load(file, mmap_mode="r") for file in self.files]
        out = _new_array(path, len(positions), arrays[0].shape[1:])
        for row, position in enumerate(positions.tolist()):
            number, source_row = self.where[position]
            out[row] = arrays[number][source_row]
        out.flush()
        del out, arrays

    def remove_files(self) -> None:
        for path in self.files:
            path.unlink()


def _decoding_bar(total: int) -> ProgressBar:
    return ProgressBar(total, "prepare: decoding", unit=" images", every=0.1)


def _new_array(path: Path, rows: int, shape: tuple[int, ...]) -> np.ndarray:
    """A new uint8 .npy of ``rows`` images, open as a writable memory map."""
    return open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, *shape))


def _write_labels_and_index(folder: Path, dataset: Dataset, split: dict[str, np.ndarray]) -> None:
    rows = []
    for name in SPLITS:
        index = split[name]
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
    columns = ["split", "position", "source_index", "source", "label", "label_name"]
    pd.DataFrame(rows, columns=columns).to_csv(folder / "index.csv", index=False)
    (folder / "classes.json").write_text(json.dumps(dataset.class_names, indent=1) + "\n")
