"""Read and validate params.yaml: the one place that knows every param's type, range and values.

Every stage calls ``load_params()`` before doing any work, so a typo or a bad value stops the
pipeline at once with one line that names the key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .dvcfile import declared_params
from .param_checks import cross_checks, official_source
from .param_schema import SCHEMA, ParamError, flatten

_loaded: dict[Path, object] = {}  # params file -> its parsed content when the stage started


def validate(raw: dict, source: str = "params.yaml") -> dict:
    """Check every key; return the params as a nested dict of cleaned values."""
    if not isinstance(raw, dict):
        raise ParamError(f"{source} must be a mapping of sections to values")
    flat = flatten(raw)
    problems = []
    for key in flat:
        if key not in SCHEMA:
            problems.append(f"unknown key {key!r} (check the spelling against docs/params.md)")
    clean = {}
    for key, check in SCHEMA.items():
        if key not in flat:
            problems.append(f"{key} is missing")
            continue
        value, expected = check(flat[key])
        if expected is not None:
            problems.append(f"{key} = {flat[key]!r} is not allowed; expected {expected}")
        clean[key] = value
    if not problems:
        problems += cross_checks(clean)
        official_source(clean)
    if problems:
        raise ParamError(f"{source}: " + "; ".join(problems))
    nested: dict = {}
    for key, value in clean.items():
        *sections, leaf = key.split(".")
        node = nested
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    return nested


def _read(path: Path):
    if not path.exists():
        raise ParamError(f"{path} not found; run from the repository root")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ParamError(f"{path} is not valid YAML: {error}") from None


def load_params(stage: str | None = None, path="params.yaml") -> dict:
    """The validated params; with a stage, only the keys dvc.yaml declares for it (reading any
    other key is a KeyError, so the declaration cannot fall behind the code). What was read is
    remembered for ``params_unchanged``."""
    path = Path(path)
    raw = _read(path)
    params = validate(raw, str(path))
    _loaded[path.absolute()] = raw
    if stage is None:
        return params
    return _only(params, declared_params(stage))


def _only(params: dict, keys: list[str]) -> dict:
    kept: dict = {}
    for key in keys:
        *sections, leaf = key.split(".")
        source, target = params, kept
        for section in sections:
            source, target = source[section], target.setdefault(section, {})
        target[leaf] = source[leaf]
    return kept


def params_unchanged(stage: str) -> None:
    """Fail if a params file changed since the stage read it: DVC would record the new values
    for outputs made from the old ones. Called before outputs are moved into place."""
    for path, raw in _loaded.items():
        try:
            now = _read(path)
        except ParamError:
            now = None
        if now != raw:
            raise ParamError(
                f"{path.name} changed while {stage} ran; nothing recorded (the outputs were made "
                "from the old values); run `dvc repro` again"
            )
