"""One error type for everything a user can fix, printed as one line by every entry point."""

from __future__ import annotations

import functools
import sys


class PipelineError(Exception):
    """A problem the user can fix: the message names the problem and the fix."""


def exit_on_pipeline_error(main):
    """Decorate an entry point's ``main``: a PipelineError becomes one line on stderr and exit
    code 1; Ctrl-C becomes one line and exit code 130 (outputs are only moved into place at the
    very end, so an interrupted run replaced nothing)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except PipelineError as error:
            message = " ".join(str(error).split())  # always one line
            print(f"error: {message}", file=sys.stderr, flush=True)
            sys.exit(1)
        except KeyboardInterrupt:
            print("error: interrupted; nothing replaced", file=sys.stderr, flush=True)
            sys.exit(130)

    return wrapper
