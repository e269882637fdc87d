"""Stage fine_tune: unfreeze the backbone or its top blocks (kept in inference mode) and train.

With fine_tune.unfreeze N and no augmentation it trains the top N blocks and the head from the
boundary stage's cache of the output below them (the frozen blocks do not run); otherwise it
trains the whole model as before. It saves the whole model either way.

With fine_tune.epochs 0 (head only) it saves the frozen extractor and the head as one model,
which evaluate, export, report and tl-predict use as they use a fine-tuned one.

Resumable: after each epoch a checkpoint goes to .resume/fine_tune/ (not a DVC output, so
`dvc repro` after a crash or kill continues from the last completed epoch).

    python -m stages.fine_tune data/prepared models/feature_extractor.keras models/head.keras \
        data/boundary models/fine_tuned.keras dvclive/fine_tune compute/fine_tune.json
"""

import argparse
import json
import time
from pathlib import Path

from transfer_pipeline.plumbing.errors import PipelineError, exit_on_pipeline_error
from transfer_pipeline.plumbing.params import load_params
from transfer_pipeline.plumbing.stage_outputs import StageOutputs
from transfer_pipeline.running import cluster
from transfer_pipeline.running.backend import select as select_backend

RESUME_DIR = Path(".resume/fine_tune")


@exit_on_pipeline_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("prepared", "extractor", "head", "boundary", "model"):
        parser.add_argument(name, type=Path)
    parser.add_argument("live", type=Path, help="DVCLive folder: per-epoch curves, metrics.json")
    parser.add_argument("compute", type=Path, help="output JSON: what the stage ran on")
    args = parser.parse_args()
    params = load_params("fine_tune")
    outputs = StageOutputs.of_stage(
        "fine_tune",
        files=[args.model, args.compute],
        live=args.live,
        inputs=[args.prepared, args.extractor, args.head, args.boundary],
        writer=cluster.writes(params),
    )
    select_backend(params["compute"]["backend"])

    import keras
    import numpy as np

    from transfer_pipeline.data.feeding import ArrayBatches, one_hot
    from transfer_pipeline.data.store import load_class_names, load_split
    from transfer_pipeline.models.blocks import (
        PLAN_FILE,
        AsFloat32,
        copy_trained,
        top_layers,
        trainable_top,
    )
    from transfer_pipeline.models.model import (
        backbone_of,
        build_classifier,
        load_model,
        synchronize_batchnorm,
        twin_extractor,
        unfreeze,
    )
    from transfer_pipeline.models.optimizers import (
        cosine_with_warmup,
        layer_decay_factors,
        optimizer,
    )
    from transfer_pipeline.models.saving import save_model
    from transfer_pipeline.running import compute
    from transfer_pipeline.running.callbacks import (
        AfterEpochHook,
        EpochLog,
        FailOnNonFiniteLoss,
        LiveEpochs,
        UnpaddedValLoss,
    )
    from transfer_pipeline.running.live import log_epoch, log_summary, open_live
    from transfer_pipeline.running.precision import TIMING_TRAIN_BATCH, images_per_s
    from transfer_pipeline.running.resume import Checkpoints, fingerprint

    setup = compute.configure(params, announce=False)
    settings, model = params["fine_tune"], params["model"]
    n_classes = len(load_class_names(args.prepared))
    (train_x, train_y), (val_x, val_y) = (load_split(args.prepared, s) for s in ("train", "val"))
    steps_per_epoch = -(-len(train_x) // settings["batch_size"])
    blocks = settings["unfreeze"]
    plan = _read_plan(args.boundary / PLAN_FILE)
    if plan["cached"]:
        if plan["blocks"] != blocks:
            raise PipelineError(
                f"{args.boundary} caches the output below {plan['blocks']} blocks, "
                f"fine_tune.unfreeze is {blocks}: run `dvc repro` (it reruns the boundary stage)"
            )
        # The blocks below the top ones never run here: the cache is their output (memory
        # mapped, read batch by batch).
        train_x, val_x = (
            AsFloat32(np.load(args.boundary / f"{split}.npy", mmap_mode="r"))
            for split in ("train", "val")
        )

    def compiled_classifier(policy: str, quiet: bool = False) -> tuple[keras.Model, keras.Model]:
        """Extractor + head with the base or its top blocks unfrozen, and the model that trains:
        the same classifier, or (from the cache) its top blocks and head, which share its
        layers; compiled. The extractor in ``policy`` (a twin with the same weights where the
        saved one has another)."""
        extractor, head = load_model(args.extractor), load_model(args.head)
        drop_path_rate = settings["drop_path_rate"]  # null: the preset's own, as saved
        if policy != "float32" or drop_path_rate is not None:  # saved in float32 (saving.py)
            extractor = twin_extractor(
                extractor,
                model["backbone"],
                model["image_size"],
                policy,
                model["weights"],
                drop_path_rate,
            )
        augment_seed = params["seed"] if settings["augment"] else None
        classifier = build_classifier(extractor, head, augment_seed)
        base = backbone_of(extractor)
        trained = "all" if blocks == "all" else top_layers(base, model["backbone"], blocks)
        trainable = unfreeze(base, trained)
        training = classifier
        if plan["cached"]:
            training = trainable_top(classifier, model["backbone"], blocks)
        lr_factors = None
        if settings["layer_decay"] < 1:  # transformer presets only (params.py checks)
            lr_factors = layer_decay_factors(
                classifier, backbone_of(extractor), settings["layer_decay"]
            )
        if not quiet:
            print(f"fine_tune: {trainable} backbone weight tensors trainable", flush=True)
        lr = settings["lr"]
        if settings["schedule"] == "cosine":
            lr = cosine_with_warmup(
                lr, settings["epochs"], settings["warmup_epochs"], steps_per_epoch
            )
        # Changing `trainable` only takes effect after compile(): compile after unfreezing.
        training.compile(
            optimizer=optimizer(
                settings["optimizer"],
                lr,
                settings["momentum"],
                settings["weight_decay"],
                lr_factors,
            ),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=settings["label_smoothing"]),
            weighted_metrics=["accuracy"],  # the validation padding weighs 0 (feeding.py)
            jit_compile=compute.jit_compile(params),
        )
        return classifier, training

    def training_rate(policy: str) -> float:
        """A few of the stage's training steps on a throwaway copy, in ``policy``."""
        with setup.scope():
            _, timed = compiled_classifier(policy, quiet=True)
        x = train_x[:TIMING_TRAIN_BATCH]
        y = one_hot(train_y[:TIMING_TRAIN_BATCH], n_classes)
        return images_per_s(lambda: timed.train_on_batch(x, y), len(x))

    if settings["epochs"] == 0:  # head only: the saved model is the frozen extractor + head
        setup.announce()
        with outputs:
            classifier = build_classifier(load_model(args.extractor), load_model(args.head))
            save_model(classifier, outputs.path(args.model))
            live = open_live(outputs.path(args.live), outputs.writer)
            log_summary(live, {"epochs": 0, "frozen_backbone": 1})
            outputs.path(args.live).joinpath("plots").mkdir(exist_ok=True)  # declared, no curve
            outputs.write_json(args.compute, setup.record())
            live.end()
        print("fine_tune: fine_tune.epochs 0: backbone + head saved, the backbone frozen")
        return
    checkpoints = Checkpoints(
        RESUME_DIR,
        fingerprint("fine_tune", params),
        patience=settings["early_stopping_patience"],
        writer=outputs.writer,
    )
    resume = checkpoints.resume_point()
    timing = None
    if not resume and not cluster.multi_host(params):  # all processes must choose alike
        timing = compute.Timing(
            "training",
            {
                "backbone": model["backbone"],
                "image_size": model["image_size"],
                "weights": model["weights"],
                "stored_size": train_x.shape[1],
                "unfreeze": settings["unfreeze"],
                "from_cache": plan["cached"],
                "optimizer": settings["optimizer"],
                "batch": min(TIMING_TRAIN_BATCH, len(train_x)),
            },
            training_rate,
        )
    setup.precision, setup.precision_reason = compute.resolve_precision(
        params["compute"]["precision"], timing
    )
    keras.utils.set_random_seed(params["seed"])  # as if no copy had been built for timing
    setup.announce()
    if plan["cached"]:
        print(
            f"fine_tune: the top {blocks} block(s) and the head train from {args.boundary} "
            f"({' x '.join(map(str, plan['shape']))} {plan['dtype']} per image); the blocks "
            "below do not run",
            flush=True,
        )
    else:
        print(f"fine_tune: through the whole model ({plan['reason']})", flush=True)
    with setup.scope():
        if resume:
            print(f"fine_tune: resuming after epoch {resume['epochs_done']} from {RESUME_DIR}")
            training = checkpoints.load_latest()  # the whole model, or the top part
            classifier = training
            if plan["cached"]:  # the model to save, which the trained top part goes into
                classifier, _ = compiled_classifier(setup.precision, quiet=True)
        else:
            classifier, training = compiled_classifier(setup.precision)
        synchronize_batchnorm(training, setup.synchronized_batchnorm)  # the head's
    first_epoch = resume["epochs_done"] if resume else 0
    train = ArrayBatches(
        train_x,
        one_hot(train_y, n_classes),
        settings["batch_size"],
        shuffle_seed=params["seed"],
        first_epoch=first_epoch,
    )
    val = ArrayBatches(val_x, one_hot(val_y, n_classes), settings["batch_size"])
    log = EpochLog("fine_tune", settings["epochs"], len(train_x), settings["batch_size"])
    with outputs:
        live = open_live(outputs.path(args.live), outputs.writer)
        for row in checkpoints.state["history"]:  # the epochs before a resume, logged again
            log_epoch(live, row)
        started = time.monotonic()
        training.fit(
            train,
            validation_data=val,
            epochs=settings["epochs"],
            initial_epoch=first_epoch,
            shuffle=False,  # ArrayBatches shuffles, seeded per epoch
            verbose=0,
            callbacks=[
                UnpaddedValLoss(val),
                log,
                FailOnNonFiniteLoss("fine_tune", "fine_tune.lr"),
                checkpoints,  # before LiveEpochs: an epoch is logged once its checkpoint exists
                LiveEpochs(live),
                AfterEpochHook("fine_tune"),
            ],
        )
        state = checkpoints.state
        best = state["best"]
        training.load_weights(checkpoints.best_weights_path())  # keep the best epoch
        if training is not classifier:  # the top part: its layers are (or become) the model's
            copy_trained(training, classifier)
        save_model(classifier, outputs.path(args.model))  # no optimizer state: see saving.py
        log_summary(
            live,
            {
                "best_epoch": best["epoch"],
                "best_val_accuracy": round(state["history"][best["epoch"] - 1]["val_accuracy"], 6),
                "resumed_after_epoch": first_epoch,
                "seconds": round(time.monotonic() - started, 2),
                "images_per_s": (
                    round(len(train_x) / min(log.durations), 1) if log.durations else 0
                ),
            },
        )
        outputs.write_json(args.compute, setup.record())
        live.end()
    checkpoints.clear()  # the run is complete: its outputs are saved, the checkpoint is stale


def _read_plan(path: Path) -> dict:
    """The boundary stage's cache.json: whether there is a cache (and its shape), or why not."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise PipelineError(f"{path} is missing or unreadable; run `dvc repro`") from None


if __name__ == "__main__":
    main()
