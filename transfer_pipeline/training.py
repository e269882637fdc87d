"""Training helpers shared by train_head and fine_tune: input pipelines, callbacks, results."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from .atomic import write_json_file
from .errors import PipelineError
from .model import load_model
from .progress import format_seconds

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[labels]


class ArrayBatches(keras.utils.PyDataset):
    """In-memory arrays in batches, for every backend; the model resizes and preprocesses.

    With a seed, each epoch's order is a permutation drawn from (seed, epoch): a run resumed
    after epoch N sees the same batches as one that never stopped.
    """

    def __init__(self, x, y, batch_size: int, shuffle_seed: int | None = None, first_epoch=0):
        super().__init__()  # one worker: the order is set in on_epoch_begin, before any batch
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, shuffle_seed
        self.epoch = first_epoch - 1
        self.order = np.arange(len(x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        if self.y is None:
            return (self.x[rows],)
        return self.x[rows], self.y[rows]

    def on_epoch_begin(self) -> None:
        self.epoch += 1
        if self.seed is not None:
            self.order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))


def optimizer(lr, weight_decay: float = 0.0):
    if weight_decay > 0:
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay)
    return keras.optimizers.Adam(learning_rate=lr)


def cosine_with_warmup(lr: float, epochs: int, warmup_epochs: int, steps_per_epoch: int):
    total = epochs * steps_per_epoch
    warmup = warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else lr,
        decay_steps=max(1, total - warmup),
        warmup_target=lr if warmup else None,
        warmup_steps=warmup,
    )


class EpochLog(keras.callbacks.Callback):
    """One line per epoch with the metrics, the epoch time and the ETA of the stage."""

    def __init__(self, stage: str, epochs: int, images_per_epoch: int):
        super().__init__()
        self.stage, self.epochs, self.images = stage, epochs, images_per_epoch
        self.durations: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.monotonic() - self.started
        self.durations.append(seconds)
        eta = np.mean(self.durations) * (self.epochs - epoch - 1)
        shown = "  ".join(f"{k} {logs[k]:.4f}" for k in HISTORY_KEYS if k in (logs or {}))
        print(
            f"{self.stage} epoch {epoch + 1}/{self.epochs}  {shown}  "
            f"{format_seconds(seconds)} ({self.images / seconds:.0f} img/s)  "
            f"ETA {format_seconds(eta)}",
            flush=True,
        )


class FailOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop at the first NaN/Inf loss with an error naming the epoch: never save a NaN model."""

    def __init__(self, stage: str, lr_key: str):
        super().__init__()
        self.stage, self.lr_key = stage, lr_key

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise PipelineError(
                f"{self.stage}: the loss became {float(loss)} in epoch {self.epoch + 1} "
                f"(batch {batch + 1}); nothing was saved. Lower {self.lr_key} and run again"
            )


class Checkpoints(keras.callbacks.Callback):
    """Resumable training: after every epoch, the full model (optimizer included), the history
    and the best weights go to a folder DVC never deletes (``.resume/<stage>/``).

    A run killed mid-epoch resumes from the last completed one. The folder carries a fingerprint
    of everything the stage depends on, so a checkpoint from other params is never reused.
    """

    def __init__(
        self, folder: Path, fingerprint: str, monitor: str = "val_accuracy", patience: int = 0
    ):
        super().__init__()
        self.folder, self.fingerprint = Path(folder), fingerprint
        self.monitor, self.patience = monitor, patience
        self.state = {"fingerprint": fingerprint, "epochs_done": 0, "history": [], "best": None}

    # -- reading ---------------------------------------------------------------------
    def resume_point(self) -> dict | None:
        """The saved state if it belongs to this very run configuration, else None."""
        state_file = self.folder / "state.json"
        if not state_file.exists():
            return None
        try:
            state = json.loads(state_file.read_text())
        except json.JSONDecodeError:
            return None
        if state.get("fingerprint") != self.fingerprint or not state.get("epochs_done"):
            return None
        if not (self.folder / state["latest"]).exists():
            return None
        self.state = state
        return state

    def load_latest(self) -> keras.Model:
        """The model after the last completed epoch, optimizer and random-number state included
        (Keras does not restore dropout's and augmentation's seed state on load)."""
        model = load_model(self.folder / self.state["latest"])
        for variable, value in zip(_seed_states(model), self.state["seed_states"], strict=True):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        return model

    def best_weights_path(self) -> Path | None:
        best = self.state.get("best")
        return self.folder / best["file"] if best else None

    # -- writing ---------------------------------------------------------------------
    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items() if k in HISTORY_KEYS}
        self.folder.mkdir(parents=True, exist_ok=True)
        previous = dict(self.state)
        latest = f"epoch-{epoch + 1}.keras"
        self.model.save(self.folder / latest)
        best = self.state["best"]
        if best is None or logs.get(self.monitor, -np.inf) > best["value"]:
            best = {
                "epoch": epoch + 1,
                "value": logs.get(self.monitor),
                "file": f"best-{epoch + 1}.weights.h5",
            }
            self.model.save_weights(self.folder / best["file"])
        self.state = {
            "fingerprint": self.fingerprint,
            "epochs_done": epoch + 1,
            "history": self.state["history"] + [{"epoch": epoch + 1, **logs}],
            "best": best,
            "latest": latest,
            "seed_states": [
                keras.ops.convert_to_numpy(v).tolist() for v in _seed_states(self.model)
            ],
        }
        # state.json is the commit point: written atomically after the files it names.
        write_json_file(self.folder / "state.json", self.state)
        for stale in (previous.get("latest"), (previous.get("best") or {}).get("file")):
            if stale and stale not in (latest, best["file"]):
                (self.folder / stale).unlink(missing_ok=True)
        if self.patience and epoch + 1 - best["epoch"] >= self.patience:
            print(
                f"early stopping: no better {self.monitor} for {self.patience} epochs", flush=True
            )
            self.model.stop_training = True

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _seed_states(model: keras.Model) -> list:
    """The state variables of every random layer (dropout, augmentation), in model order."""
    return [v for v in model.non_trainable_variables if "seed_generator_state" in v.path]


def fingerprint(params_subset: dict, files: list[Path]) -> str:
    digest = hashlib.sha256(json.dumps(params_subset, sort_keys=True).encode())
    for path in files:
        digest.update(Path(path).name.encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def write_history(path, history: list[dict]) -> None:
    """Per-epoch history as CSV (x = epoch) for `dvc plots` and the report."""
    frame = pd.DataFrame(history, columns=["epoch", *HISTORY_KEYS])
    frame.to_csv(path, index=False, float_format="%.6g")


class AfterEpochHook(keras.callbacks.Callback):
    """For tests: ``TL_AFTER_EPOCH="<stage>:<epoch>:<shell command>"`` runs the command once that
    epoch (and its checkpoint) is complete, e.g. ``kill -KILL $PPID`` to stop a run at a
    deterministic point. Does nothing when the variable is unset."""

    def __init__(self, stage: str):
        super().__init__()
        stage_name, epoch, self.command = (os.environ.get("TL_AFTER_EPOCH") or "::").split(":", 2)
        self.epoch = int(epoch) if stage_name == stage and epoch else None

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            subprocess.run(self.command, shell=True, check=False)


def history_rows(history: keras.callbacks.History) -> list[dict]:
    rows = []
    for i in range(len(history.epoch)):
        rows.append({"epoch": i + 1, **{k: float(history.history[k][i]) for k in HISTORY_KEYS}})
    return rows
