"""compute.precision auto on a CPU: float32 or mixed bfloat16, whichever runs the stage's own
model faster on this machine.

A CPU flag does not tell which precision is faster for a given backbone: on an Intel Xeon with
avx512_bf16, Xception's inference ran at 0.6x in mixed bfloat16, while an AMD EPYC with the
same flag had a bfloat16 peak twice its float32 one. So the features stage (inference) and the
fine_tune stage (a training step) time their actual model at its actual input size a few
batches in each precision, and keep the faster one: mixed bfloat16 only where it is more than
NOISE faster (within its own noise float32, the exact one, wins). A CPU without native bfloat16
(``amx_bf16``/``avx512_bf16``) emulates it and is not timed: float32.

The result is remembered outside the repository, in ``~/.cache/transfer-pipeline/precision.json``
(``XDG_CACHE_HOME`` honoured), per machine (CPU model, cores and flags), backend and its
version, Keras version, and what was timed (backbone, sizes, task): it is paid once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import keras

CANDIDATES = ("float32", "mixed_bfloat16")
NOISE = 0.05  # mixed bfloat16 must be this much faster than float32 to be chosen
TIMED_CALLS = 3  # after one untimed call (compilation); the fastest one counts
TIMING_BATCH = 16  # images per timed inference call
TIMING_TRAIN_BATCH = 8  # images per timed training step


def cache_file() -> Path:
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache_home / "transfer-pipeline" / "precision.json"


def _cpuinfo_value(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(name):
            return line.partition(":")[2].strip()
    return ""


def machine(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """This machine as a key: CPU model, cores and a digest of its flags (two machines of one
    kind in a cloud may carry one model name and different flags)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        text = ""
    flags = " ".join(sorted(_cpuinfo_value(text, "flags").split()))
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12]
    model = _cpuinfo_value(text, "model name") or "unknown CPU"
    return f"{model}; {os.cpu_count()} cores; flags {digest}"


def images_per_s(run: Callable[[], object], images: int) -> float:
    """The rate of ``run`` (one call handles ``images``): one untimed call, which compiles,
    then the fastest of TIMED_CALLS (the least disturbed by anything else on the machine)."""
    run()
    fastest = float("inf")
    for _ in range(TIMED_CALLS):
        started = time.perf_counter()
        run()
        fastest = min(fastest, time.perf_counter() - started)
    return images / fastest


def under_policy(policy: str, build: Callable[[], keras.Model]) -> keras.Model:
    """``build()`` under a global dtype policy, restoring the one set before."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        return build()
    finally:
        keras.config.set_dtype_policy(previous)


def choose(
    task: str,
    setting: dict,
    rate_of: Callable[[str], float],
    cache: Path | None = None,
) -> tuple[str, str]:
    """The faster precision for ``task`` ("extraction" or "training") with ``setting`` (what
    decides the speed: backbone, sizes, ...), and why; ``rate_of(policy)`` times the stage's
    model in one precision (images/s). Remembered: a second call with the same key reads the
    rates instead of timing."""
    cache = cache or cache_file()
    key = json.dumps(
        {
            "machine": machine(),
            "backend": f"{keras.backend.backend()} {_backend_version()}",
            "keras": keras.__version__,
            "task": task,
            **setting,
        },
        sort_keys=True,
    )
    remembered = _read(cache)
    rates = remembered.get(key)
    source = f"remembered in {cache}"
    if rates is None:
        rates = {policy: round(rate_of(policy), 2) for policy in CANDIDATES}
        source = "timed now"
        _write(cache, {**remembered, key: rates})
    float32, bfloat16 = rates["float32"], rates["mixed_bfloat16"]
    precision = "mixed_bfloat16" if bfloat16 > float32 * (1 + NOISE) else "float32"
    return precision, (
        f"auto: {task} on this CPU float32 {float32:g} vs mixed_bfloat16 {bfloat16:g} images/s, "
        f"{source}"
    )


def _backend_version() -> str:
    if keras.backend.backend() == "jax":
        import jax

        return jax.__version__
    import tensorflow as tf

    return tf.__version__


def _read(cache: Path) -> dict:
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}  # none yet, unreadable or damaged: time again
    return data if isinstance(data, dict) else {}


def _write(cache: Path, data: dict) -> None:
    """Whole or not at all; where it cannot be written, the rates are timed again next time."""
    temporary = None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=cache.parent, prefix=".precision-", suffix=".json", delete=False
        ) as handle:
            temporary = handle.name
            json.dump(data, handle, indent=1, sort_keys=True)
        os.replace(temporary, cache)
    except OSError:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
