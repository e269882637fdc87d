"""Stage train_head: train the dense head on the cached backbone features (the frozen phase).

    python -m stages.train_head data/prepared data/features models/head.keras dvclive/train_head \
        compute/train_head.json
"""

import argparse
import time
from pathlib import Path

from transfer_pipeline.plumbing.errors import exit_on_pipeline_error
from transfer_pipeline.plumbing.params import load_params
from transfer_pipeline.plumbing.stage_outputs import StageOutputs
from transfer_pipeline.running import cluster
from transfer_pipeline.running.backend import select as select_backend


@exit_on_pipeline_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("prepared", "features", "head"):
        parser.add_argument(name, type=Path)
    parser.add_argument("live", type=Path, help="DVCLive folder: per-epoch curves, metrics.json")
    parser.add_argument("compute", type=Path, help="output JSON: what the stage ran on")
    args = parser.parse_args()
    params = load_params("train_head")
    outputs = StageOutputs.of_stage(
        "train_head",
        files=[args.head, args.compute],
        live=args.live,
        inputs=[args.prepared, args.features],
        writer=cluster.writes(params),
    )
    select_backend(params["compute"]["backend"])

    from transfer_pipeline.data.feeding import ArrayBatches, one_hot
    from transfer_pipeline.data.store import load_class_names, load_features, load_split
    from transfer_pipeline.models.model import build_head, synchronize_batchnorm
    from transfer_pipeline.models.optimizers import optimizer
    from transfer_pipeline.models.saving import save_model
    from transfer_pipeline.running import compute
    from transfer_pipeline.running.callbacks import (
        AfterEpochHook,
        EpochLog,
        FailOnNonFiniteLoss,
        LiveEpochs,
        UnpaddedValLoss,
    )
    from transfer_pipeline.running.live import log_summary, open_live

    setup = compute.configure(params)
    n_classes = len(load_class_names(args.prepared))
    inputs, width = {}, None
    for split in ("train", "val"):
        _, labels = load_split(args.prepared, split)
        features = load_features(args.features, split, len(labels), width)
        width = features.shape[1]
        inputs[split] = (features, one_hot(labels, n_classes))
    settings, head_params = params["train_head"], params["model"]
    with setup.scope():
        head = build_head(width, head_params["head_units"], head_params["dropout"], n_classes)
        synchronize_batchnorm(head, setup.synchronized_batchnorm)
        head.compile(
            optimizer=optimizer(settings["optimizer"], params["lr"], settings["momentum"]),
            loss="categorical_crossentropy",
            weighted_metrics=["accuracy"],  # the validation padding weighs 0 (feeding.py)
            jit_compile=compute.jit_compile(params),
            # Several steps per call: on cached features a step is small, and one Python
            # dispatch per batch is most of its cost (BENCHMARKS.md, bench/head_steps.py).
            steps_per_execution=settings["steps_per_execution"],
        )
    with outputs:
        live = open_live(outputs.path(args.live), outputs.writer)
        started = time.monotonic()
        val = ArrayBatches(*inputs["val"], settings["batch_size"])
        head.fit(
            ArrayBatches(*inputs["train"], settings["batch_size"], shuffle_seed=params["seed"]),
            validation_data=val,
            epochs=settings["epochs"],
            shuffle=False,  # ArrayBatches shuffles, seeded per epoch
            verbose=0,
            callbacks=[
                UnpaddedValLoss(val),
                EpochLog(
                    "train_head",
                    settings["epochs"],
                    len(inputs["train"][0]),
                    settings["batch_size"],
                ),
                FailOnNonFiniteLoss("train_head", "lr"),
                LiveEpochs(live),
                AfterEpochHook("train_head"),
            ],
        )
        save_model(head, outputs.path(args.head))
        log_summary(live, {"seconds": round(time.monotonic() - started, 2)})
        live.end()
        outputs.write_json(args.compute, setup.record())


if __name__ == "__main__":
    main()
