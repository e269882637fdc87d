"""One error type for everything a user can fix, printed as one line by every entry point."""

from __future__ import annotations

import functools
import sys
from pathlib import Path


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


def rebuild_hint(path) -> str:
    """How to get a good copy of a pipeline output back: the stage that writes it (dvc.yaml)."""
    import yaml

    wanted = Path(path).as_posix().rstrip("/")
    try:
        stages = yaml.safe_load(Path("dvc.yaml").read_text())["stages"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        stages = {}
    for name, stage in stages.items():
        for out in stage.get("do", stage).get("outs", []):
            out = next(iter(out)) if isinstance(out, dict) else out
            if "${item}" in out:  # a foreach stage: export@<format> writes models/export/<format>
                prefix = out.split("${item}")[0]
                if not wanted.startswith(prefix) or wanted == prefix.rstrip("/"):
                    continue
                item = wanted[len(prefix) :].split("/")[0]
                out, name = out.replace("${item}", item), f"{name}@{item}"
            if wanted == out or wanted.startswith(out.rstrip("/") + "/"):
                return (
                    f"restore the last good one with `dvc checkout {out}` or rebuild it with "
                    f"`dvc repro -f -s {name}`"
                )
    return "rebuild it with `dvc repro`"
