"""Stage export@<format>: the fine-tuned model in one deployable format, checked in its runtime.

    python -m stages.export onnx data/prepared models/fine_tuned.keras eval/predictions.npz \
        models/export/onnx metrics/export/onnx.json

On a fixed stratified sample of the test split (export.parity_images, `all` for every image),
the format's own runtime is compared with the Keras model's stored float32 predictions
(evaluate's, the same computation). Two gates, near ties left out (export.py): what the model
answers (at most export.parity_pp percent of the images change class, and no probability
moves by more than the format's arithmetic allows) and how often it is right (test accuracy
within export.parity_pp points); litert_int8 has keys of its own (parity_int8_*). The metrics
give both accuracies on the sample (the report's "vs Keras"), how many images were compared,
how many changed class and how many were near ties, the file size and the CPU latency (batch-1
median in ms, images/s at batch 64); the printed line also gives the largest probability
difference.
"""

import argparse
from pathlib import Path

from transfer_pipeline.plumbing.errors import PipelineError, exit_on_pipeline_error
from transfer_pipeline.plumbing.params import load_params
from transfer_pipeline.plumbing.stage_outputs import StageOutputs
from transfer_pipeline.running.backend import select as select_backend
from transfer_pipeline.shipping.export import check_format, require_converter


@exit_on_pipeline_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("format", help="saved_model | onnx | litert | litert_int8")
    for name in ("prepared", "model", "predictions"):
        parser.add_argument(name, type=Path)
    parser.add_argument("out", type=Path, help="output folder: the exported model")
    parser.add_argument("metrics", type=Path, help="output: test accuracy and CPU latency (.json)")
    args = parser.parse_args()
    params = load_params("export")["export"]
    check_format(args.format)
    require_converter(args.format)
    outputs = StageOutputs.of_stage(
        f"export@{args.format}",
        files=[args.metrics],
        folders=[args.out],
        inputs=[args.prepared, args.model, args.predictions],
    )
    select_backend("tensorflow")  # every format converts from TensorFlow (docs/export.md)

    import numpy as np

    from transfer_pipeline.data.store import load_split
    from transfer_pipeline.judging.statistics import accuracy_figures
    from transfer_pipeline.models.model import load_model
    from transfer_pipeline.shipping import runtimes
    from transfer_pipeline.shipping.export import (
        bounds,
        check_parity,
        compare,
        convert,
        parity_sample,
        size_bytes,
    )

    test_x, test_y = load_split(args.prepared, "test")
    keras_side = np.load(args.predictions)
    if not np.array_equal(keras_side["labels"], test_y):
        raise PipelineError(f"{args.predictions} is not of this test split; run `dvc repro`")
    sample = parity_sample(test_y, params["parity_images"])  # None: all
    keras_probabilities = keras_side["fine_tuned"][sample]
    images, labels = np.asarray(test_x[sample]), test_y[sample]
    calibration = None
    if args.format == "litert_int8":
        train_x, _ = load_split(args.prepared, "train")
        count = min(params["calibration_images"], len(train_x))
        calibration = np.asarray(train_x[np.linspace(0, len(train_x) - 1, count).astype(int)])
    model = load_model(args.model)

    with outputs:
        exported = convert(model, args.format, outputs.path(args.out), calibration)
        runtime = runtimes.load(exported)
        parity = compare(args.format, keras_probabilities, runtime.predict_batches(images), labels)
        check_parity(args.format, parity, *bounds(args.format, params))
        runs = params["latency_runs"]
        runtime_right = round(parity.runtime_accuracy * parity.images)
        sample_interval = {
            key: value
            for key, value in accuracy_figures(runtime_right, parity.images).items()
            if key in ("low", "high")
        }
        metrics = {
            # The parity figures that fit `dvc metrics show`; the largest probability
            # difference is in the line printed below. Both accuracies are on the sample.
            "runtime_test_accuracy": round(parity.runtime_accuracy, 6),
            "keras_test_accuracy": round(parity.keras_accuracy, 6),
            "parity_images": parity.images,
            "interval95": {"runtime_test_accuracy": sample_interval},  # the report's bars
            "changed_class": parity.changed,
            "near_ties": parity.near_ties,
            "latency_ms": round(runtimes.median_latency_ms(runtime, images, runs), 3),
            "images_per_s": round(runtimes.images_per_s(runtime, images), 1),
            "size_mb": round(size_bytes(exported) / 2**20, 2),
        }
        outputs.write_json(args.metrics, metrics)
    ties = f", {parity.near_ties} near ties" if parity.near_ties else ""
    print(
        f"export@{args.format}: test accuracy {100 * parity.runtime_accuracy:.2f} % (Keras "
        f"{100 * parity.keras_accuracy:.2f} %) on {parity.images} test images, "
        f"{parity.changed} changed class{ties}, largest probability difference "
        f"{parity.max_probability_difference:.2g}; {metrics['size_mb']} MB, batch 1 "
        f"{metrics['latency_ms']} ms, {metrics['images_per_s']} images/s at 64",
        flush=True,
    )


if __name__ == "__main__":
    main()
