"""Hardware setup shared by the stages: precision, determinism, distribution, per backend.

``configure()`` runs before any model or tensor exists (logical devices and the global dtype
policy can only be set then), after ``backend.select()`` chose the Keras backend.

    backend      one device          several devices in one machine   several machines
    tensorflow   default strategy    tf.distribute.MirroredStrategy   -
    jax          no distribution     DataParallel, local devices      DataParallel, every
                                                                      process's (cluster.py)

TensorFlow is imported only on the tensorflow backend.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras

from . import cluster, precision


@dataclass
class Compute:
    """What a stage runs on; ``scope()`` is where models are built. ``record()`` is the
    stage's ``compute/<stage>.json`` (not a metric: `dvc exp show` stays narrow)."""

    backend: str
    version: str
    devices: list[str]
    precision: str
    precision_reason: str
    distribute: str
    replicas: int = 1
    processes: int = 1
    _strategy: object = field(default=None, repr=False)

    def scope(self):
        return self._strategy.scope() if self._strategy is not None else contextlib.nullcontext()

    @property
    def synchronized_batchnorm(self) -> bool:
        """Whether BatchNorm must all-reduce its batch statistics: tf.distribute replicas
        each see only their part of the batch (jax's DataParallel computes over the whole)."""
        return self.backend == "tensorflow" and self.replicas > 1

    def record(self) -> dict:
        """``compute/<stage>.json``: what the stage ran on, and the one-line description."""
        return {
            "backend": self.backend,
            "version": self.version,
            "devices": self.devices,
            "precision": self.precision,
            "precision_reason": self.precision_reason,
            "distribute": self.distribute,
            "replicas": self.replicas,
            "processes": self.processes,
            "description": self.describe(),
        }

    def announce(self) -> None:
        """The stage's compute line (each process of a multi-host run says it joined)."""
        index, _ = cluster.this_process()
        print(
            f"compute: backend={self.backend} {self.version} "
            f"devices={self.describe().split('; ')[1]} precision={self.precision} "
            f"({self.precision_reason}) distribute={self.distribute} replicas={self.replicas}"
            + (f" process={index}/{self.processes}" if self.processes > 1 else ""),
            file=sys.stderr if index else sys.stdout,
            flush=True,
        )

    def describe(self) -> str:
        """One line, e.g.
        ``jax 0.10.2; 2 x cpu; float32; mirrored x2``; a multi-host run names its processes
        and its devices are this process's: ``...; multi_host x4 (2 processes)``."""
        kinds = sorted(set(self.devices))
        devices = ", ".join(f"{self.devices.count(kind)} x {kind}" for kind in kinds)
        return (
            f"{self.backend} {self.version}; {devices}; {self.precision} "
            f"({self.precision_reason}); "
            f"{self.distribute} x{self.replicas}"
            + (f" ({self.processes} processes)" if self.processes > 1 else "")
        )


def _backend() -> str:
    return keras.backend.backend()


def _gpus() -> list:
    if _backend() == "jax":
        import jax

        return [d for d in jax.local_devices() if d.platform == "gpu"]
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def _compute_capability(gpu) -> tuple[int, int]:
    if _backend() == "jax":
        major, _, minor = str(getattr(gpu, "compute_capability", "0.0")).partition(".")
        return int(major or 0), int(minor or 0)
    import tensorflow as tf

    return tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))


def _device_kinds() -> list[str]:
    """One name per local device: the GPU model, or "cpu"."""
    if _backend() == "jax":
        import jax

        return [
            d.device_kind.lower() if d.platform == "cpu" else d.device_kind
            for d in jax.local_devices()
        ]
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return ["cpu"]
    return [tf.config.experimental.get_device_details(g).get("device_name", "gpu") for g in gpus]


def _version() -> str:
    if _backend() == "jax":
        import jax

        return jax.__version__
    import tensorflow as tf

    return tf.__version__


# CPU flags of native bfloat16 matrix units (Linux /proc/cpuinfo names): with one, a bfloat16
# matmul runs at about twice the float32 rate; without, TensorFlow and XLA emulate bfloat16.
NATIVE_BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_bfloat16_flag(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU flag that gives native bfloat16 (amx_bf16, avx512_bf16), or None: also where
    the flags cannot be read (not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    return next((flag for flag in NATIVE_BFLOAT16_FLAGS if flag in flags), None)


def resolve_precision(choice: str, timing: Timing | None = None) -> tuple[str, str]:
    """The dtype policy for ``compute.precision`` and why, e.g.
    ``("float32", "auto: CPU without native bfloat16")``.

    auto: mixed bfloat16 on Ampere or newer, mixed float16 on Volta/Turing; on a CPU with
    native bfloat16, the faster of float32 and mixed bfloat16 for the model that ``timing``
    runs (precision.py: timed once per machine and model, then remembered), float32 where the
    stage times nothing (the head on cached features; evaluation runs the saved models as
    saved) or where the CPU emulates bfloat16.
    """
    if choice != "auto":
        return choice, "compute.precision"
    gpus = _gpus()
    if gpus:
        major, minor = _compute_capability(gpus[0])
        if (major, minor) >= (8, 0):
            return "mixed_bfloat16", f"auto: GPU compute capability {major}.{minor}"
        if (major, minor) >= (7, 0):
            return "mixed_float16", f"auto: GPU compute capability {major}.{minor}"
        return "float32", f"auto: GPU compute capability {major}.{minor} below 7.0"
    flag = cpu_bfloat16_flag()
    if flag is None:
        return "float32", "auto: CPU without native bfloat16"
    if timing is None:
        return "float32", f"auto: CPU with {flag}, this stage times no model"
    return precision.choose(timing.task, timing.setting, timing.rate_of)


@dataclass
class Timing:
    """What a stage times to choose its precision on a CPU under auto (precision.py):
    ``rate_of(policy)`` runs its model in that dtype policy and returns images/s; ``setting``
    names what decides the speed (backbone, sizes, ...), the key it is remembered by."""

    task: str
    setting: dict
    rate_of: Callable[[str], float]


def resolve_distribute(choice: str) -> str:
    if choice != "auto":
        return choice
    if _backend() == "jax":
        import jax

        return "mirrored" if jax.local_device_count() > 1 else "none"
    return "mirrored" if len(_gpus()) > 1 else "none"


def _tensorflow_strategy(kind: str):
    import tensorflow as tf

    if kind == "none":
        return tf.distribute.get_strategy()
    gpus = _gpus()
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    # No GPUs to mirror over: split the CPU into two logical devices. Slower than one device;
    # it exists so the mirrored code path can be exercised (and tested) on any machine.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def _jax_distribution(kind: str) -> int:
    """Data parallel over this machine's devices (mirrored) or every process's (multi_host);
    returns the number of replicas."""
    import jax

    if kind == "none":
        return 1
    devices = jax.devices() if kind == "multi_host" else jax.local_devices()
    distribution = keras.distribution.DataParallel(devices=devices)
    if kind == "multi_host":
        # Each process feeds its own share of every batch (feeding.ArrayBatches); Keras
        # assembles the global batch. Its auto-sharding would accept a tf.data.Dataset only.
        distribution.auto_shard_dataset = False
    keras.distribution.set_distribution(distribution)
    return len(devices)


def jax_compilation_cache() -> Path:
    """Where compiled XLA programs persist between runs on jax: ``JAX_COMPILATION_CACHE_DIR``
    if set, else ``~/.cache/transfer-pipeline/jax`` (``XDG_CACHE_HOME`` honoured).

    JAX compiles every training and prediction step when a stage starts (on a CPU, about a
    minute for a fine-tuning step); a rerun with the same shapes, model and JAX version loads
    the program instead. Compiling is deterministic, so results do not change.

    Every program is kept, not only those over JAX's default 1 s: building a model runs each
    weight's initializer, one small program per weight shape (43 of about 0.26 s each for
    MobileNetV2 on a 2-core CPU, before `imagenet` weights replace them). Kept, a second run
    of bench/gpu.sh --smoke's jax features stage took 10.4 s instead of 20.7 s there (628 KB of
    cache); the later stages of one run start about 10 s sooner each (BENCHMARKS.md).
    """
    import jax

    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # JAX reads it itself
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    directory = cache_home / "transfer-pipeline" / "jax"
    jax.config.update("jax_compilation_cache_dir", str(directory))
    return directory


def configure(params: dict, distributed: bool = True, announce: bool = True) -> Compute:
    """Seed everything, set the dtype policy, set up distribution (training stages only:
    ``distributed=False`` runs on one device, or in a multi-host run on one device per
    process, each predicting its share of the rows), print (unless ``announce`` is False: a
    stage that times its precision first calls ``announce()`` itself) and return what the stage
    runs on."""
    settings = params["compute"]
    backend = _backend()
    distribute = resolve_distribute(settings["distribute"]) if distributed else "none"
    strategy, replicas, processes = None, 1, 1
    if backend == "tensorflow":
        strategy = _tensorflow_strategy(distribute)
        replicas = strategy.num_replicas_in_sync
    else:
        jax_compilation_cache()
        if cluster.multi_host(params):  # before any JAX computation
            _, processes = cluster.start(params)
            distribute = "multi_host"
        replicas = _jax_distribution(distribute) if distributed else processes
    precision, reason = resolve_precision(settings["precision"])
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(cluster.random_seed(params))
    if backend == "tensorflow" and not _gpus():
        # Same params, same seed -> same numbers on CPU. GPUs keep their fast
        # non-deterministic kernels (docs/determinism.md).
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    compute = Compute(
        backend,
        _version(),
        _device_kinds(),
        precision,
        reason,
        distribute,
        replicas,
        processes,
        strategy,
    )
    if announce:
        compute.announce()
    return compute


def jit_compile(params: dict):
    """compute.jit_compile for ``Model.compile``: auto lets Keras choose (XLA where it can on
    TensorFlow; JAX always compiles with XLA, false runs eagerly: for debugging only)."""
    value = params["compute"]["jit_compile"]
    return "auto" if value == "auto" else bool(value)
