"""Shared fixtures: one tiny real pipeline run per session, copied for tests that change it.

The session fixture ``pipeline`` copies this repository into a temporary git repository,
generates a small CIFAR-10 tarball in the official format, points params at it with tiny
sizes (random weights, 32x32 ResNet50 input, 270 images, 2 fine-tuning epochs of the top 20
layers) and runs the real `dvc repro` once per test run (the pytest-xdist workers each take a
copy of that one build). Read-only tests read its outputs; tests that change params or files
take ``pipeline_copy``, a private copy with the same git history and DVC cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from synthetic import write_cifar10_tarball

REPO_ROOT = Path(__file__).resolve().parents[1]
TARBALL = "data/raw/cifar-10-python.tar.gz"

# The seed's recipe shrunk to seconds: every key still goes through the real code paths.
TINY = {
    "data": {"source": TARBALL, "train_size": 150, "val_size": 60, "test_size": 60},
    "model": {"backbone": "resnet50", "weights": None, "image_size": 32},
    "features": {"batch_size": 64},
    # Small batches and 15 epochs: the head's BatchNorm moving averages need ~200 steps to
    # settle; on cached features that costs about a second.
    "train_head": {"epochs": 15, "batch_size": 8},
    # The top 2 blocks (ResNet50's last two bottleneck blocks, six convolutions), trained from
    # the boundary stage's cache: a small step to trace and compile in every fine_tune of every
    # copy. `unfreeze: all` (through the whole model) is checked in process
    # (test_training_options.py) and end to end by the image-folder pipeline.
    "fine_tune": {"epochs": 2, "unfreeze": 2},
    "report": {"wrong_examples": 8},
    # The default formats (saved_model, onnx) with fewer timings. int8 of this untrained
    # backbone's features is far off (53 % vs 97 % measured, 28 % vs 100 % on another CPU; 23
    # of 60 images changed class, probabilities off by 0.98): how far is that CPU's rounding of
    # an untrained net, so the tiny run only checks that litert_int8 converts and runs. The
    # int8 bounds are checked where they can fail: on a trained model in process
    # (test_export.py::test_an_int8_export_with_two_classes_swapped_fails_its_own_bounds).
    "export": {
        "latency_runs": 10,
        "calibration_images": 50,
        "parity_int8_pp": 100.0,
        "parity_int8_changed_pp": 100.0,
        "parity_int8_probability": 1.0,
    },
    # float32 on every CPU: the tests compare numbers between runs and machines, and auto
    # chooses by timing (precision.py; its own tests are in test_precision.py).
    "compute": {"precision": "float32"},
}

# The tiny pipeline's stages and metrics files.
EXPORTS = {"export@saved_model", "export@onnx"}  # one stage per format in export.formats
STAGES = {
    "prepare",
    "weights",
    "features",
    "train_head",
    "boundary",
    "fine_tune",
    "evaluate",
    *EXPORTS,
    "report",
}
METRICS = {
    "prepare": "metrics/prepare.json",
    "features": "metrics/features.json",
    "train_head": "dvclive/train_head/metrics.json",
    "fine_tune": "dvclive/fine_tune/metrics.json",
    "evaluate": "dvclive/evaluate/metrics.json",
}


# TensorFlow's C++ start-up lines, printed before it reads TF_CPP_MIN_LOG_LEVEL on CPUs where
# oneDNN is on (AVX512_VNNI, AVX512_BF16, AMX): TensorFlow's, not the pipeline's messages.
TF_STARTUP = re.compile(r"WARNING: All log messages before absl::InitializeLog|I\d{4} .* port\.cc:")


def stderr_lines(result) -> list[str]:
    """A command's stderr lines, without TensorFlow's start-up lines."""
    return [line for line in result.stderr.strip().splitlines() if not TF_STARTUP.match(line)]


def mixed_policies(model_file: Path) -> list[str]:
    """The mixed dtype policies named anywhere in a saved .keras model's config (none: float32)."""
    with zipfile.ZipFile(model_file) as archive:
        config = archive.read("config.json").decode()
    return re.findall(r'"name": "(mixed_\w+)"', config)


def tool_env() -> dict:
    """`dvc` and the stages' `python` resolve to this interpreter's environment."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["CI"] = "true"  # quiet progress output, as in CI
    # No analytics daemon per `dvc` call: it costs a process and leaves a file in /tmp.
    env["DVC_NO_ANALYTICS"] = "1"
    env.pop("TF_CONFIG", None)
    return env


@dataclass
class Repo:
    path: Path

    def run(self, *args: str, check: bool = True, timeout: int = 900, env: dict | None = None):
        result = subprocess.run(
            list(args),
            cwd=self.path,
            env={**tool_env(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
                f"{result.stderr[-4000:]}"
            )
        return result

    def dvc(self, *args: str, check: bool = True, env: dict | None = None):
        return self.run(sys.executable, "-m", "dvc", *args, check=check, env=env)

    @contextmanager
    def dvc_beside(self, *args: str, env: dict | None = None, timeout: int = 900):
        """`dvc <args>` in the background while the block runs other commands (two runs on
        two cores); on leaving, waits for it and checks it succeeded. Its output goes to files,
        so a long log cannot block it."""
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "dvc", *args],
                cwd=self.path,
                env={**tool_env(), **(env or {})},
                stdout=out,
                stderr=err,
                text=True,
                start_new_session=True,  # its stages with it, should the block fail
            )
            try:
                yield process
                process.wait(timeout=timeout)
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            out.seek(0)
            err.seek(0)
            process.stdout_text, process.stderr_text = out.read(), err.read()
        if process.returncode != 0:
            raise AssertionError(
                f"dvc {' '.join(args)} failed ({process.returncode}):\n"
                f"{process.stdout_text[-4000:]}\n{process.stderr_text[-4000:]}"
            )

    def snapshot(self) -> dict[str, str]:
        """MD5 of every pipeline output file: to prove a failed run changed none of them."""
        hashes = {}
        for folder in (
            "data/prepared",
            "data/features",
            "models",
            "metrics",
            "dvclive",
            "eval",
            "report",
        ):
            for path in sorted((self.path / folder).rglob("*")):
                if path.is_file():
                    hashes[str(path.relative_to(self.path))] = hashlib.md5(
                        path.read_bytes()
                    ).hexdigest()
        return hashes

    def back_to_last_good(self, good: dict[str, str]) -> None:
        """After a failed run, the DVC way back: the committed params and `dvc repro` restore
        every output from the run-cache, byte for byte, without running a stage."""
        self.git("checkout", "params.yaml")
        result = self.dvc("repro")
        assert self.ran_stages(result.stdout) == set(), result.stdout
        assert self.snapshot() == good

    def git(self, *args: str) -> str:
        return self.run("git", *args).stdout

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)

    def params(self) -> dict:
        return yaml.safe_load((self.path / "params.yaml").read_text())

    def set_params(self, overrides: dict) -> None:
        params = self.params()
        _merge(params, overrides)
        (self.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def json(self, relative: str) -> dict:
        return json.loads((self.path / relative).read_text())

    def ran_stages(self, output: str) -> set[str]:
        """Stage names `dvc repro`/`dvc exp run` ran, from its log."""
        return {
            line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")
        }

    def restored_stages(self, output: str) -> set[str]:
        """Stage names DVC restored from its run-cache instead of running them."""
        return {
            line.split("'")[1]
            for line in output.splitlines()
            if line.startswith("Stage '") and "is cached - skipping run" in line
        }


def _merge(tree: dict, overrides: dict) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict):
            _merge(tree.setdefault(key, {}), value)
        else:
            tree[key] = value


def source_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files of this checkout: what a clone would have."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return [f for f in listed if f and (REPO_ROOT / f).is_file()]


def project_files(target: Path) -> Repo:
    """This project's files in a new git repository, not yet committed: what a clone holds."""
    for relative in source_files():
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / relative, destination)
    repo = Repo(target)
    repo.git("init", "-q")
    repo.git("config", "user.email", "test@example.com")
    repo.git("config", "user.name", "test")
    if not (target / ".dvc").exists():
        repo.dvc("init", "-q")
    return repo


def new_repo(target: Path, overrides: dict | None = None) -> Repo:
    """A fresh git+DVC repository with this project's files, a tiny tarball and tiny params."""
    repo = project_files(target)
    tarball = write_cifar10_tarball(target / TARBALL)
    repo.set_params(TINY)
    repo.set_params({"data": {"md5": hashlib.md5(tarball.read_bytes()).hexdigest()}})
    if overrides:
        repo.set_params(overrides)
    repo.dvc("add", "-q", TARBALL)  # tracked, so queued experiments see it
    repo.commit("project with tiny params")
    return repo


def shared_folder(tmp_path_factory, worker_id: str, name: str) -> Path:
    """A folder all pytest-xdist workers of this run share (the run's own folder without xdist)."""
    base = tmp_path_factory.getbasetemp()
    folder = (base if worker_id == "master" else base.parent) / name
    folder.mkdir(exist_ok=True)
    return folder


@contextmanager
def exclusive(folder: Path):
    """One worker at a time inside (the others wait): for what the workers build once."""
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session", autouse=True)
def jax_compilation_cache(tmp_path_factory, worker_id) -> Path:
    """Every jax run of this test run shares one compilation cache, not the user's ~/.cache."""
    directory = shared_folder(tmp_path_factory, worker_id, "jax-compilation-cache")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(directory)
    return directory


@pytest.fixture(scope="session", autouse=True)
def subprocess_temp_folder(tmp_path_factory) -> Path:
    """The temporary files of the processes the tests start (TensorFlow's autograph sources, the
    scratch folder of a stage process a test kills) go into this run's own folder, which a
    passing run removes, not into /tmp."""
    folder = tmp_path_factory.mktemp("tmpdir")
    os.environ["TMPDIR"] = str(folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def xla_compilation_cache(tmp_path_factory, worker_id) -> Path:
    """TensorFlow's XLA programs too: the tiny ResNet50 train step compiles once per test run,
    not in every fine_tune of every pipeline copy (about 10 s each)."""
    directory = shared_folder(tmp_path_factory, worker_id, "xla-compilation-cache")
    flag = f"--tf_xla_persistent_cache_directory={directory}"
    os.environ["TF_XLA_FLAGS"] = f"{os.environ.get('TF_XLA_FLAGS', '')} {flag}".strip()
    return directory


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, worker_id) -> Repo:
    """The tiny pipeline after one real `dvc repro`, committed. Built once per test run; each
    pytest-xdist worker gets its own copy (dvc commands in one never wait on the other)."""
    shared = shared_folder(tmp_path_factory, worker_id, "pipeline")
    built, log = shared / "repo", shared / "first-repro.log"
    with exclusive(shared):
        if not log.exists():
            shutil.rmtree(built, ignore_errors=True)  # left by a worker whose build failed
            repo = new_repo(built)
            result = repo.dvc("repro")
            repo.commit("baseline run")
            log.write_text(result.stdout + result.stderr)
    repo = copy_of(Repo(built), tmp_path_factory.mktemp("pipeline") / "repo")
    repo.first_repro_log = log.read_text()
    return repo


def copy_of(repo: Repo, target: Path, with_cache: bool = True) -> Repo:
    """A copy of a repository; without the DVC cache it still answers `dvc status`.

    The copy's DVC cache files are hard links to the original's: DVC never changes a cache
    file in place (it writes a new file and renames it, and keeps cache files read-only), so
    the copies share them. That halves what each copy writes (the tiny pipeline's outputs
    are about 0.9 GB, half of it in the cache)."""
    cache = repo.path / ".dvc" / "cache"

    def link_cache_copy_rest(source: str, destination: str) -> None:
        if Path(source).is_relative_to(cache):
            os.link(source, destination)
        else:
            shutil.copy2(source, destination)

    skip = None if with_cache else shutil.ignore_patterns("cache")
    shutil.copytree(
        repo.path, target, symlinks=True, ignore=skip, copy_function=link_cache_copy_rest
    )
    return Repo(target)


@pytest.fixture
def pipeline_copy(pipeline, tmp_path) -> Repo:
    """A private copy of the finished pipeline (git history, DVC cache, outputs)."""
    return copy_of(pipeline, tmp_path / "copy")


# pytest-xdist hands out whole modules (--dist loadscope) in collection order
# (--no-loadscope-reorder): the module that builds the session pipeline goes first, the modules
# that need no pipeline keep the second worker busy meanwhile, then the costliest modules, so
# that no worker is left with a long module at the end. Unlisted modules run last.
MODULE_ORDER = [
    "test_pipeline_dvc.py",  # builds the session pipeline (about 4 min)
    "test_image_folder.py",  # no session pipeline needed from here ...
    "test_hub.py",
    "test_backbones.py",
    "test_training_options.py",
    "test_params.py",
    "test_download.py",
    "test_bench.py",  # ... to here
    "test_experiments.py",  # the costliest modules first
    "test_backends.py",
    "test_safety.py",
    "test_export.py",
    "test_reliability.py",
    "test_sweep.py",
    "test_weights_file.py",
    "test_bad_input.py",
    "test_dvc_native.py",
    "test_saved_models.py",
    "test_model_facts.py",
    "test_predict.py",
    "test_report_html.py",
    "test_split.py",
    "test_precision.py",
    "test_feeding.py",
]


def pytest_collection_modifyitems(items):
    rank = {name: position for position, name in enumerate(MODULE_ORDER)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


# What a run needs in its temporary folder, with room to spare: 6.2 GB at its peak (measured:
# the session pipeline, each worker's copy of it and the copies of the tests in flight).
NEEDED_FREE_GB = 10


def pytest_configure(config):
    """A run started in the background by a non-interactive shell (`cmd &`) inherits Ctrl-C
    ignored, and so would every stage process the tests start: the Ctrl-C test needs them to
    hear it, as they do in a terminal."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_sessionstart(session):
    """A disk too full for the pipeline copies is one line before anything runs, not dozens
    of failed copies half-way through."""
    if hasattr(session.config, "workerinput"):
        return  # the controller checked
    folder = session.config.option.basetemp or tempfile.gettempdir()
    folder = Path(folder)
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free / 1e9
    if free < NEEDED_FREE_GB:
        pytest.exit(
            f"error: {free:.1f} GB free under {folder}; the tests need about {NEEDED_FREE_GB} GB "
            "there for pipeline copies: free some space or give --basetemp=<a folder on a "
            "larger disk>",
            returncode=1,
        )
