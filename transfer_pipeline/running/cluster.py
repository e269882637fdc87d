"""Several processes, one stage: JAX's multi-process runtime (``compute.distribute: multi_host``).

A launcher (``compute.launcher`` in params.yaml: ``srun``, ``mpirun``, tests/launch_local.sh)
starts the stage's command once per host; ``start()`` joins this process to the others
before any JAX computation, from the standard environment: ``KERAS_DISTRIBUTION_JOB_ADDRESSES``
/ ``_NUM_PROCESSES`` / ``_PROCESS_ID`` when set, else JAX's own cluster detection (SLURM, Open
MPI). Collectives are NCCL between GPUs and gloo between CPUs.

- Training: ``DataParallel`` over every process's devices (compute.py); each process feeds its
  share of every global batch (feeding.ArrayBatches), so batch sizes stay global and N
  processes train on the same batches as one.
- Extraction and evaluation: each process predicts its share of every batch, ``gather``
  puts the rows back in order on every process.
- One writer: process 0 writes the stage's outputs, DVCLive, the checkpoints and the log
  lines; the others write nothing in the project (their outputs go to a scratch folder that is
  removed) and print only their errors. The project is on a file system every host shares.
- A process that fails or is killed ends the others: a collective with it fails at once (its
  connection closes), or JAX's coordination service ends them when its heartbeats stop (100 s).
  Each leaves with one line (errors.py), and nothing is replaced.

Kept free of Keras and JAX imports at module level: stages ask ``writes`` before Keras loads.
"""

from __future__ import annotations

import os
import sys

from ..plumbing import errors
from ..plumbing.errors import PipelineError
from . import progress

# Where a launcher puts this process's index: Keras' variable (tests/launch_local.sh, SSH,
# Kubernetes), SLURM's srun, Open MPI's mpirun. JAX's cluster detection reads the same ones.
PROCESS_INDEX_VARIABLES = ("KERAS_DISTRIBUTION_PROCESS_ID", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK")
HOW_TO_LAUNCH = (
    "compute.launcher must start every process with them (srun and mpirun do) or with "
    "KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_NUM_PROCESSES and "
    "KERAS_DISTRIBUTION_PROCESS_ID (docs/gpus-and-clusters.md)"
)
# Words in the errors JAX raises when another process of the run is gone.
_LOST_PEER = ("gloo", "nccl", "peer", "coordination", "heartbeat", "barrier", "connection")

_process: tuple[int, int] | None = None  # (index, count) once start() joined the runtime


def multi_host(params: dict) -> bool:
    """Whether this stage runs as several processes: ``compute.launcher`` is set. Params
    validation makes that the same as ``compute.distribute: multi_host``; extraction and
    evaluation declare only the launcher, so switching between none and mirrored (the
    training stages' business) does not rerun them."""
    return bool(params["compute"]["launcher"])


def launched_index(params: dict) -> int:
    """This process's index as its launcher set it (0 unless compute.distribute is
    multi_host); one line if no launcher set one."""
    if not multi_host(params):
        return 0
    for name in PROCESS_INDEX_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    raise PipelineError(
        "compute.distribute = multi_host but this process has no process index from its "
        f"launcher (none of {', '.join(PROCESS_INDEX_VARIABLES)} is set); {HOW_TO_LAUNCH}"
    )


def writes(params: dict) -> bool:
    """Whether this process writes the stage's outputs: process 0 of a multi-host run, or the
    only process."""
    return launched_index(params) == 0


def random_seed(params: dict) -> int:
    """The seed a stage starts from: the training ``seed``, or for a stage that trains nothing
    and so does not depend on it (features), the split seed."""
    return params["seed"] if "seed" in params else params["data"]["split_seed"]


def start(params: dict) -> tuple[int, int]:
    """Join the other processes of this stage (before any JAX computation); returns
    (index, count). On CPUs the collectives run over gloo."""
    global _process
    import jax
    import keras

    expected = launched_index(params)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # Seeded first: Keras would otherwise agree on a random seed through a collective.
    keras.utils.set_random_seed(random_seed(params))
    try:
        keras.distribution.initialize()
    except (RuntimeError, ValueError) as error:
        raise PipelineError(
            f"compute.distribute = multi_host: could not join the other processes "
            f"({_first_line(error)}); {HOW_TO_LAUNCH}"
        ) from None
    index, count = jax.process_index(), jax.process_count()
    if index != expected:
        raise PipelineError(
            f"compute.distribute = multi_host: JAX made this process number {index}, its "
            f"launcher number {expected}; set KERAS_DISTRIBUTION_PROCESS_ID to the launcher's"
        )
    _process = (index, count)
    errors.leave_at_once(_lost_peer)
    if index:  # one set of log lines: process 0's
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
        progress.mute()
    return index, count


def this_process() -> tuple[int, int]:
    """(index, count) of this process in the run: (0, 1) outside a multi-host run."""
    return _process or (0, 1)


def gather(rows):
    """Every process's ``rows`` (the same shape in each), concatenated in process order, on
    every process."""
    import numpy as np
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(rows, tiled=True))


def _lost_peer(error: BaseException) -> str | None:
    """One line for an error JAX raises when another process is gone, else None."""
    text = str(error).lower()
    if not any(word in text for word in _LOST_PEER):
        return None
    index, count = this_process()
    return (
        f"process {index} of {count}: another process of this stage failed or was killed "
        f"({_first_line(error)}); nothing was replaced. Fix what the other processes' lines "
        "say, then run `dvc repro` again (fine_tune resumes from its last epoch)"
    )


def _first_line(error: BaseException) -> str:
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line if len(line) <= 160 else line[:157] + "..."
