"""Compare runs image by image: each accuracy with its interval, the paired difference, McNemar.

    tl-compare A [B ...] [--head-only] [--against first|best] [--json]

A and B are git revisions, branches, tags or DVC experiment names (`dvc exp show`); with one
run given, the workspace is B. Each run's eval/predictions.npz is read through DVC (the
workspace, the cache or the remote), and the runs must have been evaluated on the same test
images (the fingerprint `evaluate` stores with the predictions). With more than two runs, each
is compared with the first, or with the best by validation accuracy (--against best), and the
runs' spread (mean and standard deviation) follows: with runs that differ only in their
training seed, that is the run-to-run noise.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass

import numpy as np

from ..plumbing.errors import PipelineError, exit_on_pipeline_error
from .statistics import PairedComparison, accuracy_figures, describe_accuracy, unpaired_difference

PREDICTIONS = "eval/predictions.npz"
EVALUATE_METRICS = "dvclive/evaluate/metrics.json"
WORKSPACE = "workspace"


@dataclass
class Run:
    """One run's test predictions, as evaluate stored them."""

    name: str
    rev: str | None  # None: the workspace
    labels: np.ndarray
    classes: np.ndarray  # the predicted class per test image
    fingerprint: str | None  # None: predictions from before evaluate stored one
    data_params: dict | None

    @property
    def right(self) -> int:
        return int((self.classes == self.labels).sum())


def _dvc_read(path: str, rev: str | None) -> bytes:
    """A file of the repository as it is in ``rev`` (None: the workspace), through DVC: from
    git, the DVC cache or the remote. Faults are one line naming the revision and the fix."""
    import dvc.api
    from dvc.exceptions import DvcException, PathMissingError
    from dvc.scm import RevError

    where = WORKSPACE if rev is None else repr(rev)
    never_ran = (
        f"{path} is not in {where}: that run never ran `evaluate`; run `dvc repro evaluate` "
        "there (or choose a revision that did)"
    )
    try:
        with dvc.api.open(path, rev=rev, mode="rb") as handle:
            return handle.read()
    except RevError:
        raise PipelineError(
            f"unknown revision {rev!r}: name a git revision, branch or tag, or a DVC "
            "experiment (`dvc exp show` lists them)"
        ) from None
    except FileNotFoundError:
        raise PipelineError(never_ran) from None
    except PathMissingError:
        # DVC says the same for a path the revision never had and for an output it recorded
        # whose file is in neither the cache nor the remote: the revision's tree tells them apart.
        if not dvc.api.DVCFileSystem(".", rev=rev).exists(path):
            raise PipelineError(never_ran) from None
        raise PipelineError(
            f"{path} of {where} is in neither the DVC cache nor the remote: `dvc pull` it (or "
            "`dvc exp pull` an experiment), or rerun `evaluate` there"
        ) from None
    except DvcException as error:
        raise PipelineError(
            f"{path} of {where} could not be read through DVC ({' '.join(str(error).split())}); "
            "`dvc pull` it, or rerun `evaluate` there"
        ) from None


def load_run(rev: str | None, head_only: bool = False) -> Run:
    """The test predictions of ``rev`` (None: the workspace)."""
    name = WORKSPACE if rev is None else rev
    try:
        stored = np.load(io.BytesIO(_dvc_read(PREDICTIONS, rev)), allow_pickle=False)
        labels = np.asarray(stored["labels"])
        probabilities = np.asarray(stored["head_only" if head_only else "fine_tuned"])
        fingerprint = str(stored["test_split_sha256"]) if "test_split_sha256" in stored else None
        data_params = json.loads(str(stored["data_params"])) if "data_params" in stored else None
    except (ValueError, OSError, KeyError, EOFError) as error:
        raise PipelineError(
            f"{PREDICTIONS} of {name} is not a readable predictions file ({error}); rerun "
            "`evaluate` there"
        ) from None
    if probabilities.ndim != 2 or len(probabilities) != len(labels):
        raise PipelineError(
            f"{PREDICTIONS} of {name} holds {probabilities.shape} for "
            f"{len(labels)} labels; rerun `evaluate` there"
        )
    return Run(name, rev, labels, probabilities.argmax(1), fingerprint, data_params)


def validation_accuracy(run: Run, head_only: bool = False) -> float:
    """The validation accuracy evaluate recorded for the run's shipped weights (or its head's)."""
    try:
        metrics = json.loads(_dvc_read(EVALUATE_METRICS, run.rev))
        if head_only:
            metrics = metrics["head_only"]
        return float(metrics["validation_accuracy"])
    except (KeyError, ValueError, TypeError):
        raise PipelineError(
            f"{EVALUATE_METRICS} of {run.name} has no validation_accuracy (evaluated before "
            "it was recorded): rerun `evaluate` there, or compare against the first run"
        ) from None


def split_difference(first: Run, second: Run) -> str | None:
    """What differs between the test splits two runs were evaluated on; None: the same."""
    if first.fingerprint and second.fingerprint and first.fingerprint == second.fingerprint:
        return None
    differences = []
    if first.data_params is not None and second.data_params is not None:
        for key in sorted(set(first.data_params) | set(second.data_params)):
            a, b = first.data_params.get(key), second.data_params.get(key)
            if a != b:
                differences.append(f"data.{key} {a} vs {b}")
    if len(first.labels) != len(second.labels):
        differences.append(f"{len(first.labels)} vs {len(second.labels)} test images")
    elif not np.array_equal(first.labels, second.labels):
        differences.append("the labels differ in content or order")
    if first.fingerprint is None or second.fingerprint is None:
        return "; ".join(differences) or None  # older predictions: labels and params checked
    return "; ".join(differences) or "other test images under the same data params"


def unpaired_line(first: Run, second: Run) -> str:
    """The weaker comparison of two different test splits: two independent proportions."""
    n1, n2 = len(first.labels), len(second.labels)
    difference, low, high, p_value = unpaired_difference(first.right, n1, second.right, n2)
    return (
        f"unpaired (weaker: different test images, so image-by-image differences are lost): "
        f"{first.name} {describe_accuracy(first.right, n1)}, "
        f"{second.name} {describe_accuracy(second.right, n2)}; difference "
        f"{100 * difference:+.1f} points (95 %: {100 * low:+.1f} to {100 * high:+.1f}), "
        f"Fisher's exact p = {p_value:.2g}"
    )


def paired(first: Run, second: Run) -> PairedComparison:
    different = split_difference(first, second)
    if different:
        print(unpaired_line(first, second), file=sys.stderr)
        raise PipelineError(
            f"{first.name} and {second.name} were evaluated on different test splits "
            f"({different}): no image-by-image comparison; evaluate both on one split (the "
            "same data params, data.split_seed included)"
        )
    return PairedComparison.of(first.labels, first.classes, second.classes)


def two_runs_text(comparison: PairedComparison, first: Run, second: Run) -> str:
    low, high = comparison.difference_interval()
    width = max(len(first.name), len(second.name))
    return "\n".join(
        [
            f"{first.name:<{width}}  {describe_accuracy(first.right, comparison.images)}",
            f"{second.name:<{width}}  {describe_accuracy(second.right, comparison.images)}",
            f"difference ({second.name} - {first.name}): {100 * comparison.difference:+.1f} "
            f"points (paired 95 %: {100 * low:+.1f} to {100 * high:+.1f})",
            f"images only {first.name} got right: {comparison.only_first}; "
            f"only {second.name} got right: {comparison.only_second}",
            f"McNemar exact p = {comparison.p_value:.3g}",
            comparison.verdict(first.name, second.name),
        ]
    )


def table_text(reference: Run, rows: list[tuple[Run, PairedComparison]]) -> str:
    """One row per run against ``reference``."""
    width = max(len(run.name) for run, _ in rows + [(reference, None)])
    lines = [
        f"against {reference.name}: {describe_accuracy(reference.right, len(reference.labels))}",
        f"{'run':<{width}}  {'test accuracy (95 %, images)':<34}  {'difference (paired 95 %)':<28}"
        f"  {'only ref':>8}  {'only run':>8}  {'McNemar p':>9}",
    ]
    for run, comparison in rows:
        low, high = comparison.difference_interval()
        difference = f"{100 * comparison.difference:+.1f} ({100 * low:+.1f} to {100 * high:+.1f})"
        lines.append(
            f"{run.name:<{width}}  {describe_accuracy(run.right, comparison.images):<34}  "
            f"{difference:<28}  {comparison.only_first:>8}  {comparison.only_second:>8}  "
            f"{comparison.p_value:>9.3g}"
        )
    for run, comparison in rows:
        lines.append(comparison.verdict(reference.name, run.name))
    return "\n".join(lines)


def spread_line(runs: list[Run], validation: dict[str, float]) -> str:
    """Run-to-run spread: the mean and standard deviation of the runs' accuracies (for runs
    that differ only in their training seed, this is the noise a difference must exceed)."""
    test = np.array([run.right / len(run.labels) for run in runs])
    line = (
        f"over these {len(runs)} runs: test accuracy mean {100 * test.mean():.1f} %, standard "
        f"deviation {100 * test.std(ddof=1):.1f} points"
    )
    if len(validation) == len(runs):
        values = np.array(list(validation.values()))
        line += (
            f"; validation accuracy mean {100 * values.mean():.1f} %, standard deviation "
            f"{100 * values.std(ddof=1):.1f} points"
        )
    return line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tl-compare",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.strip().split("\n\n", 1)[1],
    )
    parser.add_argument("runs", nargs="+", metavar="REV", help="revisions or experiments")
    parser.add_argument(
        "--head-only", action="store_true", help="compare the head-only models' predictions"
    )
    parser.add_argument(
        "--against",
        choices=("first", "best"),
        default="first",
        help="with more than two runs: compare each with the first, or with the best by "
        "validation accuracy (default: first)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    return parser


@exit_on_pipeline_error
def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    revs: list[str | None] = list(args.runs)
    if len(revs) == 1:
        revs.append(None)  # against the workspace
    runs = [load_run(rev, args.head_only) for rev in revs]
    reference = runs[0]
    validation: dict[str, float] = {}
    if len(runs) > 2:
        for run in runs:
            try:
                validation[run.name] = validation_accuracy(run, args.head_only)
            except PipelineError:
                if args.against == "best":
                    raise
    if args.against == "best" and len(runs) > 2:
        reference = max(runs, key=lambda run: validation[run.name])
    others = [run for run in runs if run is not reference]
    rows = [(run, paired(reference, run)) for run in others]
    if args.json:
        print(
            json.dumps(
                {
                    "predictions": "head_only" if args.head_only else "fine_tuned",
                    "runs": {
                        run.name: accuracy_figures(run.right, len(run.labels)) for run in runs
                    },
                    "comparisons": [c.as_dict(reference.name, run.name) for run, c in rows],
                },
                indent=2,
            )
        )
    elif len(rows) == 1:
        print(two_runs_text(rows[0][1], reference, rows[0][0]))
    else:
        print(table_text(reference, rows))
        print(spread_line(runs, validation))


if __name__ == "__main__":
    main()
