"""Benchmarks of the pipeline on the machine it runs on (not part of the test suite).

    python bench/benchmark.py                 # small settings, a few minutes on 2 CPU cores
    python bench/benchmark.py --real-size     # adds Xception at 224 px (the seed's size)
    python bench/benchmark.py --backend jax   # the same on the jax backend
    python bench/benchmark.py --compare-backends [--real-size]   # 2, 3 and the peak for
                                              # tensorflow and jax, one table
    python bench/benchmark.py --compare-precisions [--real-size]  # float32 vs mixed_bfloat16
    python bench/benchmark.py --compare-backbones [--backend jax]  # DINOv2 small vs Xception

Prints, for each setting:
  1. the head trained on cached features vs the same head trained end-to-end through the
     frozen base (same epochs, same data): wall time ratio and both accuracies;
  2. feature-extraction throughput (images/s) and as a fraction of the machine's measured
     dense float32 matmul FLOP/s, using the backbone's FLOPs per image;
  3. input-pipeline overhead: step time fed by the real input pipeline (ArrayBatches) vs by a
     constant in-memory batch;
  4. the wall time of a no-change `dvc repro` on a tiny project.

--compare-precisions prints the CPU's native-bfloat16 flag, the float32 and bfloat16 matmul
peaks, extraction in both precisions (alternated; each against its own precision's peak), the
cosine similarity of the two precisions' features per image, and a few fine-tuning steps in
both (step time and loss), which is what `compute.precision: auto` decides on (issue 13).
"""

from __future__ import annotations

import argparse
import json
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


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-size", action="store_true", help="also Xception at 224 px")
    parser.add_argument("--skip-repro", action="store_true")
    parser.add_argument("--backend", choices=["tensorflow", "jax"], default="tensorflow")
    parser.add_argument(
        "--compare-backends", action="store_true", help="one table for tensorflow and jax"
    )
    parser.add_argument(
        "--compare-precisions", action="store_true", help="float32 vs mixed_bfloat16 on this CPU"
    )
    parser.add_argument(
        "--compare-backbones",
        action="store_true",
        help="feature extraction of DINOv2 small vs Xception at 224 px (random weights)",
    )
    parser.add_argument("--json-row", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


ARGS = parse_args()
os.environ["KERAS_BACKEND"] = ARGS.backend  # before Keras is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402
from flops import flops_per_image  # noqa: E402
from input_overhead import step_seconds  # noqa: E402
from synthetic import class_images  # noqa: E402

from transfer_pipeline.data.feeding import ArrayBatches, one_hot  # noqa: E402
from transfer_pipeline.models.features import extract_features  # noqa: E402
from transfer_pipeline.models.model import (  # noqa: E402
    build_classifier,
    build_feature_extractor,
    build_head,
    twin_extractor,
)


def matmul_flops_per_second(n: int = 2048, repeats: int = 20, dtype: str = "float32") -> float:
    """Dense n x n x n matmul FLOP/s in ``dtype`` through the backend's own compiler."""
    a, b = (np.random.default_rng(i).normal(size=(n, n)).astype("float32") for i in (0, 1))
    if keras.backend.backend() == "jax":
        import jax

        matmul = jax.jit(lambda x, y: x @ y)
        a, b = (jax.device_put(v).astype(dtype) for v in (a, b))
        finish = jax.block_until_ready
    else:
        import tensorflow as tf

        matmul = tf.function(tf.matmul)
        a, b = (tf.cast(tf.constant(v), dtype) for v in (a, b))
        finish = np.asarray
    finish(matmul(a, b))
    started = time.perf_counter()
    for _ in range(repeats):
        result = matmul(a, b)
    finish(result)
    return 2 * n**3 * repeats / (time.perf_counter() - started)


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
    head.compile(
        keras.optimizers.Adam(1e-3), "categorical_crossentropy", weighted_metrics=["accuracy"]
    )
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
    full.compile(
        keras.optimizers.Adam(1e-3), "categorical_crossentropy", weighted_metrics=["accuracy"]
    )
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


def extraction_throughput(backbone, image_size, n_images, peak, dtype_policy=None):
    x, _ = class_images(max(1, n_images // 10), 10, 32, seed=1)
    x = x[: len(x) // 64 * 64]  # whole batches: a smaller last batch would trace again
    extractor = build_feature_extractor(backbone, 32, image_size, None, dtype_policy)
    extract_features(extractor, x[:64], 64, "warm-up")
    started = time.perf_counter()
    extract_features(extractor, x, 64, "bench")
    per_second = len(x) / (time.perf_counter() - started)
    flops = flops_per_image(extractor, (32, 32, 3))
    return per_second, flops, per_second * flops / peak


def compare_precisions(real_size: bool) -> None:
    """float32 vs mixed_bfloat16 on this machine: the facts `compute.precision: auto` uses."""
    from transfer_pipeline.running.compute import cpu_bfloat16_flag
    from transfer_pipeline.running.precision import NOISE

    backbone, size, n_images, batch = (
        ("xception", 224, 200, 16) if real_size else ("resnet50", 32, 1024, 32)
    )
    flag = cpu_bfloat16_flag()
    print(
        f"machine: {os.cpu_count()} CPU cores, native bfloat16 flag: {flag or 'none'}; "
        f"Keras {keras.__version__} on {keras.backend.backend()} {backend_version()}"
    )
    policies = ("float32", "mixed_bfloat16")
    peaks = {p: matmul_flops_per_second(dtype=p.removeprefix("mixed_")) for p in policies}
    for p in policies:
        print(f"dense {p.removeprefix('mixed_')} matmul (2048x2048): {peaks[p] / 1e9:.1f} GFLOP/s")

    x, y = class_images(max(1, n_images // 10), 10, 32, seed=1)
    x, y = x[: len(x) // 64 * 64], y[: len(x) // 64 * 64]  # whole batches of 64
    print(f"\n[{backbone} at {size} px, {len(x)} images, batch 64] feature extraction")
    float32_model = build_feature_extractor(backbone, 32, size, None, "float32")
    models = {"float32": float32_model}
    models["mixed_bfloat16"] = twin_extractor(float32_model, backbone, size, "mixed_bfloat16")
    flops = flops_per_image(float32_model, (32, 32, 3))
    features, rates = {}, {p: [] for p in policies}
    for p in policies:
        extract_features(models[p], x[:64], 64, "warm-up")
    for _ in range(2):  # alternated: the machine's load affects both alike
        for p in policies:
            started = time.perf_counter()
            features[p] = extract_features(models[p], x, 64, "bench")
            rates[p].append(len(x) / (time.perf_counter() - started))
    for p in policies:
        best = max(rates[p])
        print(
            f"  {p:15} {best:7.1f} images/s ({', '.join(f'{r:.1f}' for r in rates[p])}), "
            f"{best * flops / 1e9:6.1f} GFLOP/s = {best * flops / peaks[p]:.0%} of the "
            f"{p.removeprefix('mixed_')} peak"
        )
    a, b = features["float32"], features["mixed_bfloat16"]
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    speed_up = max(rates["mixed_bfloat16"]) / max(rates["float32"])
    print(
        f"  cosine similarity per image, bfloat16 vs float32 features: min {cosine.min():.5f}, "
        f"mean {cosine.mean():.5f}; bfloat16 speed-up {speed_up:.2f}x"
    )

    print(f"\n[{backbone} at {size} px] fine-tuning, batch {batch}, 6 steps, Adam 1e-5")
    y1 = one_hot(y, 10)
    start_weights, step_rates = None, {}
    for p in policies:
        keras.utils.set_random_seed(0)
        extractor = build_feature_extractor(backbone, 32, size, None, p)
        if start_weights is None:
            start_weights = extractor.get_weights()
        extractor.set_weights(start_weights)
        keras.config.set_dtype_policy(p)
        head = build_head(extractor.output.shape[-1], [64], 0.3, 10)
        keras.config.set_dtype_policy("float32")
        model = build_classifier(extractor, head)
        extractor.trainable = True
        model.compile(keras.optimizers.Adam(1e-5), "categorical_crossentropy")
        losses, seconds = [], []
        for step in range(6):
            rows = slice(step * batch % len(x), step * batch % len(x) + batch)
            started = time.perf_counter()
            losses.append(float(model.train_on_batch(x[rows], y1[rows])))
            seconds.append(time.perf_counter() - started)
        step_rates[p] = batch / min(seconds[1:])
        print(
            f"  {p:15} step {min(seconds[1:]) * 1e3:7.0f} ms = {step_rates[p]:.1f} images/s "
            f"(first, with compiling: {seconds[0]:.0f} s); "
            f"loss {' '.join(f'{v:.4f}' for v in losses)}"
        )
    print(f"  bfloat16 speed-up {step_rates['mixed_bfloat16'] / step_rates['float32']:.2f}x")

    def picked(per_policy: dict) -> str:
        faster = per_policy["mixed_bfloat16"] > per_policy["float32"] * (1 + NOISE)
        return "mixed_bfloat16" if faster and flag else "float32"

    print(
        f"\ncompute.precision auto's rule on these rates (bfloat16 only if more than "
        f"{NOISE:.0%} faster, and only with a native flag): extraction "
        f"{picked({p: max(r) for p, r in rates.items()})}, training {picked(step_rates)}"
    )


def compare_backbones() -> None:
    """Images/s of the features stage's extraction (its extractor and its extract_features
    loop) for DINOv2 small (KerasHub, random weights) and Xception at 224 px, batch 32, in
    float32 and, on a CPU with a native bfloat16 flag, mixed_bfloat16; alternated, best of 2."""
    from transfer_pipeline.running.compute import cpu_bfloat16_flag

    flag = cpu_bfloat16_flag()
    print(
        f"machine: {os.cpu_count()} CPU cores, native bfloat16 flag: {flag or 'none'}; "
        f"Keras {keras.__version__} on {keras.backend.backend()} {backend_version()}"
    )
    policies = ("float32", "mixed_bfloat16") if flag else ("float32",)
    backbones = ("xception", "dinov2_small")
    x, _ = class_images(10, 10, 32, seed=1)  # 100 images of CIFAR's stored size
    x = x[:96]
    models = {
        (b, p): build_feature_extractor(b, 32, 224, None, p) for b in backbones for p in policies
    }
    rates = {key: [] for key in models}
    for model in models.values():
        extract_features(model, x[:32], 32, "warm-up")
    for _ in range(2):
        for key, model in models.items():
            started = time.perf_counter()
            extract_features(model, x, 32, "bench")
            rates[key].append(len(x) / (time.perf_counter() - started))
    print(f"\nfeature extraction at 224 px, {len(x)} images, batch 32 (images/s, best of 2)")
    for p in policies:
        best = {b: max(rates[b, p]) for b in backbones}
        runs = "; ".join(f"{b} " + ", ".join(f"{r:.1f}" for r in rates[b, p]) for b in backbones)
        print(
            f"  {p:15} xception {best['xception']:6.1f}  dinov2_small {best['dinov2_small']:6.1f}"
            f"  ratio {best['dinov2_small'] / best['xception']:.2f}x  ({runs})"
        )


def pipeline_overhead(backbone, image_size, n_images, batch):
    x, y = class_images(n_images // 10, 10, 32, seed=2)
    extractor = build_feature_extractor(backbone, 32, image_size, None)
    model = build_classifier(extractor, build_head(extractor.output.shape[-1], [64], 0.3, 10))
    extractor.trainable = True
    model.compile(keras.optimizers.Adam(1e-5), "categorical_crossentropy")
    return step_seconds(model, x, one_hot(y, 10), batch)


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


def backend_row(real_size: bool) -> dict:
    """Extraction, its share of the matmul peak, and the fine-tune step on this backend."""
    backbone, size, batch = ("xception", 224, 32) if real_size else ("resnet50", 32, 32)
    peak = matmul_flops_per_second()
    per_second, flops, fraction = extraction_throughput(backbone, size, 256, peak)
    real, constant = pipeline_overhead(backbone, size, 128 if real_size else 320, batch)
    return {
        "backend": f"{keras.backend.backend()} {backend_version()}",
        "setting": f"{backbone} {size} px, batch {batch}",
        "peak_gflops": peak / 1e9,
        "gflop_per_image": flops / 1e9,
        "images_per_s": per_second,
        "fraction": fraction,
        "step_ms": real * 1e3,
        "constant_step_ms": constant * 1e3,
    }


def backend_version() -> str:
    if keras.backend.backend() == "jax":
        import jax

        return jax.__version__
    import tensorflow as tf

    return tf.__version__


def compare_backends(real_size: bool) -> None:
    """Each backend in its own process (Keras' backend is fixed at import), one table; each
    row is printed as soon as its backend is done."""
    print(f"machine: {os.cpu_count()} CPU cores, Keras {keras.__version__}", flush=True)
    print(
        f"{'backend':20} {'setting':28} {'matmul GFLOP/s':>14} {'GFLOP/image':>11} "
        f"{'extract img/s':>13} {'% of peak':>9} {'ft step ms':>10} {'constant ms':>11} "
        f"{'overhead':>8}",
        flush=True,
    )
    for backend in ("tensorflow", "jax"):
        command = [sys.executable, __file__, "--backend", backend, "--json-row"]
        done = subprocess.run(
            command + (["--real-size"] if real_size else []),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "CI": "true"},
        )
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{r['backend']:20} {r['setting']:28} {r['peak_gflops']:14.1f} "
            f"{r['gflop_per_image']:11.2f} {r['images_per_s']:13.1f} {r['fraction']:9.0%} "
            f"{r['step_ms']:10.0f} {r['constant_step_ms']:11.0f} "
            f"{r['step_ms'] / r['constant_step_ms'] - 1:+8.1%}",
            flush=True,
        )


def main() -> None:
    args = ARGS
    os.environ.setdefault("CI", "true")  # one progress line per quarter, not a bar
    if args.json_row:
        print(json.dumps(backend_row(args.real_size)))
        return
    if args.compare_backends:
        compare_backends(args.real_size)
        return
    if args.compare_precisions:
        compare_precisions(args.real_size)
        return
    if args.compare_backbones:
        compare_backbones()
        return

    print(
        f"machine: {os.cpu_count()} CPU cores, Keras {keras.__version__} on "
        f"{keras.backend.backend()} {backend_version()}"
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
