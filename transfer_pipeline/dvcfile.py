"""What dvc.yaml declares: the paths each stage writes (outs, metrics, plots).

dvc.yaml is the one place for the pipeline's paths. A stage may write only what it declares
there (``declared_outputs``, checked by ``atomic.StageOutputs.of_stage``), and an error about a
bad file names the stage that writes it (``rebuild_hint``).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .errors import PipelineError

DVC_YAML = Path("dvc.yaml")  # stages run from the project's root folder, as `dvc repro` runs them
_KINDS = ("outs", "metrics", "plots")


def _stages() -> dict:
    try:
        stages = yaml.safe_load(DVC_YAML.read_text())["stages"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return {}
    return stages if isinstance(stages, dict) else {}


def _paths(body: dict, kinds=_KINDS) -> list[str]:
    entries = [entry for kind in kinds for entry in body.get(kind) or []]
    return [next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries]


def declared_outputs(stage: str) -> list[str]:
    """The paths dvc.yaml declares for ``stage`` (``export@onnx`` for a foreach stage)."""
    name, _, item = stage.partition("@")
    definition = _stages().get(name)
    if not isinstance(definition, dict) or bool(item) != ("foreach" in definition):
        raise PipelineError(
            f"{stage}: there is no dvc.yaml declaring this stage in {Path.cwd()}; run the stage "
            "from the project's root folder, where dvc.yaml is"
        )
    body = definition.get("do", definition)
    return [os.path.normpath(path.replace("${item}", item)) for path in _paths(body)]


def rebuild_hint(path) -> str:
    """How to get a good copy of a pipeline output back: DVC's cache, or the stage that
    writes it. `--force`: `dvc checkout` refuses to replace a modified file without it."""
    wanted = Path(path).as_posix().rstrip("/")
    for name, definition in _stages().items():
        if not isinstance(definition, dict):
            continue
        for out in _paths(definition.get("do", definition), kinds=("outs",)):  # DVC-cached
            stage = name
            if "${item}" in out:  # a foreach stage: export@<format> writes models/export/<format>
                prefix = out.split("${item}")[0]
                if not wanted.startswith(prefix) or wanted == prefix.rstrip("/"):
                    continue
                item = wanted[len(prefix) :].split("/")[0]
                out, stage = out.replace("${item}", item), f"{name}@{item}"
            if wanted == out or wanted.startswith(out.rstrip("/") + "/"):
                return (
                    f"restore the last good one with `dvc checkout --force {out}` or rebuild it "
                    f"with `dvc repro -f -s {stage}`"
                )
    return "rebuild it with `dvc repro`"
