"""Decoding phone photos for `prepare`: full decode against the JPEG decoder's own scaling.

    python bench/decode.py                # 12 photo-like 4000x3000 JPEGs, sizes 32, 224, 299
    python bench/decode.py --photos 4     # fewer

The photos are synthetic but photo-like (smooth light, hard edges, fine texture and sensor
noise, JPEG quality 90, every third one with an EXIF rotation): no real photos can be
downloaded here. For each model input size it times `images.read_image` (the one reader of
prepare and tl-predict, which scales JPEGs while decoding) against the same resize after a
full decode, and reports the pixel difference between the two (uint8 levels).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transfer_pipeline.data.images import read_image, resize_for_model  # noqa: E402

WIDTH, HEIGHT = 4000, 3000


def photo(seed: int) -> Image.Image:
    """Smooth light, a few hard-edged shapes, fine texture and noise."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(40, 215, (6, 8, 3)).astype(np.uint8)
    light = np.asarray(Image.fromarray(small).resize((WIDTH, HEIGHT), Image.BICUBIC), np.float32)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    for _ in range(12):
        cx, cy, r = rng.integers(0, WIDTH), rng.integers(0, HEIGHT), rng.integers(80, 900)
        inside = (x - cx) ** 2 + (y - cy) ** 2 < r * r
        light[inside] = light[inside] * 0.4 + rng.uniform(0, 255, 3) * 0.6
    texture = np.sin(x / rng.uniform(2, 9)) * np.cos(y / rng.uniform(2, 9)) * 12
    pixels = light + texture[..., None] + rng.normal(0, 4, light.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def full_decode(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as image:
        return resize_for_model(image, size)


def best_of(function, repeats=2) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224, 299])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.photos):
            path = Path(tmp) / f"photo_{i}.jpg"
            exif = Image.Exif()
            exif[0x0112] = 6 if i % 3 == 0 else 1  # orientation: rotate 90 on every third
            photo(i).save(path, quality=90, exif=exif)
            paths.append(path)
        print(f"{args.photos} photo-like JPEGs, {WIDTH}x{HEIGHT}, quality 90")
        print("size  full decode  read_image  speed-up  mean |diff|  max |diff|  > 2 levels")
        for size in args.sizes:
            full = [full_decode(p, size) for p in paths]
            scaled = [read_image(p, size) for p in paths]
            diff = np.abs(np.stack(full).astype(int) - np.stack(scaled).astype(int))
            t_full = np.mean([best_of(lambda p=p, s=size: full_decode(p, s)) for p in paths])
            t_read = np.mean([best_of(lambda p=p, s=size: read_image(p, s)) for p in paths])
            print(
                f"{size:4d}  {1000 * t_full:8.0f} ms  {1000 * t_read:7.0f} ms  "
                f"{t_full / t_read:6.1f}x  {diff.mean():10.2f}  {diff.max():10d}  "
                f"{100 * (diff > 2).mean():8.2f} %"
            )


if __name__ == "__main__":
    main()
