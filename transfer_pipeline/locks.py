"""Tell a live process's files from a dead one's: a lock held for the process's life.

``take(path)`` locks a file exclusively (``flock``) and writes the holder's pid into it; the
kernel releases the lock when the process ends, ``kill -9`` included, so a lock is never stale:
a lock file that can be taken belongs to no live process. ``atomic.StageOutputs`` locks its
stage's staging folder this way; ``use_own_temp_folder`` gives every entry point's process a
temporary folder of its own, locked the same way, so what a killed process left there is
removed by the next one.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

TEMP_PREFIX = "tpipe-"  # <temp>/tpipe-<pid>/: one process's (a short name: see in_system_temp)
TEMP_LOCK = ".lock"  # the lock file inside it, held while the process lives
_own: tuple[Path, int, int] | None = None  # this process's temporary folder, its lock, pid


class Held(Exception):
    """Another live process holds the lock: its ``pid`` (None if it has not written it yet)
    and ``host`` (None: this one)."""

    def __init__(self, written: str):
        fields = written.split()
        self.pid = int(fields[0]) if fields and fields[0].isdigit() else None
        host = fields[1] if len(fields) > 1 else None
        self.host = None if host == socket.gethostname() else host
        super().__init__(written)


def take(path: Path, create: bool = True) -> int:
    """Lock ``path`` for this process (made if missing and ``create``); its descriptor, to pass
    to ``release``. Raises ``Held`` if another process holds it, OSError if it cannot open it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            written = os.pread(fd, 256, 0).decode(errors="replace")
            os.close(fd)
            raise Held(written) from None
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
                return fd
        os.close(fd)  # its holder removed it after we opened it: take the one there now
        if not create:
            raise FileNotFoundError(path)


def release(fd: int, path: Path) -> None:
    """Remove the lock file, then let go of the lock (in this order: a process that opened the
    old file sees it is gone and takes a new one)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.close(fd)


def use_own_temp_folder(name: str) -> Path | None:
    """This process's temporary files (TensorFlow's ``__autograph_generated_file*.py``, a
    multi-host process's scratch folder, those of its child processes) go into
    ``<temp>/tpipe-<pid>/``, removed when the process ends (``name``: the entry point, kept for
    the callers; the folder is named by pid alone, to keep socket paths short). A process killed
    with ``kill -9`` cannot remove it: the folders of dead processes are removed here first.
    None (the temporary folder as it was) if the temporary folder is not writable."""
    global _own
    if _own is not None:
        return _own[0]
    base = Path(tempfile.gettempdir())
    _remove_dead(base)
    folder = base / f"{TEMP_PREFIX}{os.getpid()}"
    try:
        shutil.rmtree(folder, ignore_errors=True)  # a dead process's with this pid, half made
        folder.mkdir()
        _own = folder, take(folder / TEMP_LOCK), os.getpid()
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    tempfile.tempdir = os.environ["TMPDIR"] = str(folder)
    atexit.register(remove_own_temp_folder)  # runs after TensorFlow's own exit handlers
    return folder


@contextlib.contextmanager
def in_system_temp():
    """The temporary folder as it was before ``use_own_temp_folder``, for what the block makes
    there: multiprocessing's forkserver socket, whose path may have 107 bytes at most (Python
    3.11), under a TMPDIR that may be deep already."""
    own = tempfile.tempdir
    if _own is not None:
        tempfile.tempdir = str(_own[0].parent)
    try:
        yield
    finally:
        tempfile.tempdir = own


def remove_own_temp_folder() -> None:
    """Called at exit (and before ``os._exit``, which skips exit handlers)."""
    global _own
    if _own is None or _own[2] != os.getpid():  # a forked child's exit leaves it to its parent
        return
    folder, fd, _ = _own
    _own = None
    shutil.rmtree(folder, ignore_errors=True)
    os.close(fd)


def _remove_dead(base: Path) -> None:
    """Remove the temporary folders of processes that ended without removing theirs."""
    for folder in base.glob(f"{TEMP_PREFIX}*"):
        match = re.fullmatch(rf"{TEMP_PREFIX}\d+", folder.name)
        if not match or folder.is_symlink() or not folder.is_dir():
            continue
        try:  # only a folder with our lock file in it: anything else is not ours to remove
            fd = take(folder / TEMP_LOCK, create=False)
        except (Held, OSError):  # a live process's, or no lock file (not ours, or half made)
            continue
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)
