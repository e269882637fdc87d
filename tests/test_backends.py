"""The same tiny pipeline on the jax backend, with TensorFlow blocked, and models that move
between backends.

One real `dvc exp run -S compute.backend=jax evaluate` (module fixture) in a process tree
where `import tensorflow` raises, with two forced XLA CPU devices: the training stages run
data-parallel over both (keras.distribution.DataParallel). It stops at evaluate, the last stage
that runs a model on the chosen backend. JAX logs every compilation it does, and every Keras
CallbackList of the stages records whether Keras may dispatch steps asynchronously.

Then the same run as two processes of one CPU device each (JAX's multi-process runtime, started
by tests/launch_local.sh in place of srun), with one of them killed half-way and resumed.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import copy_of, mixed_policies, new_repo, stderr_lines, tool_env
from PIL import Image

BLOCKED_IMPORTS = Path(__file__).parent / "blocked_imports"
MODEL_STAGES = {"features", "train_head", "fine_tune", "evaluate"}
# The boundary stage runs the model too (the cache of the tiny pipeline's unfrozen top blocks)
# but on one process: no launcher, no compute record.
RERUN_STAGES = MODEL_STAGES | {"boundary"}
STAGE_METRICS = {
    "features": "metrics/features.json",
    "train_head": "dvclive/train_head/metrics.json",
    "fine_tune": "dvclive/fine_tune/metrics.json",
    "evaluate": "dvclive/evaluate/metrics.json",
}


# XLA aborts a CPU all-reduce whose partner device has not arrived after 40 s. Two forced
# devices share this machine's 2 cores with the other test worker's stages: once, under that
# load, mirrored train_head aborted there (SIGABRT) after its fourth epoch. 300 s.
COLLECTIVE_TIMEOUT = "--xla_cpu_collective_call_terminate_timeout_seconds=300"


def jax_env(devices: int = 2) -> dict:
    """The jax backend's environment: TensorFlow blocked, `devices` XLA CPU devices."""
    return {
        "PYTHONPATH": str(BLOCKED_IMPORTS),
        "BLOCKED_IMPORTS": "tensorflow",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {COLLECTIVE_TIMEOUT}",
        "KERAS_BACKEND": "",  # the param decides, not the environment
    }


@pytest.fixture(scope="module")
def jax_run(pipeline, tmp_path_factory):
    repo = copy_of(pipeline, tmp_path_factory.mktemp("jax") / "repo")
    blocked = repo.run(sys.executable, "-c", "import tensorflow", check=False, env=jax_env())
    assert blocked.returncode != 0 and "blocked in this test" in blocked.stderr
    # Up to evaluate: the export stages convert on TensorFlow (blocked here) whatever the
    # backend, and the report follows the export stages.
    repo.dispatch_record = repo.path.parent / "callback-dispatch.jsonl"
    recording = {"JAX_LOG_COMPILES": "1", "RECORD_CALLBACK_DISPATCH": str(repo.dispatch_record)}
    result = repo.dvc(
        "exp", "run", "-S", "compute.backend=jax", "evaluate", env={**jax_env(), **recording}
    )
    repo.log = result.stdout + result.stderr
    return repo


def test_every_model_stage_reruns_and_runs_on_jax_without_tensorflow(jax_run):
    assert jax_run.ran_stages(jax_run.log) == RERUN_STAGES
    for stage in STAGE_METRICS:
        # e.g. "jax 0.10.2; 2 x cpu; float32 (compute.precision); mirrored x2"
        record = jax_run.json(f"compute/{stage}.json")
        assert record["backend"] == "jax" and record["version"].startswith("0."), stage
        assert record["description"].split("; ")[1] == "2 x cpu", stage
        assert record["precision"] == "float32", stage  # the tiny pipeline's (conftest.TINY)


def test_training_stages_run_data_parallel_over_two_cpu_devices_on_jax(jax_run):
    for stage in ("train_head", "fine_tune"):
        assert jax_run.json(f"compute/{stage}.json")["description"].endswith("; mirrored x2")
    # Extraction and evaluation run on one device (see stages/features.py).
    for stage in ("features", "evaluate"):
        assert jax_run.json(f"compute/{stage}.json")["description"].endswith("; none x1")
    assert "backend=jax" in jax_run.log and "replicas=2" in jax_run.log


def test_the_stages_callbacks_let_keras_dispatch_every_step_asynchronously_on_jax(jax_run):
    """Keras' own CallbackList decides: a batch hook that is not async-safe would make every
    step wait for the device (and turn its logs into Python floats)."""
    records = [json.loads(line) for line in jax_run.dispatch_record.read_text().splitlines()]
    callbacks = {record["script"]: set() for record in records}
    for record in records:
        callbacks[record["script"]] |= set(record["callbacks"])
        assert record["train"] and record["test"] and record["predict"], record
    assert {"EpochLog", "FailOnNonFiniteLoss"} <= callbacks["train_head"]
    assert {"EpochLog", "FailOnNonFiniteLoss", "Checkpoints"} <= callbacks["fine_tune"]
    assert "_PredictProgress" in callbacks["features"]
    assert "evaluate" in callbacks


def test_each_step_compiles_once_per_stage_run_on_jax(jax_run):
    """No second batch shape reaches a compiled step. Counted over the run: train_head and
    fine_tune fit once each (a train and a test step each), features predicts its three splits
    with one model and evaluate with two, boundary predicts with one, so these totals mean one
    compilation of each step per stage run and model, plus what features compiles to time the
    run for its expected time (a predict step at the timing batch, and the training steps of a
    throwaway copy: the whole base, its top 1 and top 2 blocks)."""
    compiled = Counter(re.findall(r"Compiling jit\((\w+_step)\)", jax_run.log))
    assert compiled == {"train_step": 2 + 3, "test_step": 2, "predict_step": 3 + 1 + 1}


def test_jax_reaches_the_tensorflow_runs_accuracy_band(jax_run, pipeline):
    on_tensorflow = pipeline.json(STAGE_METRICS["evaluate"])
    on_jax = jax_run.json(STAGE_METRICS["evaluate"])
    # 60 test images: one image is 1.7 %. Same recipe and data, another backend.
    tensorflow, jax = on_tensorflow["test_accuracy"], on_jax["test_accuracy"]
    assert jax > 0.5 and abs(jax - tensorflow) <= 0.15, (tensorflow, jax)
    # The tiny pipeline's backbone has random weights (weights: null), drawn by each
    # backend's own generator: the frozen features differ, so the head alone is only
    # required to learn (chance is 0.1; seen: 0.95 on tensorflow, 0.78 on jax).
    assert on_jax["head_only"]["test_accuracy"] > 0.5


def _predict(
    repo, images: list[Path], out: Path, env: dict, model: str = "models/fine_tuned.keras"
) -> dict[str, np.ndarray]:
    """tl-predict's probabilities of all classes per image, run as a user runs it."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "transfer_pipeline.shipping.predict",
            "--model",
            model,
            "--top-k",
            "10",
        ]
        + ["--csv", str(out)]
        + [str(image) for image in images],
        cwd=repo.path,
        env={**tool_env(), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    classes = json.loads((repo.path / "data/prepared/classes.json").read_text())
    probabilities: dict[str, np.ndarray] = {}
    with open(out, newline="") as handle:
        for row in csv.DictReader(handle):
            vector = probabilities.setdefault(row["path"], np.zeros(len(classes)))
            vector[classes.index(row["class"])] = float(row["probability"])
    return probabilities


@pytest.mark.parametrize("trained_on", ["jax", "tensorflow"])
def test_a_model_trained_on_one_backend_predicts_the_same_on_the_other(
    trained_on, jax_run, pipeline, tmp_path
):
    if trained_on == "jax":
        repo, env = jax_run, {"KERAS_BACKEND": "tensorflow"}
    else:
        repo, env = pipeline, {**jax_env(devices=1), "KERAS_BACKEND": "jax"}
    expected = np.load(repo.path / "eval/predictions.npz")["fine_tuned"]  # on `trained_on`
    test_x = np.load(repo.path / "data/prepared/test_x.npy")
    images = []
    for index in range(4):
        images.append(tmp_path / f"test-{index}.png")
        Image.fromarray(test_x[index]).save(images[-1])  # lossless, at the stored size
    predicted = _predict(repo, images, tmp_path / "predictions.csv", env)
    for index, path in enumerate(images):
        np.testing.assert_allclose(predicted[str(path)], expected[index], atol=1e-4)


def test_mixed_bfloat16_on_jax_ships_float32_models_with_parity_in_every_format(pipeline, tmp_path):
    """The default path of a GPU (auto: mixed bfloat16 on Ampere and newer), forced on the
    CPU: the model stages train on jax in mixed bfloat16, every saved model is float32, and the
    export stages (TensorFlow) match evaluate's accuracy; tl-predict agrees across formats."""
    repo = copy_of(pipeline, tmp_path / "repo")
    formats = ["saved_model", "onnx", "litert", "litert_int8"]
    repo.set_params(
        {
            "compute": {"backend": "jax", "precision": "mixed_bfloat16"},
            "export": {"formats": formats},
        }
    )
    env = {"KERAS_BACKEND": "", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    result = repo.dvc("repro", env=env)
    exports = {f"export@{fmt}" for fmt in formats}
    assert repo.ran_stages(result.stdout) == RERUN_STAGES | exports | {"report"}
    for stage in MODEL_STAGES:
        record = repo.json(f"compute/{stage}.json")
        assert (record["backend"], record["precision"]) == ("jax", "mixed_bfloat16"), stage
    for model in ("feature_extractor", "head", "fine_tuned"):
        assert mixed_policies(repo.path / f"models/{model}.keras") == [], model
    evaluated = repo.json(STAGE_METRICS["evaluate"])["test_accuracy"]
    export = repo.params()["export"]
    for fmt in formats:
        metrics = repo.json(f"metrics/export/{fmt}.json")
        assert metrics["parity_images"] == 60, (fmt, metrics)
        assert metrics["keras_test_accuracy"] == round(evaluated, 6), (fmt, metrics)
        if fmt != "litert_int8":  # int8 of the untrained backbone: tests/conftest.py TINY
            difference = 100 * abs(metrics["runtime_test_accuracy"] - evaluated)
            assert difference <= export["parity_pp"], metrics
    test_x = np.load(repo.path / "data/prepared/test_x.npy")
    images = []
    for index in range(3):
        images.append(tmp_path / f"test-{index}.png")
        Image.fromarray(test_x[index]).save(images[-1])
    keras_side = _predict(repo, images, tmp_path / "keras.csv", {})
    for exported in ("models/export/onnx/model.onnx", "models/export/litert/model.tflite"):
        predicted = _predict(repo, images, tmp_path / "exported.csv", {}, model=exported)
        for path in keras_side:  # all ten probabilities; LiteRT's weights are float16
            np.testing.assert_allclose(predicted[path], keras_side[path], atol=0.011)


def test_jax_runs_keep_their_compiled_programs_for_the_next_run(jax_run, jax_compilation_cache):
    assert any(path.is_file() for path in jax_compilation_cache.rglob("*"))


def test_same_params_and_seed_give_the_same_metrics_on_jax_cpu(jax_run):
    """A forced rerun of train_head on jax (two CPU devices, data parallel) repeats the
    metrics to 1e-6: what docs/determinism.md states for jax on CPU. The rerun
    loads its compiled programs from the persistent compilation cache."""
    path = STAGE_METRICS["train_head"]
    before = jax_run.json(path)
    jax_run.dvc("repro", "-f", "-s", "train_head", env=jax_env())
    after = jax_run.json(path)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert after[key] == pytest.approx(before[key], abs=1e-6), key
    assert set(after) == set(before)


def _train_head_by_hand(repo, env: dict):
    """train_head's command from dvc.yaml, run by hand (no DVC, no launcher)."""
    arguments = ["data/prepared", "data/features", "models/head.keras", "dvclive/train_head"]
    arguments.append("compute/train_head.json")
    command = [sys.executable, "-m", "stages.train_head", *arguments]
    return repo.run(*command, check=False, env=env)


def test_a_backend_that_is_not_installed_is_one_line_naming_the_extra(tmp_path):
    repo = new_repo(tmp_path / "repo")
    repo.set_params({"compute": {"backend": "jax"}})
    result = _train_head_by_hand(
        repo, {"PYTHONPATH": str(BLOCKED_IMPORTS), "BLOCKED_IMPORTS": "jax"}
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        'error: compute.backend = jax but jax is not installed; run `pip install -e ".[jax]"` '
        "or choose another compute.backend"
    ]


# --- Several processes: JAX's multi-process runtime (compute.distribute: multi_host) ---------

LAUNCHER = "bash tests/launch_local.sh 2"  # stands in for srun: 2 processes on 127.0.0.1
MULTI_HOST = ["-S", "compute.distribute=multi_host", "-S", f"compute.launcher={LAUNCHER}"]
KILL_WORKER_AFTER_EPOCH_1 = (
    'fine_tune:1:[ "$KERAS_DISTRIBUTION_PROCESS_ID" = 1 ] && kill -KILL $PPID'
)


@pytest.fixture(scope="module")
def multi_host_run(jax_run, tmp_path_factory, subprocess_temp_folder):
    """The jax run again as 2 processes x 1 CPU device (jax_run: 1 process x 2 devices), the
    same global batches. Processes other than 0 see the project read-only (a private
    read-only mount): a write of theirs into it would fail the stage. The first `dvc exp run`
    has worker 1 killed after fine_tune's first epoch; the second resumes."""
    repo = copy_of(jax_run, tmp_path_factory.mktemp("multi-host") / "repo")
    env = {**jax_env(devices=1), "READ_ONLY_OTHERS": "1"}
    repo.killed = repo.dvc(
        "exp",
        "run",
        *MULTI_HOST,
        "evaluate",
        check=False,
        env={**env, "TL_AFTER_EPOCH": KILL_WORKER_AFTER_EPOCH_1},
    )
    repo.after_kill = {
        "files": sorted(str(p.relative_to(repo.path)) for p in repo.path.rglob("*.partial-*")),
        "model": (repo.path / "models/fine_tuned.keras").exists(),
        "state": json.loads((repo.path / ".resume/fine_tune/state.json").read_text()),
        "lock": yaml.safe_load((repo.path / "dvc.lock").read_text())["stages"],
        # The killed process's own temporary folder, with its scratch folder in it.
        "temp": [p.parent for p in subprocess_temp_folder.glob("*/fine_tune-not-written-*")],
    }
    resumed = repo.dvc("exp", "run", *MULTI_HOST, "evaluate", env=env)
    repo.log = resumed.stdout + resumed.stderr
    return repo


def test_killing_one_process_ends_the_stage_with_one_line_and_nothing_half_written(
    multi_host_run,
):
    killed = multi_host_run.killed
    assert killed.returncode != 0
    # boundary reruns only if the two processes' features differ in a bit from one process's
    # (data/features is its dependency): that is this CPU's rounding, not the test's question.
    ran = multi_host_run.ran_stages(killed.stdout)
    assert (
        {"features", "train_head", "fine_tune"}
        <= ran
        <= {
            "features",
            "train_head",
            "boundary",
            "fine_tune",
        }
    )
    errors = [line for line in stderr_lines(killed) if line.startswith("error: ")]
    # Process 1 was killed (no line); process 0's collective failed at once: one line.
    assert len(errors) == 1, stderr_lines(killed)
    assert errors[0].startswith("error: process 0 of 2: another process of this stage failed")
    assert "nothing was replaced" in errors[0] and "Traceback" not in killed.stderr
    after = multi_host_run.after_kill
    assert after["files"] == [] and not after["model"]  # no partial file, no half model
    assert len(after["temp"]) == 1  # process 1's, killed: removed by the next run
    assert after["state"]["epochs_done"] == 1  # process 0's checkpoint of epoch 1
    # DVC recorded the two stages that finished, not fine_tune.
    assert LAUNCHER in after["lock"]["train_head"]["cmd"]
    assert LAUNCHER not in after["lock"]["fine_tune"]["cmd"]


def test_the_next_run_resumes_the_multi_host_fine_tune(multi_host_run, subprocess_temp_folder):
    assert multi_host_run.ran_stages(multi_host_run.log) == {"fine_tune", "evaluate"}
    assert not any(folder.exists() for folder in multi_host_run.after_kill["temp"])
    assert not list(subprocess_temp_folder.glob("*/*-not-written-*"))
    assert "fine_tune: resuming after epoch 1" in multi_host_run.log
    assert multi_host_run.json(STAGE_METRICS["fine_tune"])["resumed_after_epoch"] == 1


def test_two_processes_give_the_metrics_of_one_process_over_two_devices(multi_host_run, jax_run):
    """The same global batches in the same order, the same seed, the same shapes per device:
    the same computation, up to the order in which float32 sums are taken (the all-reduce
    across processes, kernels chosen by the CPU's instructions). Measured on an avx512 CPU:
    equal to the last digit, features and predictions bit for bit; on an avx2-only CPU, 6 of
    600 probabilities differed by up to 2.3e-6.

    The tolerances, from float32: the deepest sums are ResNet50's 3 x 3 x 512 = 4,608-term
    convolutions and the 2,048-wide classifier. Reordering an n-term sum moves it by about
    sqrt(n) x 2^-24 of its terms' size when the roundings are independent (68 x 6e-8 = 4e-6
    for n = 4,608), and the softmax's derivative is at most 1/2: 1e-5 for a probability or a
    feature (relative), 1e-5 relative for a loss (a mean of logs of such probabilities).
    Accuracies are counts over the same images: equal, unless a near tie flips, which the
    argmax check below rules out. A stage that fed other rows, another order or another seed
    moves these numbers by far more (a whole trained head, 1e-2 and up)."""
    for stage in ("train_head", "fine_tune", "evaluate"):
        one, two = jax_run.json(STAGE_METRICS[stage]), multi_host_run.json(STAGE_METRICS[stage])
        timings = ("seconds", "images_per_s")
        numbers = [k for k, v in one.items() if isinstance(v, float) and k not in timings]
        assert numbers, stage
        for key in numbers:
            expected = pytest.approx(one[key], abs=1e-6, rel=0 if "accuracy" in key else 1e-5)
            assert two[key] == expected, (stage, key, two[key], one[key])
        described = multi_host_run.json(f"compute/{stage}.json")["description"]
        assert described.endswith("; multi_host x2 (2 processes)"), stage
    for split in ("train", "val", "test"):
        np.testing.assert_allclose(
            np.load(multi_host_run.path / f"data/features/{split}.npy"),
            np.load(jax_run.path / f"data/features/{split}.npy"),
            rtol=1e-5,
            atol=1e-6,
        )
    one, two = (np.load(r.path / "eval/predictions.npz") for r in (jax_run, multi_host_run))
    np.testing.assert_allclose(two["fine_tuned"], one["fine_tuned"], rtol=0, atol=1e-5)
    top_two = np.sort(one["fine_tuned"], axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 2e-5  # away from near ties, the same class
    np.testing.assert_array_equal(
        two["fine_tuned"].argmax(1)[clear], one["fine_tuned"].argmax(1)[clear]
    )
    np.testing.assert_array_equal(two["labels"], one["labels"])


def test_only_process_0_writes_and_prints(multi_host_run):
    """Process 1 ran every stage with the project mounted read-only, and the stages passed:
    it wrote nothing there. The epoch lines are process 0's alone; each process says it
    joined."""
    read_only = f"launch_local: process 1 sees {multi_host_run.path} read-only"
    assert multi_host_run.log.count(read_only) == 2  # fine_tune's and evaluate's process 1
    assert multi_host_run.log.count("fine_tune epoch 2/2 ") == 1
    assert "process=0/2" in multi_host_run.log and "process=1/2" in multi_host_run.log
    lock = yaml.safe_load((multi_host_run.path / "dvc.lock").read_text())["stages"]
    for stage in MODEL_STAGES:
        assert lock[stage]["cmd"].strip().startswith(f"{LAUNCHER} python -m stages."), stage


def test_a_launcher_that_gives_no_process_index_is_one_line_before_keras_loads(tmp_path):
    """The stage run as a launcher without the variables would run it (`env` runs it once)."""
    repo = new_repo(tmp_path / "repo")
    compute = {"backend": "jax", "distribute": "multi_host", "launcher": "env"}
    repo.set_params({"compute": compute})
    unset = ("KERAS_DISTRIBUTION_PROCESS_ID", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK")
    result = _train_head_by_hand(repo, {name: "" for name in unset})
    assert result.returncode == 1
    (line,) = stderr_lines(result)
    assert "keras" not in result.stderr.replace(line, "").lower()  # nothing loaded before
    assert line.startswith(
        "error: compute.distribute = multi_host but this process has no process index from "
        "its launcher (none of KERAS_DISTRIBUTION_PROCESS_ID, SLURM_PROCID, "
        "OMPI_COMM_WORLD_RANK is set)"
    )
    assert "compute.launcher must start every process with them (srun and mpirun do)" in line
