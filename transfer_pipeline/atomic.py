"""Write outputs so that a failed or killed stage never leaves a half-written file behind.

Everything is written next to its target under a ``.partial-`` name (git-ignored) and then
moved into place with ``os.replace``, which is atomic on one file system.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path


def partial_path(target: Path) -> Path:
    """The temporary sibling a target is written to first (same suffix, so Keras accepts it)."""
    target = Path(target)
    return target.with_name(f".partial-{target.name}")


@contextlib.contextmanager
def atomic_target(target):
    """Yield a temporary path to write; on success it replaces ``target`` in one step."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(target)
    _remove(tmp)
    try:
        yield tmp
        _remove_if_dir(target)
        os.replace(tmp, target)
    finally:
        _remove(tmp)


def write_json(target, data) -> None:
    with atomic_target(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def _remove_if_dir(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
