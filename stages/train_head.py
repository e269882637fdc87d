"""Stage train_head: train the dense head on the cached backbone features (the frozen phase).

    python -m stages.train_head data/prepared data/features models/head.keras \
        metrics/train_head.json plots/train_head.csv
"""

import argparse
import time
from pathlib import Path

from transfer_pipeline.atomic import StageOutputs
from transfer_pipeline.errors import exit_on_pipeline_error
from transfer_pipeline.params import load_params


@exit_on_pipeline_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("prepared", "features", "head", "metrics", "history"):
        parser.add_argument(name, type=Path)
    args = parser.parse_args()
    params = load_params()
    outputs = StageOutputs(
        "train_head",
        files=[args.head, args.metrics, args.history],
        inputs=[args.prepared, args.features],
    )

    from transfer_pipeline import compute
    from transfer_pipeline.data import load_class_names, load_features, load_split
    from transfer_pipeline.model import build_head
    from transfer_pipeline.saving import save_model
    from transfer_pipeline.training import (
        AfterEpochHook,
        ArrayBatches,
        EpochLog,
        FailOnNonFiniteLoss,
        history_rows,
        one_hot,
        optimizer,
        write_history,
    )

    strategy = compute.configure(params)
    n_classes = len(load_class_names(args.prepared))
    inputs, width = {}, None
    for split in ("train", "val"):
        _, labels = load_split(args.prepared, split, mmap=True)
        features = load_features(args.features, split, len(labels), width)
        width = features.shape[1]
        inputs[split] = (features, one_hot(labels, n_classes))
    settings, model = params["train_head"], params["model"]
    with strategy.scope():
        head = build_head(
            inputs["train"][0].shape[1], model["head_units"], model["dropout"], n_classes
        )
        head.compile(
            optimizer=optimizer(params["lr"]),
            loss="categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=compute.jit_compile(params),
        )
    started = time.monotonic()
    history = head.fit(
        ArrayBatches(*inputs["train"], settings["batch_size"], shuffle_seed=params["seed"]),
        validation_data=ArrayBatches(*inputs["val"], settings["batch_size"]),
        epochs=settings["epochs"],
        shuffle=False,  # ArrayBatches shuffles, seeded per epoch
        verbose=0,
        callbacks=[
            EpochLog("train_head", settings["epochs"], len(inputs["train"][0])),
            FailOnNonFiniteLoss("train_head", "lr"),
            AfterEpochHook("train_head"),
        ],
    )
    seconds = time.monotonic() - started
    rows = history_rows(history)
    last = rows[-1]
    with outputs:
        save_model(head, outputs.path(args.head))
        write_history(outputs.path(args.history), rows)
        outputs.write_json(
            args.metrics,
            {
                "epochs": len(rows),
                "train_accuracy": round(last["accuracy"], 6),
                "train_loss": round(last["loss"], 6),
                "val_accuracy": round(last["val_accuracy"], 6),
                "val_loss": round(last["val_loss"], 6),
                "seconds": round(seconds, 2),
            },
        )


if __name__ == "__main__":
    main()
