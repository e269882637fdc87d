"""The HTML report checked the way a person would: opened in headless Chromium.

One Chromium run takes a screenshot of ``report/report.html`` as it is; a second one dumps the
rendered DOM of a copy with a probe script appended that records, after the page has loaded,
each image's decoded size in Chromium (``data-natural``). The report itself is not changed.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import copy_of
from PIL import Image
from synthetic import CIFAR10_CLASSES

from transfer_pipeline.judging.statistics import describe_accuracy

WINDOW = (1200, 4000)
# Headless with everything that would reach the network off: it is closed on CI boxes.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PROBE = (
    "<script>addEventListener('load', () => { for (const img of document.images) "
    "img.dataset.natural = img.complete ? img.naturalWidth + 'x' + img.naturalHeight "
    ": 'incomplete'; });</script>"
)


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.fail(
        "Chromium is not installed: the report test renders report.html in headless Chromium. "
        "Install it (Debian/Ubuntu: `sudo apt-get install -y chromium`; .ci/run does this)."
    )


def run_chromium(*args: str, offline: bool = False) -> subprocess.CompletedProcess:
    """Headless Chromium; ``offline``: in a network namespace of its own, with no network."""
    no_network = ["unshare", "--map-root-user", "--net"] if offline else []
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [*no_network, chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, (
        f"chromium failed ({result.returncode}):\n{result.stderr[-3000:]}"
    )
    return result


class Page(HTMLParser):
    """The images (their attributes) and the visible text of a DOM."""

    def __init__(self, dom: str):
        super().__init__()
        self.images: list[dict] = []
        self.words: list[str] = []
        self._hidden = 0
        self.feed(dom)
        self.text = " ".join(" ".join(self.words).split())

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag in ("script", "style", "title"):
            self._hidden += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style", "title"):
            self._hidden -= 1

    def handle_data(self, data):
        if not self._hidden:
            self.words.append(data)


@pytest.fixture(scope="module")
def rendered(pipeline, tmp_path_factory):
    """The report stage's page for the tiny pipeline with three of its test predictions made
    confidently wrong: whether the tiny model gets any wrong depends on the CPU's rounding, and
    every section of the page must be drawn."""
    repo = copy_of(pipeline, tmp_path_factory.mktemp("report") / "repo")
    predictions = dict(np.load(repo.path / "eval/predictions.npz"))
    classes = predictions["fine_tuned"].shape[1]
    for row, label in enumerate(predictions["labels"][:3]):
        predictions["fine_tuned"][row] = np.full(classes, 0.1 / (classes - 1))
        predictions["fine_tuned"][row, (label + 1) % classes] = 0.9
    np.savez(repo.path / "eval/predictions.npz", **predictions)
    stage = yaml.safe_load((repo.path / "dvc.yaml").read_text())["stages"]["report"]
    repo.run(*stage["cmd"].replace("python", sys.executable, 1).split())
    report = repo.path / "report/report.html"
    assert report.is_file(), "the report stage wrote no report/report.html"
    tmp = tmp_path_factory.mktemp("chromium")
    shot = tmp / "shot.png"
    run_chromium(f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", report.as_uri())
    probe = tmp / "probe.html"
    probe.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    dom = run_chromium("--dump-dom", probe.as_uri()).stdout
    return {"shot": shot, "page": Page(dom)}


def test_screenshot_shows_a_rendered_page_not_a_blank_one(rendered):
    shot: Path = rendered["shot"]
    assert shot.is_file() and shot.stat().st_size > 10_000, "Chromium wrote no real screenshot"
    with Image.open(shot) as image:
        assert image.size == WINDOW
        pixels = np.asarray(image.convert("RGB"))
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    non_white = (pixels < 245).any(axis=2).mean()
    # Tables and text alone give few colours and little ink; the figures give many of both.
    assert len(colours) > 50, f"only {len(colours)} colours: the figures did not render"
    assert non_white > 0.03, f"only {non_white:.1%} of the screenshot is not white"


def test_every_image_is_an_inline_png_that_chromium_decoded(rendered):
    images = rendered["page"].images
    assert len(images) >= 3, (
        f"expected curves, confusion matrix and wrong images, got {len(images)}"
    )
    for img in images:
        alt, src = img.get("alt", ""), img.get("src", "")
        assert alt, "every image needs an alt text"
        assert src.startswith("data:image/png;base64,"), f"{alt}: not an inline PNG: {src[:60]}"
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as png:
            width, height = png.size
            pixels = np.asarray(png.convert("RGB"))
        assert width > 100 and height > 100, f"{alt}: {width}x{height} is too small to read"
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10, f"{alt}: a flat image"
        assert img.get("data-natural") == f"{width}x{height}", (
            f"{alt}: Chromium decoded it as {img.get('data-natural')}, the PNG is {width}x{height}"
        )


def test_report_reads_as_the_issue_asks(rendered, pipeline):
    page = rendered["page"]
    text = page.text
    evaluation = json.loads((pipeline.path / "dvclive/evaluate/metrics.json").read_text())
    # Headline: both phases with this run's numbers, the seed's result beside them, the params.
    images = evaluation["images"]["test"]
    for expected in (
        "head only",
        describe_accuracy(round(evaluation["head_only"]["test_accuracy"] * images), images),
        f"{evaluation['head_only']['test_loss']:.4f}",
        "fine-tuned",
        describe_accuracy(round(evaluation["test_accuracy"] * images), images),
        f"{evaluation['test_loss']:.4f}",
        "94.1 % (93.7-94.6 %, 10,000 images)",  # the seed's, with its own test split
        "Fine-tuning against the head alone, on the same",
        "Against the seed report's",
        "Test accuracy with its uncertainty",
        "model.backbone",
        "resnet50",
        "fine_tune.lr",
        "train_head.optimizer",
        "fine_tune.optimizer",
        "where fine-tuning starts",
        "Most confidently wrong",
        "precision",
        "recall",
        "F1",
        "features of an untrained frozen base",  # the tiny pipeline's weights are null
        "Exported models",  # the export stages: one row per format in export.formats
        "saved_model",
        "onnx",
        "batch-1 latency (ms)",
    ):
        assert expected in text, f"{expected!r} is not on the rendered page"
    for name in CIFAR10_CLASSES:
        assert name in text, f"class {name!r} is missing from the per-class table"
    alts = [img.get("alt", "") for img in page.images]
    for figure in ("Training curves", "Confusion matrix", "Most confidently wrong"):
        assert any(alt.startswith(figure) for alt in alts), f"no {figure!r} image in {alts}"


# After the page has loaded and vega has drawn: for every plot (DVC gives each an element with
# an id, which vega-embed marks with the class vega-embed), the pixels of its canvas that are
# neither transparent nor white, as JSON on the <body>.
PLOT_PROBE = """<script>addEventListener('load', () => setTimeout(() => {
  const ink = {};
  for (const plot of document.querySelectorAll('.vega-embed[id]')) {
    const canvas = plot.querySelector('canvas');
    ink[plot.id] = 0;
    if (!canvas) continue;
    const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 0; i < px.length; i += 4)
      if (px[i + 3] > 0 && (px[i] < 240 || px[i + 1] < 240 || px[i + 2] < 240)) ink[plot.id]++;
  }
  document.body.dataset.plots = JSON.stringify(ink);
}, 3000));</script>"""


def test_dvc_plots_show_draws_every_plot_without_network(pipeline, tmp_path):
    """`dvc plots show` uses the repository's page (.dvc/plots_page.html, scripts inline):
    opened in Chromium with no network, every plot is drawn (marks on its canvas), the
    curves, the confusion matrix and the F1 bars of dvc.yaml among them, not empty divs."""
    out = tmp_path / "plots"
    pipeline.dvc("plots", "show", "-o", str(out))
    page = (out / "index.html").read_text()
    assert "<script src=" not in page and "vegaEmbed(" in page
    probe = tmp_path / "probe.html"
    end = page.rindex("</body>")  # the page's own (vega-embed's code holds one too)
    probe.write_text(page[:end] + PLOT_PROBE + page[end:])
    dom = run_chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri(), offline=True)
    found = re.search(r'data-plots="([^"]*)"', dom.stdout)
    assert found, "the probe did not run: the page's scripts failed"
    ink = json.loads(found.group(1).replace("&quot;", '"'))
    assert page.count("vegaEmbed(") == len(ink), f"drawn: {sorted(ink)}"
    for title in yaml.safe_load((pipeline.path / "dvc.yaml").read_text())["plots"]:
        plot_id = re.sub(r"\W", "_", next(iter(title)))  # DVC's id: "Loss per epoch" -> Loss_..
        assert plot_id in ink, f"{plot_id} not among {sorted(ink)}"
    assert min(ink.values()) > 500, f"marks per plot: {ink}"


def test_a_head_only_run_reports_its_one_model_once():
    """fine_tune.epochs 0: the head on the frozen backbone is the shipped model; evaluate scores
    it once, so the test table has one row for it, not two of the same model."""
    from transfer_pipeline.judging.report import headline_rows

    evaluation = {
        "validation_accuracy": 0.3,
        "test_accuracy": 0.298,
        "test_loss": 1.9,
        "head_only": {"validation_accuracy": 0.3, "test_accuracy": 0.298, "test_loss": 1.9},
        "images": {"validation": 60, "test": 500},
    }
    rows = headline_rows(evaluation, 0.9413, fine_tuned=False)
    assert [row[0] for row in rows[:-1]] == [
        "backbone + head, backbone frozen (fine_tune.epochs 0)"
    ]
    fine_tuned = headline_rows({**evaluation, "test_accuracy": 0.5}, 0.9413)
    assert [row[0] for row in fine_tuned[:-1]] == ["head only (frozen backbone)", "fine-tuned"]
