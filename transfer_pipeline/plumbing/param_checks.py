"""Params valid one by one that do not work together (refused, ``cross_checks``), and valid
settings that still give a poor run or one not to be read as the seed's recipe (warned,
``warnings_about``)."""

from __future__ import annotations

from ..models.backbones import BACKBONES, BLOCKS, HUB_BACKBONES
from .param_schema import (
    CIFAR10_MD5,
    CIFAR10_URL,
    CIFAR100_MD5,
    CIFAR100_URL,
    SEED_RECIPE,
    WEIGHTS_DIR,
    flatten,
)


def cross_checks(p: dict) -> list[str]:
    problems = []
    weights = p["model.weights"]
    local = weights not in (None, "imagenet")
    if p["model.backbone"] in HUB_BACKBONES:
        preset = HUB_BACKBONES[p["model.backbone"]]
        size = preset.size_problem(p["model.image_size"])
        problems += [size] if size else []
        if local and weights.endswith(".h5"):
            problems.append(
                f"model.weights = {weights!r} is a file; {preset.name} is a KerasHub preset, whose "
                f"weights are a preset folder under {WEIGHTS_DIR}/ (docs/backbones.md)"
            )
    else:
        backbone = BACKBONES[p["model.backbone"]]
        if p["model.image_size"] < backbone.min_size:
            problems.append(
                f"model.image_size = {p['model.image_size']} is too small for {backbone.name}; "
                f"expected >= {backbone.min_size}"
            )
        if local and not weights.endswith(".h5"):
            problems.append(
                f"model.weights = {weights!r} is not a .h5 weights file of {backbone.name} (a "
                f"preset folder is for KerasHub backbones: docs/backbones.md)"
            )
    preset = HUB_BACKBONES.get(p["model.backbone"])
    if p["fine_tune.layer_decay"] < 1 and not (preset and preset.patch_size):
        problems.append(
            f"fine_tune.layer_decay = {p['fine_tune.layer_decay']} decays the learning rate per "
            f"transformer block; {p['model.backbone']} has none (use a DINOv2 or ViT preset, or "
            f"fine_tune.layer_decay: 1.0)"
        )
    if p["fine_tune.drop_path_rate"] is not None and not (preset and preset.drop_path_key):
        with_it = ", ".join(name for name, hub in HUB_BACKBONES.items() if hub.drop_path_key)
        problems.append(
            f"fine_tune.drop_path_rate = {p['fine_tune.drop_path_rate']} sets a preset's "
            f"stochastic depth; {p['model.backbone']} has none (presets with it: {with_it}); "
            f"set fine_tune.drop_path_rate: null"
        )
    unfreeze, backbone = p["fine_tune.unfreeze"], p["model.backbone"]
    head_only_preset = p["fine_tune.epochs"] == 0 and backbone not in BLOCKS  # nothing to cut
    if unfreeze != "all" and unfreeze > BLOCKS.get(backbone, 0) and not head_only_preset:
        problems.append(
            f"fine_tune.unfreeze = {unfreeze} counts blocks from the top of the base; "
            + (
                f"{backbone} has {BLOCKS[backbone]}: use 1 to {BLOCKS[backbone]}, or all"
                if backbone in BLOCKS
                else f"{backbone} is a KerasHub preset, which the pipeline does not cut into "
                "blocks: use all"
            )
        )
    if p["fine_tune.layer_decay"] < 1 and p["fine_tune.optimizer"] not in ("adam", "adamw"):
        problems.append("fine_tune.layer_decay < 1 works with fine_tune.optimizer adam or adamw")
    if p["fine_tune.warmup_epochs"] >= p["fine_tune.epochs"] and p["fine_tune.warmup_epochs"]:
        problems.append("fine_tune.warmup_epochs must be smaller than fine_tune.epochs")
    if p["compute.distribute"] == "multi_host" and p["compute.backend"] != "jax":
        problems.append(
            "compute.distribute = multi_host runs on JAX's multi-process runtime; set "
            "compute.backend = jax (TensorFlow's multi-worker strategy does not train under "
            "Keras 3)"
        )
    if p["compute.distribute"] == "multi_host" and not p["compute.launcher"]:
        problems.append(
            "compute.distribute = multi_host needs compute.launcher, the command that starts "
            'each model stage on every host, e.g. "srun --kill-on-bad-exit=1" '
            "(docs/gpus-and-clusters.md)"
        )
    if p["compute.launcher"] and p["compute.distribute"] != "multi_host":
        problems.append(
            f"compute.launcher = {p['compute.launcher']!r} starts a stage on several hosts; "
            'set compute.distribute = multi_host too, or compute.launcher to "" (every host '
            "would otherwise train alone and write the same outputs)"
        )
    return problems


def warnings_about(params: dict) -> list[str]:
    """Valid settings that still give a poor run, or a run not to be read as the seed's recipe:
    shown in the log and in the report. A note needs the keys it reads: a stage's params
    without them (load_params(stage)) get none of it."""
    notes = []
    if params["model"]["weights"] is None:
        notes.append(
            "model.weights is null: features of an untrained frozen base; expect near-chance "
            "accuracy from the head (only fine-tuning can learn)"
        )
    flat = flatten(params)
    if flat.get("fine_tune.epochs") == 0:
        notes.append(
            "head only (fine_tune.epochs 0): the backbone stayed frozen; the seed fine-tuned "
            "it for 15 epochs"
        )
    smaller = [
        f"{key} {flat[key]:,} (the seed's {seed:,})"
        for key, seed in SEED_RECIPE.items()
        if key in flat and 0 < flat[key] < seed  # 0 fine-tuning epochs: the note above
    ]
    if smaller and flat.get("data.dataset") == "cifar10":
        notes.append(
            "a small run, not the seed's recipe: "
            + ", ".join(smaller)
            + "; its accuracy is this small run's, not what the recipe reaches"
        )
    return notes


def official_source(p: dict) -> None:
    """CIFAR-100 with data.source left at the CIFAR-10 default: use CIFAR-100's URL and MD5."""
    if p["data.dataset"] == "cifar100" and p["data.source"] == CIFAR10_URL:
        p["data.source"] = CIFAR100_URL
        if p["data.md5"] == CIFAR10_MD5:
            p["data.md5"] = CIFAR100_MD5
