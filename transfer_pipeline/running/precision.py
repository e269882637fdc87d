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
version, Keras version, and what was timed (backbone, weights, sizes, task): it is paid once.
The cache never breaks a run: a damaged file, or an entry of another layout, is said in one
line naming the file and timed again; a cache that cannot be written is said in one line (the
next run times again) with the setting that pins the choice.

Runs that time at once (``dvc queue start -j 2``) take turns: an exclusive lock on
``precision.json.lock`` beside the file is held from reading the cache to writing it, timing
included, so no entry is lost and two timings never disturb each other; a run waiting for
the lock finds what the other stored for its model instead of timing it again.

A choice measured under load (another job on the machine) is kept all the same: once stored,
the rates are used as they are, since a stable choice is worth more than a re-timed one, and
the fastest of TIMED_CALLS calls is the least disturbed. To time again delete the file; where
the same params must give the same model on any machine, set ``compute.precision`` (float32,
or the precision that was chosen) instead of auto.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import sys
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
    with _locked(cache) as unlocked:
        remembered = _read(cache)
        rates = _valid(remembered.get(key))
        if rates is not None:
            return _decide(task, rates, f"remembered in {cache}")
        if key in remembered:
            _say(
                f"ignoring the {task} entry in {cache}: not of this version's layout; timing again"
            )
        rates = {policy: round(rate_of(policy), 2) for policy in CANDIDATES}
        not_stored = unlocked or _write(cache, {**remembered, key: rates})
    precision, reason = _decide(task, rates, "timed now")
    if not_stored:
        _say(
            f"cannot store the timed choice in {cache} ({_reason(not_stored)}); the next run "
            f"times again: set compute.precision to {precision} to pin it"
        )
    return precision, reason


def _decide(task: str, rates: dict, source: str) -> tuple[str, str]:
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


def _say(message: str) -> None:
    print(f"precision: {message}", file=sys.stderr, flush=True)


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


@contextlib.contextmanager
def _locked(cache: Path):
    """Hold an exclusive lock on the cache's lock file (yields None), or yield the OSError
    that kept it from being taken (an unwritable folder: the choice cannot be stored)."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        handle = open(cache.with_name(cache.name + ".lock"), "a")
    except OSError as error:
        yield error
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the handle closes
        except OSError as error:  # a file system without locks
            yield error
            return
        yield None


def _read(cache: Path) -> dict:
    """The cache's entries; {} where there is none yet, or where it cannot be read or is
    damaged (said in one line naming the file; the next write replaces a damaged one)."""
    try:
        text = cache.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):  # none yet
        return {}
    except OSError as error:
        _say(f"cannot read {cache} ({_reason(error)}); timing again")
        return {}
    except UnicodeDecodeError:
        problem = "not text"
    else:
        try:
            data = json.loads(text)
        except ValueError as error:
            problem = f"not JSON: {error}"
        else:
            if isinstance(data, dict):
                return data
            problem = f"a JSON {type(data).__name__}, not an object"
    _say(f"{cache} is damaged ({problem}); timing again, and replacing it")
    return {}


def _valid(rates: object) -> dict | None:
    """An entry's rates if it holds a positive, finite images/s for every candidate."""
    if not isinstance(rates, dict):
        return None
    for policy in CANDIDATES:
        rate = rates.get(policy)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
            return None
    return rates


def _write(cache: Path, data: dict) -> OSError | None:
    """Whole or not at all (under the lock); the OSError where it cannot be written."""
    temporary = None
    try:
        with tempfile.NamedTemporaryFile(
            "w",
            encoding="utf-8",
            dir=cache.parent,
            prefix=".precision-",
            suffix=".json",
            delete=False,
        ) as handle:
            temporary = handle.name
            json.dump(data, handle, indent=1, sort_keys=True)
        os.replace(temporary, cache)
    except OSError as error:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        return error
    return None
