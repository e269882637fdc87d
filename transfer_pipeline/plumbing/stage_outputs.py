"""Write a stage's outputs all or nothing, and never over something the pipeline did not make.

``StageOutputs.of_stage`` checks every output path before the stage does any work: each must
be one that dvc.yaml declares for the stage (its DVCLive folder included); a folder output
may only replace an empty folder or one carrying the pipeline's marker file; a file output
may not be a folder, one of the stage's inputs, or anything under ``data/raw/`` or
``weights/`` (the user's data); every output location must be writable.

Every output is written first into the stage's staging folder, ``.partial-<stage>/`` inside
one of the stage's own declared folder outputs (its first folder, else its DVCLive
``plots/``), ignored by git and DVC. When the stage finishes, the params it read are checked
to be unchanged and the outputs are moved into place with ``os.replace``. On any failure or
Ctrl-C the staging folder is removed and nothing is replaced; a stale one (``kill -9``) is
removed when the stage next starts. While it writes, the stage holds a lock
(``.dvc/tmp/transfer-pipeline-<stage>.lock``, ``locks.take``, removed at the end): a second
run of the same stage (the stage process of a killed ``dvc``, still writing) is refused in one
line and touches nothing of the other's; the kernel releases a killed run's lock, so its
staging folder is known stale. Inside a declared output it is also removed by DVC
itself: before `dvc repro` runs a stage or restores it from the run-cache, DVC deletes the
stage's declared outputs (``Stage.run`` -> ``remove_outs``), ignored files included, so no
partial outlives a stage that DVC brings back. The run still writing (its ``dvc`` killed)
finds at its end that its staging folder is not the one it made (the token in ``.run`` is
gone, even if DVCLive made the folder again), replaces nothing and removes what it wrote
since. A class without a folder output
(``tl-predict --csv``, the download: ``StageOutputs(...)`` without dvc.yaml) writes
``.partial-<name>`` siblings instead.

In a multi-host run only process 0 writes (``writer=False`` elsewhere): the other processes
run the same code, but what they write goes to a private scratch folder, removed at the end
(inside the process's own temporary folder, ``locks.use_own_temp_folder``, removed by the next
run if the process is killed).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from .dvcfile import declared_outputs
from .errors import PipelineError
from .output_checks import LIVE_METRICS, LIVE_OUTS, LIVE_PLOTS, MARKER, check_replaceable, where
from .params import params_unchanged
from .replacing import move, partial_path, remove
from .stage_lock import release_stage_lock, take_stage_lock
from .write_failures import FULL_BELOW, cannot_write, failure_reason, is_write_failure

RUN_TOKEN = ".run"  # in a staging folder: the token of the run that made it


class StageOutputs:
    """The outputs of one run, checked at once and moved into place together at the end.

    outputs = StageOutputs.of_stage("train_head", files=[head], live=live_folder)  # checks
    ...load data, build the model...
    with outputs:
        live = open_live(outputs.path(live_folder))   # the partial DVCLive folder
        save_model(model, outputs.path(head))         # writes the partial copy
    # here every output is in place, or (on any error) none was touched

    ``live`` is a DVCLive folder: its ``metrics.json`` and ``plots/`` are the outputs (DVCLive
    cleans its folder when it starts, so it only ever sees the partial one).

    ``writer=False`` (a multi-host run's processes but the first): the same checks, then
    nothing in the project is touched; ``path`` gives places in a scratch folder.
    """

    def __init__(
        self, stage: str, files=(), folders=(), inputs=(), live=None, writer=True, lock_in=None
    ):
        self.stage, self.writer = stage, writer
        self._scratch = None  # writer=False: the folder written instead, while the stage runs
        self.files = [Path(f) for f in files]
        self.folders = [Path(f) for f in folders]
        self.live = Path(live) if live is not None else None
        self.targets = self.files + self.folders + ([self.live] if self.live else [])
        for target in self.files:
            check_replaceable(target, False, inputs)
        for target in self.folders:
            check_replaceable(target, True, inputs)
        if self.live:
            check_replaceable(self.live, True, inputs, marked=False)
            check_replaceable(self.live / LIVE_METRICS, False, inputs)
            check_replaceable(self.live / LIVE_PLOTS, True, inputs, marked=False)
        # The declared folder output that holds the staging folder while the stage runs: DVC
        # deletes it (and so the staging folder) before it runs or restores the stage.
        folders = self.folders + ([self.live / LIVE_PLOTS] if self.live else [])
        self.host = folders[0] if folders else None
        self._made_host = self.host is not None and not os.path.lexists(self.host)
        names = [target.name for target in self.targets]
        self._entries = {
            target: name if names.count(name) == 1 else f"{index}-{name}"
            for index, (target, name) in enumerate(zip(self.targets, names))
        }
        self._lock = None  # (descriptor, path, folder made for it) while this run writes
        if not writer:
            return
        self._take_lock(lock_in)  # no other live run of this stage: what is there is stale
        try:
            self._discard()  # stale partials of a killed run
            self._make_partials()  # writable? (a read-only checkout or mount fails here) ...
            self._discard()  # ... then nothing is left until the stage starts writing
        except BaseException:
            self._unlock()
            raise

    @classmethod
    def of_stage(
        cls, stage: str, files=(), folders=(), inputs=(), live=None, writer=True
    ) -> StageOutputs:
        """A stage's outputs: each must be one that dvc.yaml declares for the stage."""
        declared = declared_outputs(stage)
        allowed = {where(path) for path in declared}
        claims = [("", target, [target]) for target in [*files, *folders]]
        if live is not None:
            parts = [Path(live) / LIVE_METRICS, Path(live) / LIVE_PLOTS]
            claims.append(("the DVCLive folder ", live, parts))
        for what, target, paths in claims:
            if not all(where(path) in allowed for path in paths):
                raise PipelineError(
                    f"{stage}: refusing to write {what}{target}: dvc.yaml declares only "
                    f"{', '.join(declared)} for this stage; give those paths"
                )
        # The lock goes where DVC never deletes it: DVC deletes a stage's outputs (anything in
        # them) before it runs the stage again, and a lock beside them would outlive a killed
        # run that DVC then restores from its run-cache without running the stage.
        lock_in = Path(".dvc/tmp") if Path(".dvc").is_dir() else None
        return cls(stage, files, folders, inputs, live, writer, lock_in)

    def _take_lock(self, folder) -> None:
        """Held until the run ends: another live run of this stage is refused here."""
        self._lock = take_stage_lock(self.stage, self.targets, folder)
        atexit.register(self._unlock)  # a stage that fails before ``with`` leaves no lock file

    def _unlock(self) -> None:
        if self._lock is None:
            return
        lock, self._lock = self._lock, None
        atexit.unregister(self._unlock)
        release_stage_lock(lock)

    @property
    def staging(self) -> Path | None:
        """The folder every output is written into first (None: siblings instead)."""
        return None if self.host is None else self.host / f".partial-{self.stage}"

    def path(self, target) -> Path:
        """Where to write ``target`` now: its place in the staging folder."""
        target = Path(target)
        if target not in self.targets:
            raise KeyError(f"{target} is not a declared output of {self.stage}")
        if not self.writer:
            return self._scratch / str(self.targets.index(target)) / target.name
        if self.staging is None:
            return partial_path(target)
        return self.staging / self._entries[target]

    def write_json(self, target, data) -> None:
        self.path(target).write_text(json.dumps(data, indent=2) + "\n")

    def __enter__(self) -> StageOutputs:
        if not self.writer:
            self._scratch = Path(tempfile.mkdtemp(prefix=f"{self.stage}-not-written-"))
            for target in self.targets:
                self.path(target).parent.mkdir()
                if target in self.folders or target == self.live:
                    self.path(target).mkdir()
            return self
        self._make_partials()
        if self.staging is not None:  # this run's token: a staging folder made again (DVCLive,
            self._token = secrets.token_hex(16)  # after DVC deleted it) lacks it, same inode or not
            try:
                (self.staging / RUN_TOKEN).write_text(self._token)
            except OSError as error:
                self._discard()
                raise cannot_write(self.stage, self.staging, error) from None
        return self

    def _make_partials(self) -> None:
        for target in self.targets:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path(target)
                tmp.parent.mkdir(parents=True, exist_ok=True)
                if target in self.folders:
                    tmp.mkdir()
                    (tmp / MARKER).write_text(f"written by the {self.stage} stage\n")
                elif target == self.live:
                    tmp.mkdir()
                else:
                    tmp.touch()
                full = shutil.disk_usage(tmp.parent).free < FULL_BELOW
            except OSError as error:
                self._discard()
                raise cannot_write(self.stage, target, error) from None
            if full:
                self._discard()
                raise PipelineError(
                    f"{self.stage}: cannot write {target}: the disk is full; free disk space "
                    "and run again"
                )

    def __exit__(self, kind, error, traceback) -> bool:
        if not self.writer:
            shutil.rmtree(self._scratch, ignore_errors=True)
            return False
        try:
            return self._finish(error)
        finally:
            self._unlock()

    def _finish(self, error) -> bool:
        if error is not None:
            self._discard()
            if isinstance(error, OSError) and is_write_failure(error):
                raise PipelineError(
                    f"{self.stage}: writing {', '.join(map(str, self.targets))} failed "
                    f"({failure_reason(error, self.targets[0].parent)}); nothing was replaced. "
                    "Free disk space (or raise the file size limit) and run again"
                ) from None
            return False
        try:
            params_unchanged(self.stage)
        except BaseException:
            self._discard()
            raise
        _before_replace_hook(self.stage)
        if self.staging is not None and not self._still_staging():
            # DVC deletes a stage's outputs, and so its staging folder, before it runs or
            # restores the stage: a `dvc repro` since this run started (its `dvc` killed).
            # What this run wrote since (DVCLive makes its folders again) is removed: nothing
            # else would, as DVC never runs a stage it restored (no other run of this stage
            # writes: this one holds the lock).
            self._discard()
            with contextlib.suppress(OSError):
                self.host.rmdir()  # made again for the staging folder alone: now empty
            raise PipelineError(
                f"{self.stage}: {self.staging} was removed while this run wrote it (a "
                "`dvc repro` or `dvc checkout` since it started?); nothing was replaced"
            )
        moves = [(self.path(target), target) for target in self.files + self.folders]
        if self.live:
            self.live.mkdir(exist_ok=True)
            moves += [(self.path(self.live) / name, self.live / name) for name in LIVE_OUTS]
        for source, target in moves:
            if target != self.host:
                move(source, target)
        if self.staging is not None:
            self._fill_host(next(source for source, target in moves if target == self.host))
        return False

    def _still_staging(self) -> bool:
        """The staging folder is the one this run made (its mark inside, with this run's token)."""
        try:
            return (self.staging / RUN_TOKEN).read_text() == self._token
        except OSError:
            return False

    def _fill_host(self, source: Path) -> None:
        """The folder that holds the staging folder gets its new contents last, entry by entry
        (it cannot be replaced while the staging folder is inside it)."""
        for entry in self.host.iterdir():
            if entry != self.staging:
                remove(entry)
        written = os.path.lexists(source)
        if written:
            for entry in source.iterdir():
                os.replace(entry, self.host / entry.name)
        remove(self.staging)
        if not written:  # the stage wrote nothing there (DVCLive without plots): no folder
            self.host.rmdir()

    def _discard(self) -> None:
        for target in self.targets:  # siblings: no staging folder, or left by older versions
            with contextlib.suppress(OSError):
                remove(partial_path(target))
        if self.staging is None:
            return
        with contextlib.suppress(OSError):
            remove(self.staging)
            if self._made_host and self.host.is_dir() and not any(self.host.iterdir()):
                self.host.rmdir()  # made for the staging folder: not left behind empty


def _before_replace_hook(stage: str) -> None:
    """For tests: ``TL_BEFORE_REPLACE="<stage>:<shell command>"`` runs the command when the stage
    has written every output and moved none, e.g. ``kill -KILL $PPID`` to leave complete
    partials at a deterministic point. Does nothing when the variable is unset."""
    name, _, command = (os.environ.get("TL_BEFORE_REPLACE") or ":").partition(":")
    if name == stage and command:
        subprocess.run(command, shell=True, check=False)
