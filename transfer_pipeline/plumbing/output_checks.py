"""Which paths a stage may write: never anything under the user's data (``PROTECTED``) or
over one of its own inputs, a file only where no folder is, a folder only over an empty one or
one the pipeline made (its ``MARKER`` inside)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import PipelineError

MARKER = ".pipeline-output"  # in every folder the pipeline writes: it may replace that folder
PROTECTED = ("data/raw", "weights")  # the user's data: never written by a stage
LIVE_METRICS, LIVE_PLOTS = "metrics.json", "plots"  # what dvc.yaml declares of a DVCLive folder
LIVE_OUTS = (LIVE_METRICS, LIVE_PLOTS)


def where(path) -> Path:
    return Path(path).absolute().resolve()


def inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_replaceable(target: Path, folder: bool, inputs=(), marked: bool = True) -> None:
    """Raise a PipelineError if writing ``target`` could destroy something the user made.
    ``marked``: a non-empty folder must carry the pipeline's marker to be replaced."""
    here = where(target)
    for protected in PROTECTED:
        if inside(here, where(protected)):
            raise PipelineError(
                f"refusing to write {target}: it is under {protected}/, which holds your data; "
                "give an output path outside it"
            )
    for source in inputs:
        source = where(source)
        if inside(source, here):
            raise PipelineError(
                f"refusing to write {target}: it is or contains the input {source}; "
                "give another output path"
            )
    if not os.path.lexists(target):
        return
    if not folder:
        if Path(target).is_dir():
            raise PipelineError(
                f"refusing to write {target}: it is a folder and this output is a file; "
                "give a file path"
            )
        return
    if not Path(target).is_dir():
        raise PipelineError(
            f"refusing to write {target}: it is a file and this output is a folder; "
            "give a folder path"
        )
    # A staging folder alone (.partial-*: a run that was killed or is still writing) is the
    # pipeline's: the lock taken next tells which.
    mine = [entry for entry in Path(target).iterdir() if not entry.name.startswith(".partial-")]
    if marked and mine and not (Path(target) / MARKER).is_file():
        raise PipelineError(
            f"refusing to replace {target}: the folder was not made by this pipeline "
            f"(no {MARKER} inside) and is not empty; give another output path or move it away"
        )
