"""Two KerasHub 0.32 bugs in DINOv2 that fine-tuning hits, corrected where KerasHub builds
the layers (``apply``, run once by ``hub.keras_hub()``, before any KerasHub model is built or
loaded). Both are module-level replacements, one place each; KerasHub is pinned to 0.32.0.

- Stochastic depth: ``DINOV2DropPath`` takes its noise shape from the static batch size, which
  is None inside ``fit`` (``Failed to convert elements of (None, 1, 1) to Tensor``), and adds
  ``keep_prob`` to a uniform draw without flooring it, so it scales every residual branch by a
  random factor instead of dropping whole ones. ``DropPath`` drops the branch of each sample
  with probability ``rate`` and scales the others by 1 / (1 - rate), as timm and the DINOv2
  code do; its random state is a seed generator, so it runs under jax's jit and resumes.
- Saving a fine-tuned DINOv2: ``DINOV2Embedding`` saves its trained position embeddings only
  if the *signed sum* of their change is above epsilon, so a fine-tuning run whose change
  summed below it saved the position embeddings it started from.
  ``_position_embeddings_changed`` asks whether any element changed.
"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="transfer_pipeline")
class DropPath(layers.Layer):
    """Stochastic depth: in training, each sample's residual branch is zero with probability
    ``rate``, else scaled by 1 / (1 - rate); in inference, the identity."""

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        per_sample = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        kept = ops.floor(keep + keras.random.uniform(per_sample, seed=self.seed_generator))
        return inputs * ops.cast(kept / keep, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return super().get_config() | {"rate": self.rate, "seed": self.seed}


def _position_embeddings_changed(self) -> bool:
    """Whether fine-tuning changed the (interpolated) position embeddings at all."""
    as_built = self._interpolate_position_embeddings(
        self.position_embeddings,
        patch_size=self.patch_size,
        source_shape=self.position_embedding_shape,
        target_shape=self.image_shape,
        antialias=self.antialias_in_interpolation,
    )
    changed = ops.any(ops.not_equal(as_built, self.interpolated_position_embeddings))
    return bool(ops.convert_to_numpy(changed))


def apply() -> None:
    """Correct KerasHub's DINOv2 layers (idempotent)."""
    from keras_hub.src.models.dinov2 import dinov2_layers

    dinov2_layers.DINOV2DropPath = DropPath  # DINOV2Layer builds its drop path by this name
    embedding = dinov2_layers.DINOV2Embedding
    embedding._is_interpolated_position_embeddings_updated = _position_embeddings_changed
