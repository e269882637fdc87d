"""Per-component GPU benchmark on the JAX backend (no TensorFlow needed): run by bench/gpu.sh
after the timed pipeline (gpu_pipeline.py).

    python bench/gpu.py            # Xception 224, DINOv2 small 224, EfficientNetV2-S 384
    python bench/gpu.py --smoke    # tiny backbones and three rows on any CPU: end to end

Synthetic CIFAR-shaped uint8 images (32x32x3, random weights: only speed is measured) go
through the pipeline's own models (transfer_pipeline.models.model), feeding (ArrayBatches) and the
training stages' callbacks (EpochLog, FailOnNonFiniteLoss), so the figures are what the stages
see. For each backbone, precision and batch size:

  extract  images/s of feature extraction (extract_features: the features stage's predict)
  train    images/s of fine-tuning (the whole classifier trainable, Adam, fit on batches)
  compile  seconds of the first call (tracing + XLA), paid once per stage run
  % peak   achieved FLOP/s over the measured dense matmul peak of that precision; FLOPs
           per image from XLA's cost analysis of the forward pass, a training image
           counted as 3x forward (forward + two backward products)

The first training row also measures the input overhead: its steps fed by ArrayBatches
against a constant in-memory batch (input_overhead.py). Then a projection of the two recipes
(the stronger one in docs/experiments.md) from these rates: arithmetic, not a run
(gpu_pipeline.py times the real one). Configurations run in priority order and the rest
are skipped once --budget-s is spent, so the table always comes back.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a CPU check")
    parser.add_argument("--budget-s", type=float, default=330, help="stop starting new configs")
    parser.add_argument("--out", type=Path, default=None, help="write all figures as JSON")
    parser.add_argument(
        "--precision", choices=["mixed_bfloat16", "float32"], help="only this precision's rows"
    )
    return parser.parse_args()


ARGS = parse_args()
os.environ["KERAS_BACKEND"] = "jax"  # before Keras is imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from flops import flops_per_image  # noqa: E402
from input_overhead import step_seconds  # noqa: E402

from transfer_pipeline.data.feeding import ArrayBatches, one_hot  # noqa: E402
from transfer_pipeline.models.features import extract_features  # noqa: E402
from transfer_pipeline.models.model import (  # noqa: E402
    backbone_of,
    build_classifier,
    build_feature_extractor,
    build_head,
    unfreeze,
)
from transfer_pipeline.running.callbacks import EpochLog, FailOnNonFiniteLoss  # noqa: E402

STARTED = time.monotonic()
# Backbones measured, the seed's, the stronger recipe's and the head-only recipe's: name ->
# input size (the stored images are 32 px, CIFAR's).
SIZES = {"xception": 224, "efficientnetv2_s": 384, "dinov2_small": 224}
if ARGS.smoke:  # DINOv2 at its smallest input: two patches of 14 px a side
    SIZES = {"mobilenet_v2": 32, "efficientnetv2_b0": 32, "dinov2_small": 28}
    MATMUL_N, EXTRACT_IMAGES, TRAIN_STEPS, LARGEST_TRAIN_BATCH = 512, 32, 2, {}
else:
    MATMUL_N, EXTRACT_IMAGES, TRAIN_STEPS = 8192, 4096, 30
    # The largest training batches tried (an H100 has 80 GB); a row that does not fit says so.
    LARGEST_TRAIN_BATCH = {"xception": 256, "efficientnetv2_s": 128}
RECIPE_BATCH = 8 if ARGS.smoke else 32  # the seed's fine-tune batch (smoke: 8)
STRONG_BATCH = 8 if ARGS.smoke else 64  # the stronger recipe's fine-tune batch
FEATURE_BATCH = 8 if ARGS.smoke else 256  # features.batch_size
SEED, STRONG, FOUNDATION = SIZES  # the seed's, the stronger recipe's, the head-only one's


def plan() -> list[tuple[str, str, str, int]]:
    """(phase, backbone, precision, batch) in priority order: the figures the projections
    need first (bf16 is what `compute.precision: auto` runs on a recent GPU), float32 last."""
    bf16, fp32 = "mixed_bfloat16", "float32"
    rows = [
        ("extract", SEED, bf16, RECIPE_BATCH),
        ("extract", SEED, bf16, FEATURE_BATCH),
        ("extract", FOUNDATION, bf16, RECIPE_BATCH),
        ("extract", FOUNDATION, bf16, FEATURE_BATCH),
        ("train", SEED, bf16, RECIPE_BATCH),
        ("extract", SEED, fp32, FEATURE_BATCH),
        ("extract", FOUNDATION, fp32, FEATURE_BATCH),
        ("extract", STRONG, bf16, RECIPE_BATCH),
        ("extract", STRONG, bf16, FEATURE_BATCH),
        ("train", STRONG, bf16, STRONG_BATCH),
        ("train", SEED, bf16, LARGEST_TRAIN_BATCH.get(SEED, 0)),
        ("train", STRONG, bf16, LARGEST_TRAIN_BATCH.get(STRONG, 0)),
        ("extract", SEED, fp32, RECIPE_BATCH),
        ("train", SEED, fp32, RECIPE_BATCH),
        ("extract", STRONG, fp32, RECIPE_BATCH),
        ("train", STRONG, fp32, RECIPE_BATCH),
        ("train", STRONG, bf16, RECIPE_BATCH),
    ]
    if ARGS.smoke:  # the seed's and DINOv2's extraction, the seed's training: in seconds
        rows = rows[:5]
    unique = []
    for row in rows:
        if ARGS.precision and row[2] != ARGS.precision:
            continue
        if row[3] and row not in unique:
            unique.append(row)
    return unique


def elapsed() -> float:
    return time.monotonic() - STARTED


def matmul_peak(dtype: str, n: int, repeats: int = 20) -> float:
    """Dense n x n x n matmul FLOP/s in `dtype` on the default device (random data)."""
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    a, b = (jax.random.normal(k, (n, n), dtype=dtype) for k in keys)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    started = time.perf_counter()
    for _ in range(repeats):
        result = matmul(a, b)
    result.block_until_ready()
    return 2 * n**3 * repeats / (time.perf_counter() - started)


# Forward GFLOP per image from JAX's cost analysis on the CPU backend (bench/gpu.py --smoke's
# flops_per_image at these sizes, JAX 0.10.2). On CUDA, XLA's cost analysis leaves out the
# cuDNN convolutions (it reported 0.05 GFLOP for Xception at 224), so these stored figures
# are used wherever they exist.
STORED_GFLOP = {
    ("xception", 224): 9.145,
    ("efficientnetv2_s", 384): 16.838,
    ("dinov2_small", 224): 12.635,  # JAX 0.10.2 on this CPU, 2026-12-04: 2 x its 6.1 GMACs
}


def out_of_memory(error: Exception) -> bool:
    return "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower()


def fresh_extractor(backbone: str, size: int, precision: str):
    keras.backend.clear_session()
    gc.collect()
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(0)
    extractor = build_feature_extractor(backbone, 32, size, None)
    return extractor


def measure_extraction(backbone, size, precision, batch, images):
    extractor = fresh_extractor(backbone, size, precision)
    started = time.perf_counter()
    extract_features(extractor, images[: 2 * batch], batch, "warm-up")  # compile
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    extract_features(extractor, images, batch, "timed")
    return len(images) / (time.perf_counter() - started), compile_s


def stage_callbacks(stage: str, epochs: int, images: int, batch: int) -> list:
    """The training stages' own callbacks (EpochLog's durations are the epoch times)."""
    return [EpochLog(stage, epochs, images, batch), FailOnNonFiniteLoss(stage, "lr")]


def measure_fine_tune(backbone, size, precision, batch, images, labels, overhead=False):
    extractor = fresh_extractor(backbone, size, precision)
    head = build_head(extractor.output.shape[-1], [256, 128, 64], 0.3, 10)
    classifier = build_classifier(extractor, head)
    unfreeze(backbone_of(extractor), "all")
    classifier.compile(
        optimizer=keras.optimizers.Adam(1e-5),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    n = TRAIN_STEPS * batch
    x, y = images[:n], one_hot(labels[:n], 10)
    callbacks = stage_callbacks("fine_tune", 2, n, batch)
    # Epoch 1 compiles and warms up; epoch 2 is timed.
    data = ArrayBatches(x, y, batch, shuffle_seed=0)
    classifier.fit(data, epochs=2, verbose=0, shuffle=False, callbacks=callbacks)
    seconds = callbacks[0].durations
    measured = None
    if overhead:
        fed, constant = step_seconds(
            classifier, x, y, batch, stage_callbacks("fine_tune", 1, n, batch)
        )
        measured = {"setting": f"{backbone} {size} px, {precision}, batch {batch}"}
        measured |= {"fed_ms": fed * 1e3, "constant_ms": constant * 1e3}
        print(
            f"input overhead ({measured['setting']}): {fed * 1e3:.2f} ms per step fed by "
            f"ArrayBatches, {constant * 1e3:.2f} ms from a constant batch: "
            f"{fed / constant - 1:+.1%}",
            flush=True,
        )
    return n / seconds[1], seconds[0] - seconds[1], measured


def measure_head_epoch(feature_width: int, n_train: int, batch: int, precision: str) -> float:
    """Seconds per head epoch on cached features (the train_head stage's unit of work)."""
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(precision)
    head = build_head(feature_width, [256, 128, 64], 0.3, 10)
    head.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    features = rng.normal(size=(n_train, feature_width)).astype(np.float32)
    labels = one_hot(rng.integers(0, 10, n_train), 10)
    callbacks = stage_callbacks("train_head", 2, n_train, batch)
    head.fit(
        ArrayBatches(features, labels, batch, shuffle_seed=0),
        epochs=2,
        verbose=0,
        shuffle=False,
        callbacks=callbacks,
    )
    return callbacks[0].durations[1]


def main() -> None:
    device = jax.devices()[0]
    print(
        f"machine: {device.device_kind} ({device.platform}), {len(jax.devices())} device(s), "
        f"{os.cpu_count()} CPU cores; JAX {jax.__version__}, Keras {keras.__version__}",
        flush=True,
    )
    peaks = {}
    for dtype in ("bfloat16", "float32"):
        peaks[dtype] = matmul_peak(dtype, MATMUL_N)
        print(f"dense {dtype} matmul ({MATMUL_N}^3): {peaks[dtype] / 1e12:.3g} TFLOP/s", flush=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (EXTRACT_IMAGES, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, EXTRACT_IMAGES)
    results = {"device": device.device_kind, "peaks": peaks, "rows": [], "skipped": []}
    flops = {}
    for backbone in dict.fromkeys(backbone for _, backbone, _, _ in plan()):
        size = SIZES[backbone]
        if (backbone, size) in STORED_GFLOP:
            flops[backbone], source = STORED_GFLOP[backbone, size] * 1e9, "stored, XLA CPU"
        else:
            flops[backbone] = flops_per_image(
                fresh_extractor(backbone, size, "float32"), (32, 32, 3)
            )
            source = f"XLA cost analysis on {jax.default_backend()}"
        print(f"{backbone} at {size} px: {flops[backbone] / 1e9:.2f} GFLOP per image ({source})")
    results["gflop_per_image"] = {k: v / 1e9 for k, v in flops.items()}

    table = [
        f"{'phase':8} {'backbone':17} {'px':>4} {'precision':15} {'batch':>5} "
        f"{'images/s':>9} {'% peak':>7} {'compile s':>9}"
    ]

    def row(text: str) -> None:
        table.append(text)
        print(text, flush=True)

    print("\n" + table[0], flush=True)
    for kind, backbone, precision, batch in plan():
        size = SIZES[backbone]
        if elapsed() > ARGS.budget_s:
            results["skipped"].append([kind, backbone, size, precision, batch])
            row(f"{kind:8} {backbone:17} {size:>4} {precision:15} {batch:>5} skipped (time)")
            continue
        try:
            if kind == "extract":
                rate, compile_s = measure_extraction(backbone, size, precision, batch, images)
                flop = flops[backbone]
            else:
                rate, compile_s, overhead = measure_fine_tune(
                    backbone,
                    size,
                    precision,
                    batch,
                    images,
                    labels,
                    overhead="input_overhead" not in results,
                )
                results["input_overhead"] = overhead or results.get("input_overhead")
                flop = 3 * flops[backbone]
        except Exception as error:  # noqa: BLE001 - report the row, go on with the next
            reason = "out of memory" if out_of_memory(error) else str(error).splitlines()[0][:80]
            row(f"{kind:8} {backbone:17} {size:>4} {precision:15} {batch:>5} failed: {reason}")
            results["rows"].append([kind, backbone, size, precision, batch, None, reason])
            continue
        peak = peaks["bfloat16" if "bfloat16" in precision else "float32"]
        fraction = rate * flop / peak
        results["rows"].append([kind, backbone, size, precision, batch, rate, fraction, compile_s])
        row(
            f"{kind:8} {backbone:17} {size:>4} {precision:15} {batch:>5} "
            f"{rate:9.1f} {100 * fraction:6.1f}% {compile_s:9.1f}"
        )

    if ARGS.precision:  # a partial run: no projection
        print("\nsummary (progress lines above omitted):\n" + "\n".join(table))
        return
    head_s = measure_head_epoch(2048, 35000 if not ARGS.smoke else 640, 32, "mixed_bfloat16")
    print("\nsummary (progress lines above omitted):\n" + "\n".join(table))
    print(f"\nhead epoch on 35,000 cached features, batch 32: {head_s:.1f} s")
    results["head_epoch_s"] = head_s
    project(results, head_s)
    if ARGS.out:
        ARGS.out.write_text(json.dumps(results, indent=1))
    print(f"total {elapsed():.0f} s")


def rate_of(results, kind, backbone, precision, batch):
    for row in results["rows"]:
        if row[:2] == [kind, backbone] and row[3] == precision and row[4] == batch and row[5]:
            return row[5]
    return None


def project(results, head_s: float) -> None:
    """Wall time of whole pipelines from the measured rates (CIFAR-10: 35k/15k/10k): arithmetic
    over loops the stages do not run as such; gpu_pipeline.py times the real pipeline."""
    precision = "mixed_bfloat16"
    recipes = {
        # name: backbone, head epochs, fine-tune epochs, fine-tune batch
        f"default (seed recipe: {SEED} {SIZES[SEED]}, 15 + 15 epochs)": (
            SEED,
            15,
            15,
            RECIPE_BATCH,
        ),
        f"strong ({STRONG} {SIZES[STRONG]}, 3 + 10 epochs)": (STRONG, 3, 10, STRONG_BATCH),
    }
    print(
        f"\nprojection from these rates (arithmetic, not a run: gpu_pipeline.py times the "
        f"pipeline), {precision}, start-up and compilation not counted:"
    )
    for name, (backbone, head_epochs, ft_epochs, ft_batch) in recipes.items():
        extract = rate_of(results, "extract", backbone, precision, FEATURE_BATCH)
        extract_ft = rate_of(results, "extract", backbone, precision, RECIPE_BATCH)
        train = rate_of(results, "train", backbone, precision, ft_batch)
        if not (extract and extract_ft and train):
            print(f"  {name}: not projected (a rate is missing)")
            continue
        features = 60000 / extract
        head = head_epochs * head_s
        # Each fine-tune epoch: 35k training images + 15k validation images (inference).
        fine_tune = ft_epochs * (35000 / train + 15000 / extract_ft)
        evaluate = 10000 / extract
        total = features + head + fine_tune + evaluate
        results.setdefault("projections", {})[name] = total
        print(
            f"  {name}: {total / 60:.1f} min (features {features:.0f} s, head {head:.0f} s, "
            f"fine-tune {fine_tune / 60:.1f} min, evaluate {evaluate:.0f} s; compile not counted)"
        )


if __name__ == "__main__":
    main()
