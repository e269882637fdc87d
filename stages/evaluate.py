"""Stage evaluate: test-set metrics of the fine-tuned model and of the head alone.

    python -m stages.evaluate data/prepared data/features models/head.keras \
        models/fine_tuned.keras metrics/evaluate.json plots/confusion.csv eval/predictions.npz
"""

import argparse
from pathlib import Path

from transfer_pipeline.errors import exit_on_pipeline_error
from transfer_pipeline.params import load_params


@exit_on_pipeline_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("prepared", "features", "head", "model", "metrics", "confusion", "predictions"):
        parser.add_argument(name, type=Path)
    args = parser.parse_args()
    params = load_params()

    import numpy as np

    from transfer_pipeline import compute
    from transfer_pipeline.atomic import atomic_target, write_json
    from transfer_pipeline.data import load_class_names, load_split
    from transfer_pipeline.evaluation import confusion_rows, summarize
    from transfer_pipeline.model import load_model
    from transfer_pipeline.training import dataset

    compute.configure(params)
    class_names = load_class_names(args.prepared)
    test_x, test_y = load_split(args.prepared, "test")
    batch = params["features"]["batch_size"]
    fine_tuned = load_model(args.model).predict(dataset(test_x, None, batch), verbose=0)
    head_only = load_model(args.head).predict(
        np.load(args.features / "test.npy"), batch_size=batch, verbose=0
    )

    write_json(args.metrics, summarize(test_y, fine_tuned, head_only, class_names))
    with atomic_target(args.confusion) as tmp:
        confusion_rows(test_y, fine_tuned.argmax(1), class_names).to_csv(tmp, index=False)
    with atomic_target(args.predictions) as tmp:
        with open(tmp, "wb") as handle:  # np.savez would append .npz to the temporary name
            np.savez(handle, labels=test_y, fine_tuned=fine_tuned, head_only=head_only)


if __name__ == "__main__":
    main()
