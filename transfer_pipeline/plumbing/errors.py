"""One error type for everything a user can fix, printed as one line by every entry point."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from pathlib import Path

from .locks import remove_own_temp_folder, use_own_temp_folder


class PipelineError(Exception):
    """A problem the user can fix: the message names the problem and the fix."""


_explain_fault = None  # set by leave_at_once: an error of the run -> one line, or None


def leave_at_once(explain_fault) -> None:
    """In a multi-process run (cluster.py): leave on any error without Python's exit handlers.
    JAX's shutdown barrier would wait for a process that died (heartbeat timeout, 100 s) and
    then abort with a stack trace. ``explain_fault(error)`` gives one line for an error that
    another process caused (None for others)."""
    global _explain_fault
    _explain_fault = explain_fault


def _leave(code: int, message: str | None = None) -> None:
    if message is not None:
        message = " ".join(message.split())  # always one line
        print(f"error: {message}", file=sys.stderr, flush=True)
    if _explain_fault is None:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    remove_own_temp_folder()  # os._exit skips the exit handler that would
    os._exit(code)


def exit_on_pipeline_error(main):
    """Decorate an entry point's ``main``: a PipelineError becomes one line on stderr and exit
    code 1; Ctrl-C becomes one line and exit code 130 (outputs are only moved into place at the
    very end, so an interrupted run replaced nothing). The process's temporary files go into a
    folder of its own, removed when it ends (``locks.use_own_temp_folder``)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        use_own_temp_folder(Path(sys.argv[0]).stem or "python")
        try:
            return main(*args, **kwargs)
        except PipelineError as error:
            _leave(1, str(error))
        except KeyboardInterrupt:
            _leave(130, "interrupted; nothing replaced")
        except Exception as error:
            if _explain_fault is None:
                raise
            explained = _explain_fault(error)
            if explained is None:  # a bug: its traceback, then leave like the others
                traceback.print_exc()
            _leave(1, explained)

    return wrapper
