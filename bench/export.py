"""Size and CPU latency of each export format at the real size (not part of the test suite).

    python bench/export.py                          # Xception at 224 px, every format
    python bench/export.py --formats onnx litert --runs 20

Builds the seed's classifier (Xception, stored size 32, resized to 224 in the model, the
256-128-64 head) with random weights (no internet here), exports it with the export stage's
own code, and prints per format: size in MB, the batch-1 median latency in ms, images/s at
batch 64, and the agreement with Keras on random images (largest probability difference and
the share of identical top-1 classes).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
os.environ["KERAS_BACKEND"] = "tensorflow"  # every format converts from TensorFlow
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from transfer_pipeline.models.model import (  # noqa: E402
    build_classifier,
    build_feature_extractor,
    build_head,
)
from transfer_pipeline.shipping import runtimes  # noqa: E402
from transfer_pipeline.shipping.export import FORMATS, convert, size_bytes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--runs", type=int, default=30, help="batch-1 timings per format")
    parser.add_argument("--images", type=int, default=64, help="random images for the parity")
    parser.add_argument("--calibration", type=int, default=32, help="litert_int8 sample")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    extractor = build_feature_extractor("xception", 32, 224, None)
    model = build_classifier(extractor, build_head(2048, [256, 128, 64], 0.3, 10))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    calibration = rng.integers(0, 256, (args.calibration, 32, 32, 3), dtype=np.uint8)
    print(
        f"Xception 224 (stored 32), {model.count_params():,} params; {platform.processor() or ''}"
        f" {os.cpu_count()} CPUs; keras {keras.__version__}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as scratch:
        keras_path = Path(scratch) / "model.keras"
        model.save(keras_path)
        rows = [("keras", keras_path, 0.0)]
        for fmt in args.formats:
            folder = Path(scratch) / fmt
            folder.mkdir()
            started = time.monotonic()
            path = convert(model, fmt, folder, calibration)
            rows.append((fmt, path, time.monotonic() - started))
        reference = None
        header = f"{'format':<12} {'size MB':>8} {'batch-1 ms':>10} {'img/s @64':>10}"
        print(f"{header} {'max |dp|':>9} {'top-1 same':>10} {'export s':>9}", flush=True)
        for fmt, path, seconds in rows:
            runtime = runtimes.load(path)
            probabilities = runtime.predict_batches(images)
            if reference is None:
                reference = probabilities
            latency = runtimes.median_latency_ms(runtime, images, args.runs)
            throughput = runtimes.images_per_s(runtime, images)
            same = np.mean(probabilities.argmax(1) == reference.argmax(1))
            print(
                f"{fmt:<12} {size_bytes(path) / 2**20:>8.1f} {latency:>10.1f} {throughput:>10.1f} "
                f"{np.abs(probabilities - reference).max():>9.2e} {same:>10.0%} {seconds:>9.0f}",
                flush=True,
            )
            del runtime


if __name__ == "__main__":
    main()
