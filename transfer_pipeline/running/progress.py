"""Progress a person can follow, quiet enough for CI logs.

In a terminal a bar redraws in place; under ``CI=true`` (or when output is not a terminal)
it prints one line per quarter (or per ``every``), so logs stay short. With ``delay`` nothing
is shown until that many seconds have passed (progress inside a long epoch only). Updates may
come from several threads (Keras runs async-safe batch hooks on a thread pool).
"""

from __future__ import annotations

import os
import sys
import threading
import time

_muted = False  # a multi-host run's processes but the first show no progress (cluster.py)


def mute() -> None:
    global _muted
    _muted = True


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
    def __init__(
        self,
        total: float,
        label: str,
        unit: str = "",
        scale: float = 1.0,
        every: float = 0.25,
        delay: float = 0.0,
    ):
        self.total, self.label, self.unit, self.scale = total, label, unit, scale
        self.done = 0.0
        self.start = time.monotonic()
        self.quiet = quiet_logs()
        self.every, self.delay = every, delay
        self.next_line = every
        self.drawn = False
        self.lock = threading.Lock()

    def update(self, amount: float) -> None:
        with self.lock:
            self._advance(amount)

    def _advance(self, amount: float) -> None:
        self.done += amount
        fraction = self.done / self.total if self.total else 0.0
        elapsed = time.monotonic() - self.start
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        rate = f"{self.done * self.scale / elapsed:.1f}" if elapsed > 0 else "0.0"
        text = (
            f"{self.label}: {self._amount(self.done)}/{self._amount(self.total)}{self.unit} "
            f"({fraction:.0%}, {rate}{self.unit}/s, {format_seconds(elapsed)} elapsed, "
            f"ETA {format_seconds(eta)})"
        )
        if elapsed < self.delay or _muted:
            return
        if not self.quiet:
            bar = "#" * int(30 * fraction)
            print(f"\r[{bar:<30}] {text}", end="", file=sys.stderr, flush=True)
            self.drawn = True
        elif self.total and fraction >= self.next_line:
            print(text, file=sys.stderr, flush=True)
            while fraction >= self.next_line:
                self.next_line += self.every

    def _amount(self, value: float) -> str:
        """Counts as integers ("1024/4000 images"); scaled amounts with one decimal (MB)."""
        return f"{value * self.scale:.1f}" if self.scale != 1 else str(int(round(value)))

    def close(self) -> None:
        with self.lock:
            if self.drawn:
                print(file=sys.stderr, flush=True)
