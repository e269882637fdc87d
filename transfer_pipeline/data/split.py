"""Splitting a data set into train / val / test: stratified, exact sizes, reproducible."""

from __future__ import annotations

import heapq

import numpy as np
from sklearn.model_selection import train_test_split

from ..plumbing.errors import PipelineError

SHOWN_CLASSES = 10  # an error lists the images of each class up to this many classes


def split_indices(
    labels: np.ndarray, sizes: dict[str, int], seed: int, class_names: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Stratified, exact-size, disjoint train/val/test indices, every class in every split;
    same seed -> same split.

    Drawn by scikit-learn's stratified ``train_test_split`` (the images used, then test, then
    val from the rest) wherever it can draw every part with every class in every split: the
    splits of existing experiments stay as they were. Where it cannot (fewer images left over
    than classes, a class down to one image in a draw, a class missing from a split), the
    images of each class are counted out directly (``_counted_out``). ``class_names``
    (optional) only makes the error messages name classes instead of labels.
    """
    _check_splittable(labels, sizes, class_names)
    return _drawn(labels, sizes, seed) or _counted_out(labels, sizes, seed)


def _check_splittable(labels: np.ndarray, sizes: dict[str, int], class_names) -> None:
    """Sizes that fit the data and at least one image of every class for every split: then
    a split exists (every class in every split, exact sizes). Otherwise one line that names
    the sizes, the images per class and the fix."""
    counts = np.bincount(labels, minlength=len(class_names or []))
    total = sum(sizes.values())
    if total > len(labels):
        raise PipelineError(
            f"data.train_size + data.val_size + data.test_size = {total} but the data set has "
            f"only {len(labels)} images; lower the sizes"
        )
    asked = (
        f"cannot split {len(labels)} images ({_per_class(counts, class_names)}) into "
        + " / ".join(f"{name} {size}" for name, size in sizes.items())
        + " with every class in every split"
    )
    for name, size in sizes.items():
        if size < len(counts):
            raise PipelineError(
                f"{asked}: data.{name}_size = {size} is smaller than the {len(counts)} "
                f"classes; raise data.{name}_size to at least {len(counts)}"
            )
    sparse = np.flatnonzero(counts < len(sizes))
    if len(sparse):
        found = ", ".join(f"{_name(c, class_names)} has {counts[c]}" for c in sparse)
        raise PipelineError(
            f"{asked}: every class needs at least {len(sizes)} images (one per split) and "
            f"{found}; add images or remove the class"
        )


def _name(label: int, class_names) -> str:
    return repr(class_names[label]) if class_names is not None else f"label {label}"


def _per_class(counts: np.ndarray, class_names) -> str:
    """The images per class, in a few words: "40 per class", or each class's count."""
    if counts.min() == counts.max():
        return f"{counts[0]} per class"
    if len(counts) > SHOWN_CLASSES:
        return f"{counts.min()} to {counts.max()} per class"
    return ", ".join(f"{_name(c, class_names)} {n}" for c, n in enumerate(counts))


def _drawn(labels: np.ndarray, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray] | None:
    """The split as scikit-learn's stratified draws make it, or None where they cannot."""
    everything = np.arange(len(labels))
    total = sum(sizes.values())
    if total < len(labels):
        everything = _draw(everything, labels, len(labels) - total, seed)[0]
    rest, test = _draw(everything, labels, sizes["test"], seed)
    if test is None:
        return None
    train, val = _draw(rest, labels, sizes["val"], seed)
    if val is None:
        return None
    split = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
    n_classes = len(np.unique(labels))
    if any(len(np.unique(labels[index])) < n_classes for index in split.values()):
        return None
    return split


def _draw(indices, labels: np.ndarray, n_second: int, seed: int):
    """``indices`` in two stratified parts, the second of ``n_second``; (None, None) where
    scikit-learn cannot (a class with one image, or a part smaller than the classes)."""
    if indices is None:
        return None, None
    try:
        return train_test_split(
            indices, test_size=n_second, stratify=labels[indices], random_state=seed
        )
    except ValueError:
        return None, None


def _counted_out(labels: np.ndarray, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """How many images of each class go to each split (and how many are left over) is chosen
    first: one of every class in every split, then image by image to the (class, part) whose
    count is furthest below its proportional share (ties in an order drawn from ``seed``).
    The images of each class are then shuffled (``seed``) and dealt out in those numbers."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels)
    parts = [*sizes.values(), len(labels) - sum(sizes.values())]  # the last: left over
    share = np.outer(counts, parts) / len(labels)
    lowest = np.zeros_like(share, dtype=np.int64)
    lowest[:, : len(sizes)] = 1  # _check_splittable: every class has an image for each split
    taken = lowest.copy()
    class_left = counts - taken.sum(1)
    part_left = np.asarray(parts) - taken.sum(0)
    ties = rng.permutation(taken.size).reshape(taken.shape)
    queue = [(taken[c, p] - share[c, p], ties[c, p], c, p) for c, p in np.ndindex(taken.shape)]
    heapq.heapify(queue)
    while queue:  # every unit finds a place: the class and part totals are equal
        _, tie, c, p = heapq.heappop(queue)
        if class_left[c] and part_left[p]:
            taken[c, p] += 1
            class_left[c] -= 1
            part_left[p] -= 1
            heapq.heappush(queue, (taken[c, p] - share[c, p], tie, c, p))
    _even_out(taken, share, lowest)
    split = {name: [] for name in sizes}
    for c in range(len(counts)):
        images = rng.permutation(np.flatnonzero(labels == c))
        ends = np.cumsum(taken[c])
        for name, start, end in zip(sizes, ends - taken[c], ends):
            split[name].append(images[start:end])
    return {name: np.sort(np.concatenate(parts)) for name, parts in split.items()}


def _even_out(taken: np.ndarray, share: np.ndarray, lowest: np.ndarray) -> None:
    """Move images between two classes and two parts (one more of class c in part p and of
    class d in part q, one fewer of c in q and of d in p: every total unchanged) while that
    brings the counts closer to the shares (sum of squares), never below ``lowest``."""
    while True:
        error = taken - share
        # gain[c, d, p, q]: error[c, p] - error[c, q] + error[d, q] - error[d, p]
        within = error[:, :, None] - error[:, None, :]
        gain = within[:, None] - within[None, :]
        movable = taken > lowest
        gain[~(movable[:, None, None, :] & movable[None, :, :, None])] = np.inf
        best = np.unravel_index(np.argmin(gain), gain.shape)
        if gain[best] >= -2 - 1e-9:  # the squares would not shrink
            return
        c, d, p, q = best
        taken[c, p] += 1
        taken[d, q] += 1
        taken[c, q] -= 1
        taken[d, p] -= 1


def split_summary(dataset, split: dict[str, np.ndarray]) -> dict:
    """A data set's (sources.Dataset) size and classes (the split sizes are params: exact by
    construction)."""
    return {"images_available": int(len(dataset.labels)), "classes": len(dataset.class_names)}
