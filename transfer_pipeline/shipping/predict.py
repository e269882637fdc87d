"""Classify image files with the trained model: top-k classes per image, optionally as CSV.

    tl-predict [--model models/fine_tuned.keras] [--classes data/prepared/classes.json]
               [--top-k 3] [--csv out.csv] PATH...

--model also takes an exported model (the export stage): a .onnx file (ONNX Runtime; neither
TensorFlow nor Keras is imported), a SavedModel folder, a .tflite file, or models/export/<format>.

PATH is an image file or a folder, searched recursively for every format Pillow reads (hidden
files and symlinked folders are skipped).
Each image is resized exactly as the prepare stage resized the training images.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from ..data.images import FORMATS_EXAMPLE, UnreadableImage
from ..data.images import read_image as read_model_input
from ..data.sources import FolderListing, image_files_under
from ..data.store import load_class_names
from ..plumbing.dvcfile import DVC_YAML
from ..plumbing.errors import PipelineError, exit_on_pipeline_error
from ..plumbing.stage_outputs import StageOutputs
from .runtimes import model_file

CSV_COLUMNS = ("path", "rank", "class", "probability")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tl-predict",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.strip().split("\n\n")[-1],
    )
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="image files or folders of images (recursive)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=Path("models/fine_tuned.keras"),
        help="the trained classifier: .keras, .onnx, .tflite or a SavedModel folder "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--classes",
        type=Path,
        default=Path("data/prepared/classes.json"),
        help="the class names, in label order (default: %(default)s)",
    )
    parser.add_argument("--top-k", type=int, default=3, help="classes shown per image (default: 3)")
    parser.add_argument("--csv", type=Path, help="also write path,rank,class,probability rows here")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (default: 64)")
    return parser


def image_files(paths: list[Path]) -> tuple[list[Path], int]:
    """The given files as they are, plus every image file under the given folders, no
    duplicates; and how many files were passed over (each kind named in one warning line).

    Folders are searched as prepare searches a class folder (sources.image_files_under). Only
    regular files are read: a FIFO, a socket or a device would block the read.
    """
    found: dict[Path, None] = {}
    listings = []
    for path in paths:
        if path.is_dir():
            listing = image_files_under(path)
            listings.append(listing)
            for child in listing.images:
                found.setdefault(child)
        elif path.is_file():
            found.setdefault(path)
        elif path.exists():
            listings.append(FolderListing(not_regular=[path]))
        else:
            raise PipelineError(f"{path} does not exist; give image files or folders of images")
    listing = FolderListing.merged(listings)
    listing.warn()
    if not found:
        skipped = f"; skipped {listing.skipped} file(s)" if listing.skipped else ""
        raise PipelineError(
            f"no image files ({FORMATS_EXAMPLE}) in {', '.join(str(p) for p in paths)}{skipped}"
        )
    return list(found), listing.skipped


def read_image(path: Path, size: int):
    """The image as the model's uint8 input, or None (with a warning) when it cannot be read."""
    try:
        return read_model_input(path, size)
    except UnreadableImage as error:
        print(f"warning: skipped unreadable image {error}", file=sys.stderr, flush=True)
        return None


def top_classes(probabilities, class_names: list[str], k: int) -> list[tuple[str, float]]:
    order = probabilities.argsort()[::-1][:k]
    return [(class_names[i], float(probabilities[i])) for i in order]


def classify(args, files: list[Path], class_names: list[str]) -> tuple[list[tuple], int]:
    """Print the top-k classes of every readable image; return them as CSV rows, and how many
    images could not be read."""
    import numpy as np

    from .runtimes import load

    model = load(args.model)
    n_outputs = model.n_classes
    if n_outputs != len(class_names):
        raise PipelineError(
            f"{args.model} gives {n_outputs} outputs per image but {args.classes} lists "
            f"{len(class_names)} classes; pass the fine-tuned model and the classes.json of the "
            "same pipeline run"
        )
    size, k = model.image_size, min(args.top_k, len(class_names))
    rows, readable = [], 0
    for start in range(0, len(files), args.batch_size):
        batch = [(path, read_image(path, size)) for path in files[start : start + args.batch_size]]
        batch = [(path, image) for path, image in batch if image is not None]
        if not batch:
            continue
        readable += len(batch)
        probabilities = model.predict(np.stack([image for _, image in batch]))
        for (path, _), row in zip(batch, probabilities, strict=True):
            best = top_classes(row, class_names, k)
            print(f"{path}: " + ", ".join(f"{name} {p:.2f}" for name, p in best), flush=True)
            rows += [(str(path), rank, name, f"{p:.6f}") for rank, (name, p) in enumerate(best, 1)]
    if not readable:
        raise PipelineError(f"none of the {len(files)} image file(s) could be read")
    return rows, len(files) - readable


def _check_own_csv(path: Path) -> None:
    """--csv replaces only a file tl-predict wrote (its header line); a new file is fine."""
    if not path.is_file():
        return
    with open(path, "rb") as handle:
        first = handle.readline(256).decode("utf-8", "replace").strip()
    if first != ",".join(CSV_COLUMNS):
        raise PipelineError(
            f"refusing to replace {path}: tl-predict did not write it (its first line is not "
            f"{','.join(CSV_COLUMNS)}); give a new file name"
        )


@exit_on_pipeline_error
def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.top_k < 1:
        raise PipelineError(f"--top-k must be >= 1, got {args.top_k}")
    if args.batch_size < 1:
        raise PipelineError(f"--batch-size must be >= 1, got {args.batch_size}")
    # Everything that can be checked without TensorFlow is checked before paying for it.
    if not args.model.exists():
        raise PipelineError(
            f"{args.model} not found; run `dvc repro` to produce it (or pass --model)"
        )
    model_file(args.model)  # a known kind of model
    if not args.classes.exists() and not DVC_YAML.is_file():  # a serving host, not the project
        raise PipelineError(
            f"{args.classes} not found; pass --classes with the classes.json of the pipeline run "
            f"that trained {args.model} (data/prepared/classes.json in the project)"
        )
    class_names = load_class_names(args.classes)
    files, skipped = image_files(args.paths)
    if args.csv is None:
        _, unreadable = classify(args, files, class_names)
        if skipped + unreadable:
            print(f"tl-predict: {_counts(files, skipped, unreadable)}", file=sys.stderr)
        return
    if args.csv.suffix.lower() != ".csv":
        raise PipelineError(f"--csv {args.csv}: give a file name ending in .csv")
    _check_own_csv(args.csv)
    # The partial CSV is created on entering: an unwritable path fails before any prediction.
    with StageOutputs("tl-predict", files=[args.csv], inputs=[*args.paths, *files]) as outputs:
        rows, unreadable = classify(args, files, class_names)
        with open(outputs.path(args.csv), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(rows)
    counts = f"; {_counts(files, skipped, unreadable)}" if skipped + unreadable else ""
    print(f"wrote {len(rows)} rows to {args.csv}{counts}", file=sys.stderr, flush=True)


def _counts(files: list[Path], skipped: int, unreadable: int) -> str:
    """The last line's count of what was classified and what was not."""
    classified = len(files) - unreadable
    return (
        f"classified {classified} image(s), skipped {skipped + unreadable} file(s) "
        "(see the warnings above)"
    )


if __name__ == "__main__":
    main()
