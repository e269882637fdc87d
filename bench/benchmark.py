"""Benchmarks of the pipeline on the machine it runs on (not part of the test suite).

    python bench/benchmark.py                 # small settings, a few minutes on 2 CPU cores
    python bench/benchmark.py --real-size     # adds Xception at 224 px (the seed's size)

Prints, for each setting:
  1. the head trained on cached features vs the same head trained end-to-end through the
     frozen base (same epochs, same data): wall time ratio and both accuracies;
  2. feature-extraction throughput (images/s) and as a fraction of the machine's measured
     dense float32 matmul FLOP/s, using the backbone's FLOPs per image;
  3. input-pipeline overhead: step time fed by the real input pipeline (ArrayBatches) vs by a
     constant in-memory batch;
  4. the wall time of a no-change `dvc repro` on a tiny project.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from synthetic import class_images  # noqa: E402

from transfer_pipeline.features import extract_features  # noqa: E402
from transfer_pipeline.feeding import ArrayBatches, one_hot  # noqa: E402
from transfer_pipeline.model import build_classifier, build_feature_extractor, build_head  # noqa: E402


def matmul_flops_per_second(n: int = 2048, repeats: int = 20) -> float:
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(lambda x, y: tf.matmul(x, y))
    matmul(a, b).numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        result = matmul(a, b)
    result.numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - started)


def flops_per_image(model: keras.Model, shape) -> float:
    """Float operations of one forward pass (multiply and add counted separately)."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    function = tf.function(lambda x: model(x, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec((1, *shape), tf.float32))
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return float(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)


def head_cached_vs_end_to_end(backbone, image_size, n_train, n_val, epochs, batch):
    """Both with validation every epoch, as the seed trained: only where the base runs differs."""
    x, y = class_images((n_train + n_val) // 10, 10, 32, seed=0)
    y1 = one_hot(y, 10)
    train, val = slice(0, n_train), slice(n_train, n_train + n_val)
    keras.utils.set_random_seed(0)
    extractor = build_feature_extractor(backbone, 32, image_size, None)
    head_template = build_head(extractor.output.shape[-1], [256, 128, 64], 0.3, 10)
    start_weights = head_template.get_weights()

    def fresh_head():
        head = keras.models.clone_model(head_template)
        head.set_weights(start_weights)
        return head

    # Cached: the features stage once (train and val), then the head on features.
    started = time.perf_counter()
    f_train = extract_features(extractor, x[train], 256, "train")
    f_val = extract_features(extractor, x[val], 256, "val")
    head = fresh_head()
    head.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy", metrics=["accuracy"])
    fit = head.fit(
        ArrayBatches(f_train, y1[train], batch, 0),
        validation_data=ArrayBatches(f_val, y1[val], batch),
        epochs=epochs,
        verbose=0,
        shuffle=False,
    )
    cached_seconds = time.perf_counter() - started
    cached_accuracy = fit.history["val_accuracy"][-1]

    # End-to-end: the seed's way, the frozen base recomputed in every epoch for both sets.
    full = build_classifier(extractor, fresh_head())
    full.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy", metrics=["accuracy"])
    started = time.perf_counter()
    fit = full.fit(
        ArrayBatches(x[train], y1[train], batch, 0),
        validation_data=ArrayBatches(x[val], y1[val], batch),
        epochs=epochs,
        verbose=0,
        shuffle=False,
    )
    end_to_end_seconds = time.perf_counter() - started
    end_to_end_accuracy = fit.history["val_accuracy"][-1]
    return cached_seconds, end_to_end_seconds, cached_accuracy, end_to_end_accuracy


def extraction_throughput(backbone, image_size, n_images, peak):
    x, _ = class_images(max(1, n_images // 10), 10, 32, seed=1)
    x = x[: len(x) // 64 * 64]  # whole batches: a smaller last batch would trace again
    extractor = build_feature_extractor(backbone, 32, image_size, None)
    extract_features(extractor, x[:64], 64, "warm-up")
    started = time.perf_counter()
    extract_features(extractor, x, 64, "bench")
    per_second = len(x) / (time.perf_counter() - started)
    flops = flops_per_image(extractor, (32, 32, 3))
    return per_second, flops, per_second * flops / peak


def pipeline_overhead(backbone, image_size, n_images, batch):
    x, y = class_images(n_images // 10, 10, 32, seed=2)
    y1 = one_hot(y, 10)
    extractor = build_feature_extractor(backbone, 32, image_size, None)
    model = build_classifier(extractor, build_head(extractor.output.shape[-1], [64], 0.3, 10))
    extractor.trainable = True
    model.compile(keras.optimizers.Adam(1e-5), "categorical_crossentropy")
    steps = len(x) // batch
    real = ArrayBatches(x[: steps * batch], y1[: steps * batch], batch, shuffle_seed=0)
    constant = tf.data.Dataset.from_tensors(
        (tf.constant(x[:batch]), tf.constant(y1[:batch]))
    ).repeat(steps)

    def step_seconds(data):
        started = time.perf_counter()
        model.fit(data, epochs=1, verbose=0, shuffle=False)
        return (time.perf_counter() - started) / steps

    step_seconds(real), step_seconds(constant)  # trace and warm up both
    rounds = [(step_seconds(real), step_seconds(constant)) for _ in range(3)]  # interleaved
    return min(r for r, _ in rounds), min(c for _, c in rounds)


def no_change_repro_seconds() -> float:
    from conftest import new_repo

    folder = Path(tempfile.mkdtemp(prefix="bench-repro-"))
    try:
        repo = new_repo(folder / "repo", {"fine_tune": {"epochs": 1}, "train_head": {"epochs": 1}})
        repo.dvc("repro")
        times = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "dvc", "repro"],
                cwd=repo.path,
                check=True,
                capture_output=True,
            )
            times.append(time.perf_counter() - started)
        return min(times)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-size", action="store_true", help="also Xception at 224 px")
    parser.add_argument("--skip-repro", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("CI", "true")  # one progress line per quarter, not a bar

    gpus = len(tf.config.list_physical_devices("GPU"))
    print(
        f"machine: {os.cpu_count()} CPU cores, {gpus} GPUs, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}"
    )
    peak = matmul_flops_per_second()
    print(f"dense float32 matmul (2048x2048): {peak / 1e9:.1f} GFLOP/s")

    # small: ResNet50 at 32 px learns from random weights (Xception's random features are ~0);
    # real-size: the seed's Xception at 224 px.
    settings = [("small", "resnet50", 32, 1000, 300, 15, 32)]
    if args.real_size:
        settings.append(("real-size", "xception", 224, 200, 100, 15, 32))
    for label, backbone, size, n_train, n_val, epochs, batch in settings:
        print(
            f"\n[{label}] {backbone} at {size} px, {n_train} train / {n_val} val images, "
            f"{epochs} epochs, batch {batch}"
        )
        cached, end_to_end, acc_cached, acc_e2e = head_cached_vs_end_to_end(
            backbone, size, n_train, n_val, epochs, batch
        )
        print(
            f"  head on cached features (incl. extraction): {cached:8.1f} s  "
            f"val acc {acc_cached:.3f}"
        )
        print(
            f"  head end-to-end through the frozen base:    {end_to_end:8.1f} s  "
            f"val acc {acc_e2e:.3f}"
        )
        print(f"  speed-up: {end_to_end / cached:.1f}x")
        per_second, flops, fraction = extraction_throughput(backbone, size, n_train, peak)
        print(
            f"  feature extraction: {per_second:.1f} images/s, {flops / 1e9:.2f} GFLOP/image, "
            f"{per_second * flops / 1e9:.1f} GFLOP/s = {fraction:.0%} of matmul peak"
        )
        real, constant = pipeline_overhead(backbone, size, 320 if size < 100 else 128, batch)
        print(
            f"  fine-tune step: {real * 1e3:.0f} ms with the input pipeline, "
            f"{constant * 1e3:.0f} ms from a constant batch: overhead {real / constant - 1:+.1%}"
        )
    if not args.skip_repro:
        print(f"\nno-change `dvc repro` on the tiny project: {no_change_repro_seconds():.2f} s")


if __name__ == "__main__":
    main()
