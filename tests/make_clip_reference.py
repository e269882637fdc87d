"""Make the CLIP parity test's inputs once: a tiny random KerasHub CLIP preset, 12 random
images, and their features as transformers' ``CLIPVisionModel`` gives them in PyTorch on CPU
(the reference implementation); all checked in beside this script, so the suite needs neither
PyTorch nor transformers:

    python tests/make_clip_reference.py --preset     # this project's environment
    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install "torch==2.13.0" transformers h5py
    /tmp/ref/bin/python tests/make_clip_reference.py

The first writes tests/data/clip_tiny/ (tests/hub_presets.py ``save_image_text``: an image
encoder of width 32, 2 layers, patch 16, trained at 32 px, in KerasHub's layout, the only one
KerasHub 0.32 loads CLIP from). The second copies its image-encoder weights into a
``CLIPVisionModel`` and writes tests/data/clip_tiny_reference.npz: 12 random 48 x 48 uint8 RGB
images and their features as CLIP's linear probes take them (``pooler_output``: the class
token after the final LayerNorm, before the projection), the pixels preprocessed as CLIP's
image processor does (x / 255, then CLIP's mean and std) and the position embeddings
interpolated from 32 to 48 px by transformers (``interpolate_pos_encoding=True``). 48 px is
model.image_size in the test, so no image resize enters the comparison.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_presets import CLIP_KERAS_HUB as FOLDER  # noqa: E402
from hub_presets import CLIP_MEAN, CLIP_STD, save_image_text  # noqa: E402  (no Keras import)
from hub_presets import CLIP_REFERENCE as REFERENCE  # noqa: E402

MEAN, STD = np.array(CLIP_MEAN), np.array(CLIP_STD)


def state_dict(weights_file: Path) -> dict:
    """transformers' CLIPVisionModel state dict from the KerasHub preset's weights file."""
    import h5py
    import torch

    with h5py.File(weights_file) as h5:
        encoder = h5["layers/clip_vision_encoder/layers"]

        def get(path: str) -> np.ndarray:
            return np.asarray(encoder[path])

        def dense(path: str) -> tuple[np.ndarray, np.ndarray]:  # (in, ...) kernel -> (out, in)
            kernel, bias = get(f"{path}/vars/0"), get(f"{path}/vars/1")
            if path.endswith("output_dense"):
                return kernel.reshape(-1, kernel.shape[-1]).T, bias
            return kernel.reshape(kernel.shape[0], -1).T, bias.reshape(-1)

        embedding = "clip_vision_embedding"
        tensors = {
            "embeddings.class_embedding": get(f"{embedding}/vars/0"),
            "embeddings.patch_embedding.weight": get(
                f"{embedding}/patch_embedding/vars/0"
            ).transpose(3, 2, 0, 1),
            "embeddings.position_embedding.weight": get(f"{embedding}/position_embedding/vars/0"),
            "pre_layrnorm.weight": get("layer_normalization/vars/0"),
            "pre_layrnorm.bias": get("layer_normalization/vars/1"),
            "post_layernorm.weight": get("layer_normalization_1/vars/0"),
            "post_layernorm.bias": get("layer_normalization_1/vars/1"),
        }
        for i in range(2):
            block = "clip_encoder_layer" + (f"_{i}" if i else "")
            ours = f"encoder.layers.{i}"
            for theirs, keras_name in (
                ("self_attn.q_proj", "attention/query_dense"),
                ("self_attn.k_proj", "attention/key_dense"),
                ("self_attn.v_proj", "attention/value_dense"),
                ("self_attn.out_proj", "attention/output_dense"),
                ("mlp.fc1", "dense_1"),
                ("mlp.fc2", "dense_2"),
            ):
                kernel, bias = dense(f"{block}/{keras_name}")
                tensors[f"{ours}.{theirs}.weight"], tensors[f"{ours}.{theirs}.bias"] = kernel, bias
            for theirs, keras_name in (
                ("layer_norm1", "layer_norm_1"),
                ("layer_norm2", "layer_norm_2"),
            ):
                tensors[f"{ours}.{theirs}.weight"] = get(f"{block}/{keras_name}/vars/0")
                tensors[f"{ours}.{theirs}.bias"] = get(f"{block}/{keras_name}/vars/1")
    # transformers 5 keeps the vision transformer's parameters at the top of CLIPVisionModel.
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}


def reference() -> None:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    model = CLIPVisionModel(config).eval()
    missing, unexpected = model.load_state_dict(
        state_dict(FOLDER / "model.weights.h5"), strict=False
    )
    assert not unexpected and all("position_ids" in name for name in missing), (missing, unexpected)
    images = np.random.default_rng(0).integers(0, 256, (12, 48, 48, 3), dtype=np.uint8)
    pixels = (images / 255.0 - MEAN) / STD
    with torch.no_grad():
        output = model(
            pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2)).float(),
            interpolate_pos_encoding=True,
        )
    features = output.pooler_output.numpy()
    np.savez(REFERENCE, images=images, features=features)
    print(f"{REFERENCE}: features {features.shape}, torch {torch.__version__}")


if __name__ == "__main__":
    if "--preset" in sys.argv:
        save_image_text(FOLDER, "clip", size=32)
        print(f"{FOLDER}: tiny KerasHub CLIP preset")
    else:
        reference()
