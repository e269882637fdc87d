"""The report: figures (matplotlib) and one Markdown plus one self-contained HTML page."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .statistics import (  # noqa: E402
    PairedComparison,
    describe_accuracy,
    unpaired_difference,
    wilson_interval,
)

SEED_REPORT = "seed report (Xception, 2021)"
SEED_TEST_IMAGES = 10_000  # the seed report's test split: its accuracy's own image count
EXPORT_TITLE = "Exported models (parity sample of the test set, this machine's CPU)"
EXPORT_NOTE = (
    "Accuracy measured in each format's own runtime (ONNX Runtime, the SavedModel signature, "
    "the LiteRT interpreter) on the parity sample (export.parity_images); vs Keras is that "
    "accuracy minus the fine-tuned Keras model's on the same images; latency is the median of "
    "batch-1 runs, throughput is at batch 64."
)
# How to read each figure, shown under it (keyed by file name).
FIGURE_NOTES = {
    "curves.png": "Head training, then fine-tuning, on one epoch axis; the dotted line marks "
    "where fine-tuning starts. Solid: training set, dashed: validation set.",
    "confusion.png": "Rows: true class, columns: predicted class; counts of test images.",
    "wrong.png": "Wrong test predictions of the fine-tuned model, most confident first: "
    "true label, predicted label and its probability.",
    "accuracy.png": "Each accuracy with its 95 % Wilson interval and its number of images. "
    "Intervals that overlap do not mean that two models on the same test images are alike: "
    "the paired comparison below the test table decides that.",
}


def training_curves(head: pd.DataFrame, fine: pd.DataFrame | None):
    """Both phases on one epoch axis; a dashed line marks where fine-tuning starts (``fine``
    None: a head-only run, fine_tune.epochs 0)."""
    offset = len(head)
    phases = [(head, 0, "head")] + ([(fine, offset, "fine-tune")] if fine is not None else [])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for frame, shift, phase in phases:
            ax.plot(frame["epoch"] + shift, frame[metric], "o-", label=f"{phase} train")
            ax.plot(frame["epoch"] + shift, frame[f"val_{metric}"], "s--", label=f"{phase} val")
        if fine is not None:
            ax.axvline(offset + 0.5, color="gray", linestyle=":", label="fine-tuning starts")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (both phases)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_heatmap(matrix: np.ndarray, class_names: list[str]):
    size = max(5, 0.45 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    if len(class_names) <= 20:
        for (row, col), count in np.ndenumerate(matrix):
            color = "white" if count > matrix.max() / 2 else "black"
            ax.text(col, row, str(count), ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def confidently_wrong(images, labels, probabilities, class_names, count: int):
    """The `count` wrong test predictions with the highest confidence, as an image grid."""
    predicted = probabilities.argmax(1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:count]
    if len(wrong) == 0:
        return None
    columns = min(8, len(wrong))
    rows = int(np.ceil(len(wrong) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong, strict=False):  # more axes than images
        ax.imshow(images[i], interpolation="nearest")
        ax.set_title(
            f"true {class_names[labels[i]]}\npred {class_names[predicted[i]]} "
            f"{probabilities[i, predicted[i]]:.0%}",
            fontsize=8,
        )
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)


def headline_rows(
    evaluation: dict, reference: float, fine_tuned: bool = True
) -> list[tuple[str, str, str, str]]:
    """The test table: model, test accuracy with its interval and images, the validation
    accuracy of the weights it ships, test loss. A head-only run (fine_tune.epochs 0) has one
    model, so one row (evaluate scores it once, from the cached float32 test features)."""
    images, val_images = evaluation["images"]["test"], evaluation["images"]["validation"]
    shipped = (
        _accuracy(evaluation["test_accuracy"], images),
        _accuracy(evaluation["validation_accuracy"], val_images),
        f"{evaluation['test_loss']:.4f}",
    )
    seed = (SEED_REPORT, _accuracy(reference, SEED_TEST_IMAGES), "n/a", "n/a")
    if not fine_tuned:
        return [("backbone + head, backbone frozen (fine_tune.epochs 0)", *shipped), seed]
    head = evaluation["head_only"]
    return [
        (
            "head only (frozen backbone)",
            _accuracy(head["test_accuracy"], images),
            _accuracy(head["validation_accuracy"], val_images),
            f"{head['test_loss']:.4f}",
        ),
        ("fine-tuned", *shipped),
        seed,
    ]


HEADLINE_HEADER = ["model", "test accuracy (95 %, images)", "validation accuracy", "test loss"]


def comparison_lines(
    predictions, evaluation: dict, reference: float, fine_tuned: bool = True
) -> list[str]:
    """Plain sentences under the test table: fine-tuned against head only on the same test
    images (paired: images fixed and broken, McNemar), and ours against the seed's accuracy
    (unpaired: its own 10,000 images)."""
    labels = predictions["labels"]
    lines = []
    if fine_tuned:
        compared = PairedComparison.of(
            labels, predictions["head_only"].argmax(1), predictions["fine_tuned"].argmax(1)
        )
        low, high = compared.difference_interval()
        lines.append(
            f"Fine-tuning against the head alone, on the same {compared.images:,} test images: "
            f"it fixed {compared.only_second} that the head got wrong and broke "
            f"{compared.only_first} that it got right, {100 * compared.difference:+.1f} points "
            f"(paired 95 %: {100 * low:+.1f} to {100 * high:+.1f}); "
            + compared.verdict("the head alone", "the fine-tuned model")
        )
    images = len(labels)
    ours = round(evaluation["test_accuracy"] * images)
    seed = round(reference * SEED_TEST_IMAGES)
    difference, low, high, p_value = unpaired_difference(seed, SEED_TEST_IMAGES, ours, images)
    lines.append(
        f"Against the seed report's {describe_accuracy(seed, SEED_TEST_IMAGES)}: this run's "
        f"{describe_accuracy(ours, images)}, {100 * difference:+.1f} points (95 %: "
        f"{100 * low:+.1f} to {100 * high:+.1f}; unpaired, other test images: Fisher's exact "
        f"p = {p_value:.2g})."
    )
    return lines


def accuracy_bars(entries: list[tuple[str, float, int]]):
    """Accuracies as points with their 95 % Wilson intervals as error bars: (label, accuracy,
    images) each, top to bottom."""
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(entries) + 1.2))
    for row, (_, accuracy, images) in enumerate(entries):
        low, high = wilson_interval(round(accuracy * images), images)
        ax.errorbar(
            100 * accuracy,
            row,
            xerr=[[100 * (accuracy - low)], [100 * (high - accuracy)]],
            fmt="o",
            capsize=4,
        )
    ax.set_yticks(range(len(entries)), [f"{label} ({images:,})" for label, _, images in entries])
    ax.invert_yaxis()
    ax.set_xlabel("accuracy, % (95 % interval; images in brackets)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


EXPORT_HEADER = [
    "format",
    "test accuracy",
    "vs Keras",
    "size (MB)",
    "batch-1 latency (ms)",
    "images/s at 64",
]


def export_rows(exports: dict[str, dict]) -> list[tuple]:
    """One row per exported format: accuracy in its own runtime beside Keras' on the same
    sample images (both from the export stage's metrics), the sample's size, size, speed."""
    return [
        (
            fmt,
            _accuracy(m["runtime_test_accuracy"], m["parity_images"]),
            f"{100 * (m['runtime_test_accuracy'] - m['keras_test_accuracy']):+.2f} pp "
            f"on {m['parity_images']} images",
            f"{m['size_mb']:.1f}",
            f"{m['latency_ms']:.1f}",
            f"{m['images_per_s']:.0f}",
        )
        for fmt, m in exports.items()
    ]


def per_class_rows(per_class: pd.DataFrame) -> list[tuple]:
    return [
        (row["class"], f"{row.precision:.3f}", f"{row.recall:.3f}", f"{row.f1:.3f}", row.support)
        for _, row in per_class.iterrows()
    ]


def _accuracy(value: float, images: int) -> str:
    """ "82.0 % (78.4-85.1 %, 500 images)" from a stored accuracy and its image count."""
    return describe_accuracy(round(value * images), images)


def markdown(
    title,
    warnings,
    params_rows,
    headline,
    per_class,
    figures: dict[str, str],
    exports=(),
    comparisons=(),
) -> str:
    lines = [f"# {title}", ""]
    lines += [f"> **Warning:** {warning}\n" for warning in warnings]
    lines += [
        "## Test results",
        "",
        "| " + " | ".join(HEADLINE_HEADER) + " |",
        "|" + "---|" * len(HEADLINE_HEADER),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in headline]
    lines += [""] + [f"- {line}" for line in comparisons]
    if exports:
        lines += ["", f"## {EXPORT_TITLE}", "", "| " + " | ".join(EXPORT_HEADER) + " |"]
        lines += ["|" + "---|" * len(EXPORT_HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in exports]
        lines += ["", f"*{EXPORT_NOTE}*"]
    lines += ["", "## Params that matter", "", "| param | value |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in params_rows]
    for caption, file in figures.items():
        lines += ["", f"## {caption}", "", f"![{caption}]({file})"]
        if file in FIGURE_NOTES:
            lines += ["", f"*{FIGURE_NOTES[file]}*"]
    lines += [
        "",
        "## Per class (fine-tuned)",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in per_class]
    return "\n".join(lines) + "\n"


def html_page(
    title,
    warnings,
    params_rows,
    headline,
    per_class,
    figures: dict[str, Path],
    exports=(),
    comparisons=(),
) -> str:
    """One file with the images inlined as data URIs: it opens anywhere, offline."""

    def table(header, rows):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
            for row in rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    sections = [f'<p class="warning">Warning: {html.escape(w)}</p>' for w in warnings]
    sections += [
        "<h2>Test results</h2>",
        table(HEADLINE_HEADER, headline),
    ]
    sections += [f"<p>{html.escape(line)}</p>" for line in comparisons]
    if exports:
        sections += [
            f"<h2>{EXPORT_TITLE}</h2>",
            table(EXPORT_HEADER, exports),
            f'<p class="note">{html.escape(EXPORT_NOTE)}</p>',
        ]
    sections += [
        "<h2>Params that matter</h2>",
        table(["param", "value"], params_rows),
    ]
    for caption, path in figures.items():
        data = base64.b64encode(Path(path).read_bytes()).decode()
        sections.append(
            f"<h2>{html.escape(caption)}</h2>"
            f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        )
        if Path(path).name in FIGURE_NOTES:
            sections.append(f'<p class="note">{html.escape(FIGURE_NOTES[Path(path).name])}</p>')
    sections += [
        "<h2>Per class (fine-tuned)</h2>",
        table(["class", "precision", "recall", "F1", "support"], per_class),
    ]
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px}"
        "th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}"
        ".note{color:#555;font-size:0.9em;margin-top:0.3em}"
        ".warning{background:#fff3cd;border:1px solid #e0c060;padding:0.6em 1em}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
        + "".join(sections)
        + "</body></html>\n"
    )
