"""Stage prepare: obtain the data set, make the stratified train/val/test split, store it.

python -m stages.prepare data/prepared metrics/prepare.json
"""

import argparse
from pathlib import Path

from transfer_pipeline.data.prepare import save_prepared
from transfer_pipeline.data.sources import load_dataset
from transfer_pipeline.data.split import split_summary
from transfer_pipeline.plumbing.errors import exit_on_pipeline_error
from transfer_pipeline.plumbing.param_schema import worker_count
from transfer_pipeline.plumbing.params import load_params
from transfer_pipeline.plumbing.stage_outputs import StageOutputs


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
        dataset, split = save_prepared(
            outputs.path(args.prepared),
            dataset,
            sizes,
            data["split_seed"],
            workers,
            data["bad_images"],
        )
        summary = split_summary(dataset, split)
        outputs.write_json(args.metrics, summary)
    skipped = f"; skipped {dataset.skipped} file(s) (see the warnings above)"
    print(f"prepare: {summary}{skipped if dataset.skipped else ''}", flush=True)


if __name__ == "__main__":
    main()
