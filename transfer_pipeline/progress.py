"""Progress a person can follow, quiet enough for CI logs.

In a terminal a bar redraws in place; under ``CI=true`` (or when output is not a terminal)
it prints one line per 25 %, so logs stay short.
"""

from __future__ import annotations

import os
import sys
import time


def quiet_logs() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or not sys.stderr.isatty()


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class ProgressBar:
    def __init__(self, total: float, label: str, unit: str = "", scale: float = 1.0):
        self.total, self.label, self.unit, self.scale = total, label, unit, scale
        self.done = 0.0
        self.start = time.monotonic()
        self.quiet = quiet_logs()
        self.next_quarter = 0.25

    def update(self, amount: float) -> None:
        self.done += amount
        fraction = self.done / self.total if self.total else 0.0
        elapsed = time.monotonic() - self.start
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        text = (
            f"{self.label}: {self.done * self.scale:.1f}/{self.total * self.scale:.1f}{self.unit} "
            f"({fraction:.0%}, {format_seconds(elapsed)} elapsed, ETA {format_seconds(eta)})"
        )
        if not self.quiet:
            bar = "#" * int(30 * fraction)
            print(f"\r[{bar:<30}] {text}", end="", file=sys.stderr, flush=True)
        elif self.total and fraction >= self.next_quarter:
            print(text, file=sys.stderr, flush=True)
            while fraction >= self.next_quarter:
                self.next_quarter += 0.25

    def close(self) -> None:
        if not self.quiet:
            print(file=sys.stderr, flush=True)
