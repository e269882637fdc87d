"""Why a stage could not write, in one line: a full disk, the file size limit, a read-only
checkout or mount."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from .errors import PipelineError

_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_READ_ONLY = {errno.EACCES, errno.EROFS, errno.EPERM}
FULL_BELOW = 1 << 20  # bytes free: a disk this full cannot take a stage's outputs


def cannot_write(stage: str, path: Path, error: OSError) -> PipelineError:
    hint = " (a read-only checkout or mount cannot run a stage)"
    return PipelineError(
        f"{stage}: cannot write {path} ({error.strerror or error}); give a writable "
        f"path{hint if error.errno in _READ_ONLY else ''}"
    )


def is_write_failure(error: OSError) -> bool:
    # NumPy reports a failed write as a bare OSError ("problem writing element ...").
    return error.errno in _FULL or error.errno is None


def failure_reason(error: OSError, folder: Path) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    if error.errno == errno.EFBIG or _file_size_limited():
        return "file size limit reached"
    if shutil.disk_usage(folder).free < 64 << 20:
        return "the disk is full"
    return f"a write failed: {error}"


def _file_size_limited() -> bool:
    import resource  # POSIX only, like the limit itself

    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return soft != resource.RLIM_INFINITY
