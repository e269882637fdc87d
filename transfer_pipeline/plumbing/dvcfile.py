"""What dvc.yaml declares for each stage: the params it reads, the paths it writes.

dvc.yaml is the one place for both. A stage reads only the params it lists
(``declared_params``, for ``params.load_params``), may write only the outs, metrics and plots
it declares (``declared_outputs``, checked by ``stage_outputs.StageOutputs.of_stage``), and an
error about a bad file names the stage that writes it (``rebuild_hint``).
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


def written_paths(body: dict, kinds=_KINDS) -> list[str]:
    """The outs, metrics and plots (or only ``kinds``) of a stage's definition, as written."""
    entries = [entry for kind in kinds for entry in body.get(kind) or []]
    return [next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries]


def _stage(stage: str) -> tuple[dict, str]:
    """A stage's definition (a foreach stage's ``do`` part) and its item: ``export@onnx``
    (``export`` alone is the foreach stage's definition, as for its params)."""
    name, _, item = stage.partition("@")
    definition = _stages().get(name)
    if not isinstance(definition, dict) or (item and "foreach" not in definition):
        raise PipelineError(
            f"{stage}: there is no dvc.yaml declaring this stage in {Path.cwd()}; run the stage "
            "from the project's root folder, where dvc.yaml is"
        )
    return definition.get("do", definition), item


def declared_params(stage: str) -> list[str]:
    """The params keys (or whole sections) dvc.yaml lists for a stage."""
    body, _ = _stage(stage)
    return [key for key in body.get("params") or [] if isinstance(key, str)]


def declared_outputs(stage: str) -> list[str]:
    """The paths dvc.yaml declares for ``stage`` (``export@onnx`` for a foreach stage)."""
    body, item = _stage(stage)
    paths = written_paths(body)
    if any("${item}" in path for path in paths) and not item:
        raise PipelineError(f"{stage} is a foreach stage: name its item ({stage}@<item>)")
    return [os.path.normpath(path.replace("${item}", item)) for path in paths]


def rebuild_hint(path) -> str:
    """How to get a good copy of a pipeline output back: DVC's cache, or the stage that
    writes it. `--force`: `dvc checkout` refuses to replace a modified file without it."""
    wanted = Path(path).as_posix().rstrip("/")
    for name, definition in _stages().items():
        if not isinstance(definition, dict):
            continue
        for out in written_paths(definition.get("do", definition), kinds=("outs",)):  # DVC-cached
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
