"""Stage report: a Markdown and a self-contained HTML report with tables and figures.

    python -m stages.report data/prepared dvclive/train_head dvclive/fine_tune dvclive/evaluate \
        eval/per_class.csv eval/predictions.npz metrics/export report
"""

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from transfer_pipeline.data.store import load_class_names, load_split
from transfer_pipeline.judging import report
from transfer_pipeline.plumbing.errors import PipelineError, exit_on_pipeline_error
from transfer_pipeline.plumbing.param_checks import warnings_about
from transfer_pipeline.plumbing.params import load_params
from transfer_pipeline.plumbing.stage_outputs import StageOutputs
from transfer_pipeline.running.live import read_history

SEED_LABEL = "seed report"
INPUTS = (
    "prepared",
    "train_head",
    "fine_tune",
    "evaluate",
    "per_class",
    "predictions",
    "exports",
)


@exit_on_pipeline_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in INPUTS:
        parser.add_argument(name, type=Path)
    parser.add_argument("out", type=Path, help="output folder: report.md, report.html, *.png")
    args = parser.parse_args()
    params = load_params("report")
    inputs = [getattr(args, name) for name in INPUTS]
    outputs = StageOutputs.of_stage("report", folders=[args.out], inputs=inputs)
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        raise PipelineError(f"report needs {', '.join(missing)}; run `dvc repro` first")

    evaluation = json.loads((args.evaluate / "metrics.json").read_text())
    if "images" not in evaluation:  # written before evaluate counted its images
        raise PipelineError(
            f"{args.evaluate / 'metrics.json'} is from an older evaluate stage; run `dvc repro`"
        )
    class_names = load_class_names(args.prepared)
    test_x, _ = load_split(args.prepared, "test")
    predictions = np.load(args.predictions)
    matrix = pd.crosstab(
        pd.Categorical(predictions["labels"], categories=range(len(class_names))),
        pd.Categorical(predictions["fine_tuned"].argmax(1), categories=range(len(class_names))),
        dropna=False,
    ).to_numpy()

    backbone, tune = params["model"], params["fine_tune"]
    fine_tuned = tune["epochs"] > 0  # 0: head only, the backbone was never trained
    params_rows = [
        ("model.backbone", backbone["backbone"]),
        ("model.weights", backbone["weights"] or "null (random initialisation)"),
        ("model.image_size", backbone["image_size"]),
        ("train_head.optimizer", params["train_head"]["optimizer"]),
        ("lr (head)", params["lr"]),
        ("train_head.epochs", params["train_head"]["epochs"]),
        ("fine_tune.optimizer", tune["optimizer"]),
        ("fine_tune.lr", tune["lr"]),
        ("fine_tune.epochs", tune["epochs"] or "0 (head only: the backbone stayed frozen)"),
        ("fine_tune.unfreeze", tune["unfreeze"]),
        (
            "data sizes (train/val/test)",
            "/".join(str(params["data"][f"{s}_size"]) for s in ("train", "val", "test")),
        ),
    ]
    figures = {
        "Test accuracy with its uncertainty": ("accuracy.png", None),  # drawn below
        "Training curves (head, then fine-tuning)": (
            "curves.png",
            report.training_curves(
                read_history(args.train_head), read_history(args.fine_tune) if fine_tuned else None
            ),
        ),
        f"Confusion matrix ({'fine-tuned' if fine_tuned else 'frozen backbone'}, test set)": (
            "confusion.png",
            report.confusion_heatmap(matrix, class_names),
        ),
    }
    wrong = report.confidently_wrong(
        test_x,
        predictions["labels"],
        predictions["fine_tuned"],
        class_names,
        params["report"]["wrong_examples"],
    )
    if wrong is not None:
        figures["Most confidently wrong test images"] = ("wrong.png", wrong)

    title = f"Transfer learning: {backbone['backbone']} on {params['data']['dataset']}"
    headline = report.headline_rows(evaluation, params["report"]["reference_accuracy"], fine_tuned)

    # Only the formats in params: files of formats removed since are stale.
    exports = {}
    for fmt in params["export"]["formats"]:
        path = args.exports / f"{fmt}.json"
        if not path.is_file():
            raise PipelineError(f"report needs {path}; run `dvc repro` first")
        exports[fmt] = json.loads(path.read_text())
        if "keras_test_accuracy" not in exports[fmt]:  # written before it held Keras' side
            raise PipelineError(f"{path} is from an older export stage; run `dvc repro`")
    export_rows = report.export_rows(exports)
    reference = params["report"]["reference_accuracy"]
    comparisons = report.comparison_lines(predictions, evaluation, reference, fine_tuned)
    test_images = evaluation["images"]["test"]
    bars = [("head only", evaluation["head_only"]["test_accuracy"], test_images)] * fine_tuned
    bars.append(
        (
            "fine-tuned" if fine_tuned else "backbone + head",
            evaluation["test_accuracy"],
            test_images,
        )
    )
    bars += [
        (f"{fmt} (parity sample)", m["runtime_test_accuracy"], m["parity_images"])
        for fmt, m in exports.items()
    ]
    bars.append((SEED_LABEL, reference, report.SEED_TEST_IMAGES))
    figures["Test accuracy with its uncertainty"] = ("accuracy.png", report.accuracy_bars(bars))
    per_class = report.per_class_rows(pd.read_csv(args.per_class))
    warnings = warnings_about(params)
    with outputs:
        tmp = outputs.path(args.out)
        for file, fig in figures.values():
            report.save_figure(fig, tmp / file)
        captions = {caption: file for caption, (file, _) in figures.items()}
        (tmp / "report.md").write_text(
            report.markdown(
                title,
                warnings,
                params_rows,
                headline,
                per_class,
                captions,
                export_rows,
                comparisons,
            )
        )
        (tmp / "report.html").write_text(
            report.html_page(
                title,
                warnings,
                params_rows,
                headline,
                per_class,
                {c: tmp / f for c, f in captions.items()},
                export_rows,
                comparisons,
            )
        )
    print(f"report: {args.out / 'report.html'}", flush=True)


if __name__ == "__main__":
    main()
