"""Putting what was written in place: a target's partial sibling, files and folders removed
or replaced with ``os.replace``, and a single JSON file written atomically."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def partial_path(target: Path) -> Path:
    """A target's temporary sibling (same suffix, so Keras accepts it): where a file is written
    first when there is no staging folder (``write_json_file``, ``tl-predict --csv``)."""
    target = Path(target)
    return target.with_name(f".partial-{target.name}")


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def move(source: Path, target: Path) -> None:
    """``source`` replaces ``target`` (checked before: a file, an empty folder or one the
    pipeline made); no ``source`` means no ``target``."""
    if not os.path.lexists(source):
        remove(target)
        return
    if source.is_dir():  # two steps: os.replace cannot replace a non-empty folder
        remove(target)
    os.replace(source, target)


def write_json_file(target, data) -> None:
    """A single JSON file written atomically (state files outside a stage's outputs)."""
    target = Path(target)
    tmp = partial_path(target)
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, target)
