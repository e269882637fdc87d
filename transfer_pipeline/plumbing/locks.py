"""Tell a live process's files from a dead one's: a lock held for the process's life.

``take(path)`` locks a file exclusively (``flock``) and writes the holder's pid into it; the
kernel releases the lock when the process ends, ``kill -9`` included, so a lock is never stale:
a lock file that can be taken belongs to no live process. ``stage_outputs.StageOutputs`` locks its
stage's staging folder this way; ``use_own_temp_folder`` gives every entry point's process a
temporary folder of its own, locked the same way, so what a killed process left there is
removed by the next one.

The temporary folder is shared with other users (``/tmp``), so the sweep of dead processes'
folders trusts nothing found there: it follows no symlink, touches only real folders of this
user that look exactly like one ``use_own_temp_folder`` made, and writes into no file.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
import shutil
import socket
import stat
import tempfile
from pathlib import Path

TEMP_PREFIX = "tpipe-"  # <temp>/tpipe-XXXXXXXX/: one process's (short: see in_system_temp)
TEMP_LOCK = ".lock"  # the lock file inside it, held while the process lives
# tempfile.mkdtemp's names: the prefix and 8 random characters of its alphabet.
_OURS = re.compile(re.escape(TEMP_PREFIX) + r"[a-z0-9_]{8}")
_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
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


def _holder() -> bytes:
    return f"{os.getpid()} {socket.gethostname()}\n".encode()


def take(path: Path) -> int:
    """Lock ``path`` for this process (made if missing; a symlink is refused); its descriptor,
    to pass to ``release``. Raises ``Held`` if another process holds it, OSError if it cannot
    open it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            written = os.pread(fd, 256, 0).decode(errors="replace")
            os.close(fd)
            raise Held(written) from None
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False)):
                os.ftruncate(fd, 0)
                os.pwrite(fd, _holder(), 0)
                return fd
        os.close(fd)  # its holder removed it after we opened it: take the one there now


def release(fd: int, path: Path) -> None:
    """Remove the lock file, then let go of the lock (in this order: a process that opened the
    old file sees it is gone and takes a new one)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.close(fd)


def use_own_temp_folder(name: str) -> Path | None:
    """This process's temporary files (TensorFlow's ``__autograph_generated_file*.py``, a
    multi-host process's scratch folder, those of its child processes) go into a folder of its
    own, ``<temp>/tpipe-XXXXXXXX/`` (``tempfile.mkdtemp``: an unpredictable name, mode 0700;
    short, to keep socket paths short; ``name``, the entry point, is kept for the callers),
    removed when the process ends. A process killed with ``kill -9`` cannot remove it: the
    folders of dead processes are removed here first. None (the temporary folder as it was)
    if the temporary folder is not writable."""
    global _own
    if _own is not None:
        return _own[0]
    base = Path(tempfile.gettempdir())
    _remove_dead(base)
    try:
        folder = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=base))
    except OSError:
        return None
    try:
        _own = folder, _lock_new(folder), os.getpid()
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    tempfile.tempdir = os.environ["TMPDIR"] = str(folder)
    atexit.register(remove_own_temp_folder)  # runs after TensorFlow's own exit handlers
    return folder


def _lock_new(folder: Path) -> int:
    """The lock of a folder just made: written under another name and renamed, so that a sweep
    never finds ``.lock`` unlocked or empty while its process lives."""
    folder_fd = os.open(folder, _NOFOLLOW_DIR)
    try:
        new = TEMP_LOCK + "-new"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(new, flags, 0o600, dir_fd=folder_fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.pwrite(fd, _holder(), 0)
            os.rename(new, TEMP_LOCK, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
        except OSError:
            os.close(fd)
            raise
        return fd
    finally:
        os.close(folder_fd)


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
    """Called at exit (and before ``os._exit``, which skips exit handlers). Removes the folder
    only if it is still this process's: a real folder of this user holding the lock it holds."""
    global _own
    if _own is None or _own[2] != os.getpid():  # a forked child's exit leaves it to its parent
        return
    folder, fd, _ = _own
    _own = None
    with contextlib.suppress(OSError), _opened_if_ours(folder) as folder_fd:
        lock = os.stat(TEMP_LOCK, dir_fd=folder_fd, follow_symlinks=False)
        if os.path.samestat(lock, os.fstat(fd)):
            _remove(folder, folder_fd)
    os.close(fd)


def _remove_dead(base: Path) -> None:
    """Remove the temporary folders of processes that ended without removing theirs: only a
    name ``tempfile.mkdtemp`` gives (``tpipe-`` and 8 characters), a real folder (not a
    symlink) of this user that no one else may enter, holding a lock file that is a regular
    file of this user (one link, not a symlink) and that no live process holds. Nothing is
    written; anything else is left as it is."""
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            if _OURS.fullmatch(name):
                with contextlib.suppress(OSError), _opened_if_ours(base / name) as folder_fd:
                    _remove_if_dead(base / name, folder_fd)


def _remove_if_dead(folder: Path, folder_fd: int) -> None:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # no O_CREAT
    lock = os.open(TEMP_LOCK, flags, dir_fd=folder_fd)
    try:
        seen = os.fstat(lock)
        if not stat.S_ISREG(seen.st_mode) or seen.st_uid != os.geteuid() or seen.st_nlink != 1:
            return
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live process's
            return
        _remove(folder, folder_fd)
    finally:
        os.close(lock)


@contextlib.contextmanager
def _opened_if_ours(folder: Path):
    """A descriptor of ``folder`` if it is a real folder (a symlink is not followed) of this
    user, closed to group and others, as ``tempfile.mkdtemp`` makes it; OSError otherwise."""
    seen = os.lstat(folder)
    mine = stat.S_ISDIR(seen.st_mode) and seen.st_uid == os.geteuid()
    if not mine or stat.S_IMODE(seen.st_mode) & 0o077:
        raise NotADirectoryError(f"{folder} is not one of our temporary folders")
    folder_fd = os.open(folder, _NOFOLLOW_DIR)
    try:
        if not os.path.samestat(os.fstat(folder_fd), seen):  # replaced since the lstat
            raise NotADirectoryError(f"{folder} was replaced")
        yield folder_fd
    finally:
        os.close(folder_fd)


def _remove(folder: Path, folder_fd: int) -> None:
    """Remove what is inside the opened folder (through its descriptor: no symlink followed),
    then the folder."""
    for name in os.listdir(folder_fd):
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode):
                shutil.rmtree(name, dir_fd=folder_fd)
            else:
                os.unlink(name, dir_fd=folder_fd)
    with contextlib.suppress(OSError):
        os.rmdir(folder)
