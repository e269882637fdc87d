"""Resumable fine-tuning: a checkpoint after every epoch, fingerprinted by what the stage reads."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import yaml

from ..models.model import is_seed_state, load_model
from ..plumbing.replacing import write_json_file
from . import cluster
from .live import HISTORY_KEYS


class Checkpoints(keras.callbacks.Callback):
    """Resumable training: after every epoch, the full model (optimizer included), the history
    and the best weights go to a folder DVC never deletes (``.resume/<stage>/``).

    A run killed mid-epoch resumes from the last completed one. The folder carries a fingerprint
    of everything the stage depends on, so a checkpoint from other params is never reused.

    In a multi-host run every process resumes from the folder (shared by every host) and
    only process 0 writes there (``writer``); the others save the same files (saving runs
    collectives every process must join) into a scratch folder of their own.
    """

    def __init__(
        self,
        folder: Path,
        fingerprint: str,
        monitor: str = "val_accuracy",
        patience: int = 0,
        writer: bool = True,
    ):
        super().__init__()
        self.folder, self.fingerprint = Path(folder), fingerprint
        self.written = self.folder if writer else _not_kept(self.folder)
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
        if not best:
            return None
        here = self.written / best["file"]  # saved by this process, or resumed from the folder
        return here if here.exists() else self.folder / best["file"]

    # -- writing ---------------------------------------------------------------------
    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items() if k in HISTORY_KEYS}
        self.written.mkdir(parents=True, exist_ok=True)
        previous = dict(self.state)
        latest = f"epoch-{epoch + 1}.keras"
        self.model.save(self.written / latest)
        best = self.state["best"]
        if best is None or logs.get(self.monitor, -np.inf) > best["value"]:
            best = {
                "epoch": epoch + 1,
                "value": logs.get(self.monitor),
                "file": f"best-{epoch + 1}.weights.h5",
            }
            self.model.save_weights(self.written / best["file"])
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
        write_json_file(self.written / "state.json", self.state)
        for stale in (previous.get("latest"), (previous.get("best") or {}).get("file")):
            if stale and stale not in (latest, best["file"]):
                (self.written / stale).unlink(missing_ok=True)
        if self.patience and epoch + 1 - best["epoch"] >= self.patience:
            print(
                f"early stopping: no better {self.monitor} for {self.patience} epochs", flush=True
            )
            self.model.stop_training = True

    def clear(self) -> None:
        shutil.rmtree(self.written, ignore_errors=True)


def _not_kept(folder: Path) -> Path:
    """Where another process of a multi-host run saves its checkpoints: a folder in its own
    temporary folder (``locks.use_own_temp_folder``: removed when the process ends, or by the
    next run if it is killed)."""
    index, _ = cluster.this_process()
    digest = hashlib.sha256(str(folder.absolute()).encode()).hexdigest()[:12]
    scratch = Path(tempfile.gettempdir()) / f"transfer-pipeline-not-kept-{digest}-{index}"
    shutil.rmtree(scratch, ignore_errors=True)
    return scratch


def _seed_states(model: keras.Model) -> list:
    """The state variables of every random layer (dropout, augmentation), in model order."""
    return [v for v in model.non_trainable_variables if is_seed_state(v)]


def fingerprint(stage: str, params: dict, dvc_yaml="dvc.yaml") -> str:
    """A hash of everything DVC sees as the stage's input: its params and every dependency
    in dvc.yaml (code and data, folders file by file). A checkpoint made with other code or
    other data is never resumed."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    deps = yaml.safe_load(Path(dvc_yaml).read_text())["stages"][stage]["deps"]
    for dep in map(Path, deps):
        files = sorted(p for p in dep.rglob("*") if p.is_file()) if dep.is_dir() else [dep]
        for path in files:
            digest.update(str(path).encode())
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()
