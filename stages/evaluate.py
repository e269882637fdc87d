"""Stage evaluate: test-set metrics of the fine-tuned model and of the head alone.

    python -m stages.evaluate data/prepared data/features models/head.keras \
        models/fine_tuned.keras metrics/evaluate.json plots/confusion.csv eval/predictions.npz
"""

import argparse
from pathlib import Path

from transfer_pipeline.atomic import StageOutputs
from transfer_pipeline.errors import exit_on_pipeline_error
from transfer_pipeline.params import load_params


@exit_on_pipeline_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("prepared", "features", "head", "model", "metrics", "confusion", "predictions"):
        parser.add_argument(name, type=Path)
    args = parser.parse_args()
    params = load_params()
    outputs = StageOutputs(
        "evaluate",
        files=[args.metrics, args.confusion, args.predictions],
        inputs=[args.prepared, args.features, args.head, args.model],
    )

    import numpy as np

    from transfer_pipeline import compute
    from transfer_pipeline.data import SPLITS, load_class_names, load_features, load_split
    from transfer_pipeline.evaluation import confusion_rows, summarize
    from transfer_pipeline.model import load_model
    from transfer_pipeline.training import ArrayBatches

    compute.configure(params)
    class_names = load_class_names(args.prepared)
    test_x, test_y = load_split(args.prepared, "test")
    head, model = load_model(args.head), load_model(args.model)
    width = head.input_shape[-1]
    features = {}
    for split in SPLITS:  # all of data/features is a dependency: check every split's shape
        _, labels = load_split(args.prepared, split, mmap=True)
        features[split] = load_features(args.features, split, len(labels), width, mmap=True)
    batch = params["features"]["batch_size"]
    fine_tuned = model.predict(ArrayBatches(test_x, None, batch), verbose=0)
    head_only = head.predict(np.asarray(features["test"]), batch_size=batch, verbose=0)

    with outputs:
        outputs.write_json(args.metrics, summarize(test_y, fine_tuned, head_only, class_names))
        confusion_rows(test_y, fine_tuned.argmax(1), class_names).to_csv(
            outputs.path(args.confusion), index=False
        )
        with open(outputs.path(args.predictions), "wb") as handle:  # savez would add .npz
            np.savez(handle, labels=test_y, fine_tuned=fine_tuned, head_only=head_only)


if __name__ == "__main__":
    main()
