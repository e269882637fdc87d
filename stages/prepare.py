"""Stage prepare: obtain the data set, make the stratified train/val/test split, store it.

python -m stages.prepare data/prepared metrics/prepare.json
"""

import argparse
from pathlib import Path

from transfer_pipeline.atomic import StageOutputs
from transfer_pipeline.data import load_dataset, save_prepared, split_indices, split_summary
from transfer_pipeline.errors import exit_on_pipeline_error
from transfer_pipeline.params import load_params, worker_count


@exit_on_pipeline_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path, help="output folder for the split arrays")
    parser.add_argument("metrics", type=Path, help="output JSON with split sizes")
    args = parser.parse_args()

    params = load_params("prepare")
    data, workers = params["data"], worker_count(params["compute"]["workers"])
    outputs = StageOutputs.of_stage("prepare", files=[args.metrics], folders=[args.prepared])
    with outputs:
        dataset = load_dataset(params)
        sizes = {"train": data["train_size"], "val": data["val_size"], "test": data["test_size"]}
        while True:  # once, unless an image turns out unreadable only when decoded
            split = split_indices(dataset.labels, sizes, params["seed"], dataset.class_names)
            unreadable = save_prepared(outputs.path(args.prepared), dataset, split, workers)
            if not unreadable:
                break
            # The split is a function of the readable images: draw it again without them.
            dataset = dataset.without(unreadable, data["bad_images"])
        summary = split_summary(dataset, split)
        outputs.write_json(args.metrics, summary)
    print(f"prepare: {summary}", flush=True)


if __name__ == "__main__":
    main()
