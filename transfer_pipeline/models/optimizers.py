"""The optimizers and the learning-rate schedule of both training stages, and layer-wise
learning-rate decay for fine-tuning transformer backbones."""

from __future__ import annotations

import re

import keras


def optimizer(name: str, lr, momentum: float = 0.9, weight_decay: float = 0.0, lr_factors=None):
    """The optimizer a stage's params name; weight decay > 0 turns adam into adamw (decoupled
    decay) and is applied by every other optimizer too. ``lr_factors``: one learning-rate
    factor per trainable variable of the model, in its order (adam and adamw; params.py
    checks), from ``layer_decay_factors``."""
    decay = weight_decay if weight_decay > 0 else None
    if lr_factors is not None:
        if name == "adamw" or decay:
            decays = {"weight_decay": decay} if decay else {}
            return LayerwiseAdamW(learning_rate=lr, lr_factors=lr_factors, **decays)
        return LayerwiseAdam(learning_rate=lr, lr_factors=lr_factors)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=momentum, weight_decay=decay)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr, weight_decay=decay)
    if name == "adamw" or decay:
        return keras.optimizers.AdamW(
            learning_rate=lr, **({"weight_decay": decay} if decay else {})
        )
    return keras.optimizers.Adam(learning_rate=lr)


def cosine_with_warmup(lr: float, epochs: int, warmup_epochs: int, steps_per_epoch: int):
    total = epochs * steps_per_epoch
    warmup = warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else lr,
        decay_steps=max(1, total - warmup),
        warmup_target=lr if warmup else None,
        warmup_steps=warmup,
    )


class _LayerwiseRates:
    """Each variable's update at the learning rate times its own factor (the decoupled weight
    decay keeps the base rate). Factors are in the order of the trainable variables the
    optimizer is built for, so a model saved with its optimizer resumes with the same ones."""

    def __init__(self, *args, lr_factors=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_factors = [float(f) for f in lr_factors]

    def build(self, variables):
        if len(variables) != len(self.lr_factors):
            raise ValueError(
                f"{len(self.lr_factors)} learning-rate factors for {len(variables)} variables"
            )
        super().build(variables)

    def update_step(self, gradient, variable, learning_rate):
        factor = self.lr_factors[self._get_variable_index(variable)]
        if factor != 1.0:
            learning_rate = learning_rate * factor
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return super().get_config() | {"lr_factors": self.lr_factors}


@keras.saving.register_keras_serializable(package="transfer_pipeline")
class LayerwiseAdam(_LayerwiseRates, keras.optimizers.Adam):
    pass


@keras.saving.register_keras_serializable(package="transfer_pipeline")
class LayerwiseAdamW(_LayerwiseRates, keras.optimizers.AdamW):
    pass


# Variable paths of KerasHub's transformer blocks: DINOv2 "dinov2_backbone_encoder/layers_3/...",
# ViT "vit_encoder/transformer_block_4/...", CLIP and SigLIP "clip_vision_encoder_encoder_block_2/
# ..."; embeddings: "dinov2_backbone_embeddings/...", "vit_patching_and_embedding/...",
# "clip_vision_encoder_embedding/..." and CLIP's "clip_vision_encoder_pre_layer_norm/...".
_BLOCK = re.compile(r"(?:^|/|_)(?:layers|transformer_block|encoder_block)_(\d+)/")
_EMBEDDING = re.compile(r"(?:^|/)[a-z0-9_]*(?:embedding|pre_layer_norm)")


def layer_decay_factors(model, backbone, decay: float) -> list[float]:
    """Layer-wise learning-rate decay (BEiT, DINOv2 fine-tuning): the head and the
    backbone's last norm at the full rate, transformer block i of L at decay ** (L + 1 - i),
    the embeddings at decay ** (L + 1); one factor per trainable variable of ``model``."""
    in_backbone = {id(v) for v in backbone.trainable_variables}
    found = (_BLOCK.search(v.path) for v in backbone.trainable_variables)
    blocks = sorted({int(match.group(1)) for match in found if match})
    depth = {block: i + 1 for i, block in enumerate(blocks)}
    top = len(blocks) + 1
    factors = []
    for variable in model.trainable_variables:
        level = top
        if id(variable) in in_backbone:
            if match := _BLOCK.search(variable.path):
                level = depth[int(match.group(1))]
            elif _EMBEDDING.search(variable.path):
                level = 0
        factors.append(decay ** (top - level))
    return factors
