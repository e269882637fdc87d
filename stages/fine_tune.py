"""Stage fine_tune: unfreeze the backbone (kept in inference mode) and train the whole model.

Resumable: after each epoch a checkpoint goes to .resume/fine_tune/ (not a DVC output, so
`dvc repro` after a crash or kill continues from the last completed epoch).

    python -m stages.fine_tune data/prepared models/feature_extractor.keras models/head.keras \
        models/fine_tuned.keras metrics/fine_tune.json plots/fine_tune.csv
"""

import argparse
import time
from pathlib import Path

from transfer_pipeline.atomic import StageOutputs
from transfer_pipeline.errors import exit_on_pipeline_error
from transfer_pipeline.params import load_params

RESUME_DIR = Path(".resume/fine_tune")


@exit_on_pipeline_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("prepared", "extractor", "head", "model", "metrics", "history"):
        parser.add_argument(name, type=Path)
    args = parser.parse_args()
    params = load_params()
    outputs = StageOutputs(
        "fine_tune",
        files=[args.model, args.metrics, args.history],
        inputs=[args.prepared, args.extractor, args.head],
    )

    import keras

    from transfer_pipeline import compute
    from transfer_pipeline.data import load_class_names, load_split
    from transfer_pipeline.model import backbone_of, build_classifier, load_model, unfreeze
    from transfer_pipeline.saving import save_model
    from transfer_pipeline.training import (
        AfterEpochHook,
        ArrayBatches,
        Checkpoints,
        EpochLog,
        FailOnNonFiniteLoss,
        cosine_with_warmup,
        fingerprint,
        one_hot,
        optimizer,
        write_history,
    )

    strategy = compute.configure(params)
    settings = params["fine_tune"]
    n_classes = len(load_class_names(args.prepared))
    (train_x, train_y), (val_x, val_y) = (load_split(args.prepared, s) for s in ("train", "val"))
    steps_per_epoch = -(-len(train_x) // settings["batch_size"])

    checkpoints = Checkpoints(
        RESUME_DIR,
        fingerprint(
            {k: params[k] for k in ("seed", "fine_tune", "compute")}, [args.extractor, args.head]
        ),
        patience=settings["early_stopping_patience"],
    )
    resume = checkpoints.resume_point()
    with strategy.scope():
        if resume:
            print(f"fine_tune: resuming after epoch {resume['epochs_done']} from {RESUME_DIR}")
            model = checkpoints.load_latest()
        else:
            extractor, head = load_model(args.extractor), load_model(args.head)
            augment_seed = params["seed"] if settings["augment"] else None
            model = build_classifier(extractor, head, augment_seed)
            trainable = unfreeze(backbone_of(extractor), settings["unfreeze"])
            print(f"fine_tune: {trainable} backbone weight tensors trainable", flush=True)
            lr = settings["lr"]
            if settings["schedule"] == "cosine":
                lr = cosine_with_warmup(
                    lr, settings["epochs"], settings["warmup_epochs"], steps_per_epoch
                )
            # Changing `trainable` only takes effect after compile(): compile after unfreezing.
            model.compile(
                optimizer=optimizer(lr, settings["weight_decay"]),
                loss=keras.losses.CategoricalCrossentropy(
                    label_smoothing=settings["label_smoothing"]
                ),
                metrics=["accuracy"],
                jit_compile=compute.jit_compile(params),
            )
    first_epoch = resume["epochs_done"] if resume else 0
    train = ArrayBatches(
        train_x,
        one_hot(train_y, n_classes),
        settings["batch_size"],
        shuffle_seed=params["seed"],
        first_epoch=first_epoch,
    )
    val = ArrayBatches(val_x, one_hot(val_y, n_classes), settings["batch_size"])
    log = EpochLog("fine_tune", settings["epochs"], len(train_x))
    started = time.monotonic()
    model.fit(
        train,
        validation_data=val,
        epochs=settings["epochs"],
        initial_epoch=first_epoch,
        shuffle=False,  # ArrayBatches shuffles, seeded per epoch
        verbose=0,
        callbacks=[
            log,
            FailOnNonFiniteLoss("fine_tune", "fine_tune.lr"),
            checkpoints,
            AfterEpochHook("fine_tune"),
        ],
    )
    seconds = time.monotonic() - started
    state = checkpoints.state
    best = state["best"]
    model.load_weights(checkpoints.best_weights_path())  # keep the best epoch by val accuracy
    at_best = state["history"][best["epoch"] - 1]
    with outputs:
        save_model(model, outputs.path(args.model))  # no optimizer state: see saving.py
        write_history(outputs.path(args.history), state["history"])
        outputs.write_json(
            args.metrics,
            {
                "epochs_run": state["epochs_done"],
                "best_epoch": best["epoch"],
                "val_accuracy": round(at_best["val_accuracy"], 6),
                "val_loss": round(at_best["val_loss"], 6),
                "train_accuracy": round(at_best["accuracy"], 6),
                "resumed_after_epoch": first_epoch,
                "seconds": round(seconds, 2),
                "train_images_per_s": round(len(train_x) / min(log.durations), 1)
                if log.durations
                else None,
            },
        )
    checkpoints.clear()  # the run is complete: its outputs are saved, the checkpoint is stale


if __name__ == "__main__":
    main()
