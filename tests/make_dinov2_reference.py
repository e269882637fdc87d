"""Make the DINOv2 parity test's inputs once, with the reference implementation (transformers'
``Dinov2Model`` in PyTorch on CPU); their output is checked in beside this script, so the
suite needs neither PyTorch nor transformers:

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install "torch==2.13.0" transformers
    /tmp/ref/bin/python tests/make_dinov2_reference.py

writes tests/data/dinov2_tiny/ (a tiny random Dinov2Model: width 32, 2 layers, patch 14,
position embeddings for 56 px, as ``save_pretrained`` writes it) and
tests/data/dinov2_tiny_reference.npz: 12 random 28 x 28 uint8 RGB images and their features
as DINOv2's linear evaluation takes them: the class token concatenated with the mean of the
patch tokens, after the model's final LayerNorm, the pixels preprocessed as the DINOv2 image
processor does (x / 255, then ImageNet mean and std). 28 px is model.image_size in the test,
so no image resize enters the comparison; the position embeddings are interpolated from 56
to 28 px by transformers, as the real presets' are from 518 to 224.
"""

from pathlib import Path

import numpy as np
import torch
from transformers import Dinov2Config, Dinov2Model

HERE = Path(__file__).resolve().parent
FOLDER = HERE / "data" / "dinov2_tiny"
REFERENCE = HERE / "data" / "dinov2_tiny_reference.npz"
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def main() -> None:
    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=2,
        patch_size=14,
        image_size=56,
        layerscale_value=1.0,
    )
    model = Dinov2Model(config).eval()
    model.save_pretrained(FOLDER, safe_serialization=True)
    images = np.random.default_rng(0).integers(0, 256, (12, 28, 28, 3), dtype=np.uint8)
    pixels = (images.astype(np.float64) / 255 - MEAN) / STD
    with torch.no_grad():
        tokens = model(
            pixel_values=torch.tensor(pixels.transpose(0, 3, 1, 2), dtype=torch.float32)
        ).last_hidden_state
    features = torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=-1).numpy()
    np.savez(REFERENCE, images=images, features=features.astype(np.float32))
    print(f"{FOLDER} and {REFERENCE}: features {features.shape}")


if __name__ == "__main__":
    main()
