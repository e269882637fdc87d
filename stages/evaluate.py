"""Stage evaluate: test-set metrics of the fine-tuned model and of the head alone.

Each accuracy comes with its 95 % Wilson interval and image count, and beside them the
validation accuracy of exactly the weights each model ships, as its training stage measured it
(the curves in dvclive/<stage>/plots): runs are chosen on it, never on the test split. The
predictions file also holds a fingerprint of the test split (its images and labels in order)
and the data params, so that tl-compare can check that two runs saw the same test images.

Both are the float32 computation that export and tl-predict ship (every saved model is float32,
saving.py). With fine_tune.epochs 0 the backbone did not change: the shipped model's test
predictions are the head applied to the cached test features, which the features stage
extracts in float32 for this, so the backbone is not run over the test split again.

    python -m stages.evaluate data/prepared data/features models/head.keras \
        models/fine_tuned.keras dvclive/train_head/plots dvclive/fine_tune/plots \
        dvclive/evaluate eval/per_class.csv eval/predictions.npz compute/evaluate.json
"""

import argparse
from pathlib import Path

from transfer_pipeline.plumbing.errors import exit_on_pipeline_error
from transfer_pipeline.plumbing.params import load_params
from transfer_pipeline.plumbing.stage_outputs import StageOutputs
from transfer_pipeline.running import cluster
from transfer_pipeline.running.backend import select as select_backend


@exit_on_pipeline_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("prepared", "features", "head", "model"):
        parser.add_argument(name, type=Path)
    for name in ("head_curves", "fine_tune_curves"):
        parser.add_argument(name, type=Path, help="a training stage's DVCLive plots folder")
    parser.add_argument("live", type=Path, help="DVCLive folder: metrics.json, confusion plot")
    parser.add_argument("per_class", type=Path, help="output CSV: precision/recall/F1 per class")
    parser.add_argument("predictions", type=Path, help="output: labels and probabilities (.npz)")
    parser.add_argument("compute", type=Path, help="output JSON: what the stage ran on")
    args = parser.parse_args()
    params = load_params("evaluate")
    outputs = StageOutputs.of_stage(
        "evaluate",
        files=[args.per_class, args.predictions, args.compute],
        live=args.live,
        inputs=[
            args.prepared,
            args.features,
            args.head,
            args.model,
            args.head_curves,
            args.fine_tune_curves,
        ],
        writer=cluster.writes(params),
    )
    select_backend(params["compute"]["backend"], needs=("sklearn",))  # its metrics and plots

    import json

    import numpy as np

    from transfer_pipeline.data.feeding import predict_in_batches
    from transfer_pipeline.data.store import SPLITS, load_class_names, load_features, load_split
    from transfer_pipeline.judging.evaluation import (
        fingerprint_of_test_split,
        per_class_table,
        shipped_validation_accuracy,
        summarize,
    )
    from transfer_pipeline.models.model import load_model
    from transfer_pipeline.running import compute
    from transfer_pipeline.running.live import log_summary, open_live

    setup = compute.configure(params, distributed=False)
    class_names = load_class_names(args.prepared)
    test_x, test_y = load_split(args.prepared, "test")
    validation = shipped_validation_accuracy(
        validation_curve(args.head_curves),
        validation_curve(args.fine_tune_curves) if params["fine_tune"]["epochs"] else [],
    )
    head = load_model(args.head)
    width = head.input_shape[-1]
    features = {}
    for split in SPLITS:  # all of data/features is a dependency: check every split's shape
        _, labels = load_split(args.prepared, split)
        features[split] = load_features(args.features, split, len(labels), width)
    batch = params["features"]["batch_size"]
    # Arrays go through ArrayBatches too: Keras' own array feeding on TensorFlow logs an op
    # definition error (MapDataset use_unbounded_threadpool) under op determinism.
    head_only = predict_in_batches(head, np.asarray(features["test"]), batch)
    if params["fine_tune"]["epochs"] == 0:  # the saved model is the extractor + this head
        fine_tuned = head_only
    else:
        fine_tuned = predict_in_batches(load_model(args.model), test_x, batch)

    names = np.asarray(class_names)
    with outputs:
        per_class_table(test_y, fine_tuned, class_names).to_csv(
            outputs.path(args.per_class), index=False
        )
        with open(outputs.path(args.predictions), "wb") as handle:  # savez would add .npz
            np.savez(
                handle,
                labels=test_y,
                fine_tuned=fine_tuned,
                head_only=head_only,
                test_split_sha256=np.asarray(fingerprint_of_test_split(test_x, test_y)),
                data_params=np.asarray(json.dumps(params["data"], sort_keys=True)),
            )
        live = open_live(outputs.path(args.live), outputs.writer)
        val_images = len(load_split(args.prepared, "val")[1])
        log_summary(live, summarize(test_y, fine_tuned, head_only, validation, val_images))
        live.log_sklearn_plot(
            "confusion_matrix", names[test_y].tolist(), names[fine_tuned.argmax(1)].tolist()
        )
        live.end()
        outputs.write_json(args.compute, setup.record())


def validation_curve(plots: Path) -> list[float]:
    """A training stage's validation accuracy per epoch, from its DVCLive curve (the curves hold
    no timings: a forced rerun that trains the same weights changes no byte of them)."""
    import csv

    from transfer_pipeline.plumbing.dvcfile import rebuild_hint
    from transfer_pipeline.plumbing.errors import PipelineError

    path = Path(plots) / "metrics" / "val_accuracy.tsv"
    try:
        with open(path, newline="") as handle:
            curve = [float(row["val_accuracy"]) for row in csv.DictReader(handle, delimiter="\t")]
    except (OSError, ValueError, KeyError, TypeError):
        curve = []
    if not curve:
        raise PipelineError(f"{path} holds no validation accuracy; {rebuild_hint(plots)}")
    return curve


if __name__ == "__main__":
    main()
