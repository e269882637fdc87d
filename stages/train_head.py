"""Stage train_head: train the dense head on the cached backbone features (the frozen phase).

    python -m stages.train_head data/prepared data/features models/head.keras \
        metrics/train_head.json plots/train_head.csv
"""

import argparse
import time
from pathlib import Path

from transfer_pipeline.errors import exit_on_pipeline_error
from transfer_pipeline.params import load_params


@exit_on_pipeline_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("prepared", "features", "head", "metrics", "history"):
        parser.add_argument(name, type=Path)
    args = parser.parse_args()
    params = load_params()

    import numpy as np

    from transfer_pipeline import compute
    from transfer_pipeline.atomic import write_json
    from transfer_pipeline.data import load_class_names, load_split
    from transfer_pipeline.model import build_head
    from transfer_pipeline.training import (
        EpochLog,
        FailOnNonFiniteLoss,
        dataset,
        history_rows,
        one_hot,
        optimizer,
        save_model,
        write_history,
    )

    strategy = compute.configure(params)
    n_classes = len(load_class_names(args.prepared))
    inputs = {}
    for split in ("train", "val"):
        _, labels = load_split(args.prepared, split)
        inputs[split] = (np.load(args.features / f"{split}.npy"), one_hot(labels, n_classes))
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
        dataset(*inputs["train"], settings["batch_size"], shuffle_seed=params["seed"]),
        validation_data=dataset(*inputs["val"], settings["batch_size"]),
        epochs=settings["epochs"],
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        verbose=0,
        callbacks=[
            EpochLog("train_head", settings["epochs"], len(inputs["train"][0])),
            FailOnNonFiniteLoss("train_head", "lr"),
        ],
    )
    seconds = time.monotonic() - started
    rows = history_rows(history)
    save_model(head, args.head)
    write_history(args.history, rows)
    last = rows[-1]
    write_json(
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
