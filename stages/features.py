"""Stage features: run the frozen backbone once over every split and cache pooled features.

With the base frozen, in inference mode and without augmentation, its output is a fixed
function of the image: computing it once replaces recomputing it in every head epoch.

    python -m stages.features data/prepared data/features models/feature_extractor.keras \
        metrics/features.json
"""

import argparse
import json
import sys
import time
from pathlib import Path

from transfer_pipeline.plumbing.errors import exit_on_pipeline_error
from transfer_pipeline.plumbing.param_checks import warnings_about
from transfer_pipeline.plumbing.params import load_params
from transfer_pipeline.plumbing.stage_outputs import StageOutputs
from transfer_pipeline.running import cluster
from transfer_pipeline.running.backend import select as select_backend


@exit_on_pipeline_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path)
    parser.add_argument("features", type=Path, help="output folder: <split>.npy per split")
    parser.add_argument("extractor", type=Path, help="output: the frozen extractor (.keras)")
    parser.add_argument("metrics", type=Path, help="output JSON: feature width, images/s")
    parser.add_argument("compute", type=Path, help="output JSON: what the stage ran on")
    args = parser.parse_args()
    params = load_params("features")  # validate before paying for Keras and its backend
    outputs = StageOutputs.of_stage(
        "features",
        files=[args.extractor, args.metrics, args.compute],
        folders=[args.features],
        inputs=[args.prepared],
        writer=cluster.writes(params),
    )
    select_backend(params["compute"]["backend"])

    import keras
    import numpy as np
    from numpy.lib.format import open_memmap

    from transfer_pipeline.data.feeding import predict_in_batches
    from transfer_pipeline.data.store import FEATURES_PRECISION, SPLITS, load_split
    from transfer_pipeline.models.features import NOT_KEPT, extract_features
    from transfer_pipeline.models.model import build_feature_extractor, twin_extractor
    from transfer_pipeline.models.saving import save_model
    from transfer_pipeline.running import compute
    from transfer_pipeline.running.expected_time import measure_and_expect
    from transfer_pipeline.running.precision import TIMING_BATCH, images_per_s, under_policy

    # Precision and seed; inference runs on one device (see below).
    setup = compute.configure(params, distributed=False, announce=False)
    backbone = params["model"]
    for warning in warnings_about(params) if outputs.writer else []:  # one process says it
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    train_x, _ = load_split(args.prepared, "train")
    timed_images = train_x[:TIMING_BATCH]

    def architecture(policy: str):
        """The extractor's architecture in ``policy``: timing needs no trained weights."""
        return under_policy(
            policy,
            lambda: build_feature_extractor(
                backbone["backbone"],
                train_x.shape[1],
                backbone["image_size"],
                backbone["weights"],
                load_weights=False,
            ),
        )

    def extraction_rate(policy: str) -> float:
        """The stage's own extraction (predict_in_batches) of a few images in ``policy``."""
        model = architecture(policy)
        return images_per_s(
            lambda: predict_in_batches(model, timed_images, len(timed_images)), len(timed_images)
        )

    setting = {key: backbone[key] for key in ("backbone", "image_size")}
    timing = None
    if not cluster.multi_host(params):  # every process must choose alike: no timing there
        timing = compute.Timing(
            "extraction",
            setting
            | {
                "weights": backbone["weights"],
                "stored_size": train_x.shape[1],
                "batch": len(timed_images),
            },
            extraction_rate,
        )
    precision, reason = compute.resolve_precision(params["compute"]["precision"], timing)
    # As if no model had been built for timing. The split seed, not the training seed: a random
    # (weights: null) backbone stays the same across a sweep of training seeds, and with it
    # the cached features, as the split does.
    keras.utils.set_random_seed(params["data"]["split_seed"])
    # The saved extractor is float32, as every saved model (saving.py). Train and validation
    # features may be extracted in the faster precision, on a twin with the same weights; the
    # test features in float32, the precision the shipped model runs in, so that evaluate can
    # score the head-only model from them exactly (stages/evaluate.py).
    setup.precision, setup.precision_reason = precision, reason
    if precision != "float32":
        setup.precision_reason = f"{reason}; test split and saved model in float32"
    setup.announce()
    sizes = {split: len(load_split(args.prepared, split)[1]) for split in SPLITS}
    # Not under the distribution strategy: extracting under MirroredStrategy gave features
    # that no longer matched their labels (head accuracy 0.63 instead of 0.95 on the tiny
    # pipeline). Extraction runs once; distribution is for the training stages.
    extractor = under_policy(
        "float32",
        lambda: build_feature_extractor(
            backbone["backbone"], train_x.shape[1], backbone["image_size"], backbone["weights"]
        ),
    )
    running = {split: extractor for split in SPLITS}
    if precision != "float32":
        faster = twin_extractor(
            extractor, backbone["backbone"], backbone["image_size"], precision, backbone["weights"]
        )
        running.update(train=faster, val=faster)
    # On a CPU (where a run takes long enough to plan; one process: several would have to
    # time it together): the run's slow parts, from rates measured here now, before the long
    # work: a few batches of the extraction itself and a few training steps of a throwaway
    # copy (expected_time.py). It costs one more compilation of the predict step (at the
    # timing batch) and the throwaway's training steps.
    if set(setup.devices) == {"cpu"} and not cluster.multi_host(params):
        throwaway = architecture(precision)
        expected = measure_and_expect(
            running["train"], throwaway, backbone["backbone"], timed_images, sizes
        )
        print(f"features: {expected}", flush=True)
        del throwaway
    rates = {}
    with outputs:
        for split in SPLITS:
            images, _ = load_split(args.prepared, split)
            features = NOT_KEPT  # a multi-host run's other processes: process 0 writes
            if outputs.writer:
                features = open_memmap(
                    outputs.path(args.features) / f"{split}.npy",
                    mode="w+",
                    dtype=np.float32,
                    shape=(len(images), extractor.output.shape[-1]),
                )
            started = time.monotonic()
            extract_features(
                running[split], images, params["features"]["batch_size"], split, features
            )
            rates[split] = round(len(images) / (time.monotonic() - started), 1)
            if outputs.writer:
                features.flush()
            del features  # closes the memory map
        if outputs.writer:  # boundary runs its trunk in the train and val features' precision
            written = {
                split: "float32" if running[split] is extractor else precision for split in SPLITS
            }
            (outputs.path(args.features) / FEATURES_PRECISION).write_text(
                json.dumps(written, indent=2) + "\n"
            )
        save_model(extractor, outputs.path(args.extractor))
        outputs.write_json(
            args.metrics,
            {
                "feature_width": int(extractor.output.shape[-1]),
                "images_per_s": rates["train"],  # the largest split: the steadiest
            },
        )
        outputs.write_json(args.compute, setup.record())
    print(f"features: {extractor.output.shape[-1]} per image; images/s {rates}", flush=True)


if __name__ == "__main__":
    main()
