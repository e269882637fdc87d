"""The lock a stage holds while it writes its outputs: a second live run of the same stage is
refused in one line, naming the process that holds it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import PipelineError
from .locks import Held, release, take
from .write_failures import cannot_write


def take_stage_lock(stage: str, targets: list[Path], folder) -> tuple[int, Path, bool]:
    """Held until ``release_stage_lock``. The lock file is
    ``<folder>/transfer-pipeline-<stage>.lock``; without a folder, ``.partial-<name>.lock``
    beside the first output. Returns (descriptor, path, whether its folder was made for it)."""
    first = targets[0]
    if folder is not None:
        path = Path(folder) / f"transfer-pipeline-{stage}.lock"
    else:
        path = first.with_name(f".partial-{first.name}.lock")
    made = not os.path.lexists(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return take(path), path, made
    except Held as other:
        where = f" on {other.host}" if other.host else ""
        who = f" (pid {other.pid}{where})" if other.pid is not None else ""
        stop = f" (kill {other.pid})" if who and not where else ""
        raise PipelineError(
            f"{stage}: another run of this stage{who} is still writing "
            f"{', '.join(map(str, targets))}; wait for it or stop it{stop}, then rerun"
        ) from None
    except OSError as error:
        raise cannot_write(stage, first if folder is None else path, error) from None


def release_stage_lock(lock: tuple[int, Path, bool]) -> None:
    fd, path, made = lock
    release(fd, path)
    if made:
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # made for the lock and left empty: not left behind
