"""Save stage outputs (.keras) lean, in float32 and byte-deterministic.

A stage output is for inference: no optimizer or compile state at any depth (resuming uses
the checkpoints in .resume/), and float32 dtype policies in every layer, whatever precision
it was trained in. Under a ``mixed_*`` policy Keras keeps the variables in float32 and only
computes in bfloat16/float16, so the float32 model is the same weights computed exactly:
what evaluate measures is what export and tl-predict ship (docs/gpus-and-clusters.md).
Keras writes the save time, the current time on one zip entry,
and Python memory addresses (``shared_object_id``) into every file; we write none of them, so
the same weights and architecture always give the same bytes and DVC sees no change.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import keras

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry


def save_model(model: keras.Model, path) -> None:
    """Save for inference only, the same bytes for the same content."""
    model.save(path)
    _rewrite_lean_and_deterministic(Path(path))


def _rewrite_lean_and_deterministic(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}  # Keras' fixed order
    metadata = json.loads(members["metadata.json"])
    metadata.pop("date_saved", None)
    members["metadata.json"] = json.dumps(metadata).encode()
    config = _canonical_config(float32_config(json.loads(members["config.json"])), shared_ids={})
    members["config.json"] = json.dumps(config).encode()
    members["model.weights.h5"] = _h5_without_group(members["model.weights.h5"], "optimizer")
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=ZIP_EPOCH), data)


def _canonical_config(config, shared_ids: dict):
    """The model config without compile configs, at any depth, with the ids of shared
    objects (Python memory addresses) renumbered 1, 2, ... in order of appearance, and
    BatchNorm unsynchronized (model.synchronize_batchnorm)."""
    if isinstance(config, dict):
        canonical = {}
        for key, value in config.items():
            if key == "shared_object_id":
                canonical[key] = shared_ids.setdefault(value, len(shared_ids) + 1)
            elif key == "synchronized":  # BatchNorm's, for training only; True loads on TF only
                canonical[key] = False
            elif key != "compile_config":
                canonical[key] = _canonical_config(value, shared_ids)
        return canonical
    if isinstance(config, list):
        return [_canonical_config(item, shared_ids) for item in config]
    return config


def _is_mixed_policy(node: dict) -> bool:
    """A serialized ``DTypePolicy`` of a mixed precision (``mixed_bfloat16``, ...)."""
    config = node.get("config")
    return (
        str(node.get("class_name", "")).endswith("DTypePolicy")
        and isinstance(config, dict)
        and str(config.get("name", "")).startswith("mixed_")
    )


def float32_config(config):
    """A serialized model's config with float32 dtype policies in place of mixed ones."""
    if isinstance(config, dict):
        if _is_mixed_policy(config):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: float32_config(value) for key, value in config.items()}
    if isinstance(config, list):
        return [float32_config(item) for item in config]
    return config


def _h5_without_group(data: bytes, name: str) -> bytes:
    """A copy of an HDF5 file (bytes) without the groups called `name`, at any depth."""
    copy = io.BytesIO()
    with h5py.File(io.BytesIO(data), "r") as source, h5py.File(copy, "w") as target:
        _copy_h5_group(source, target, name)
    return copy.getvalue()


def _copy_h5_group(source: h5py.Group, target: h5py.Group, skipped: str) -> None:
    target.attrs.update(source.attrs)
    for name, item in source.items():
        if isinstance(item, h5py.Dataset):
            source.copy(item, target, name)
        elif name != skipped:
            _copy_h5_group(item, target.create_group(name), skipped)
