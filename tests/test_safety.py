"""The pipeline never destroys what it did not make, and every fault is one line, nothing lost.

Stages and `tl-predict` run as a user runs them (real subprocesses, real `dvc`), on copies of
the tiny pipeline; a run still writing, a killed `dvc` or a killed stage process on small
projects of their own.
"""

import fcntl
import hashlib
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, TARBALL, TINY, Repo, new_repo, stderr_lines, tool_env
from PIL import Image
from synthetic import write_cifar10_tarball

from transfer_pipeline.plumbing.dvcfile import declared_outputs
from transfer_pipeline.plumbing.errors import PipelineError
from transfer_pipeline.plumbing.output_checks import MARKER, check_replaceable
from transfer_pipeline.plumbing.stage_outputs import StageOutputs


def _run(repo, *args, env=None, limit_bytes=None):
    def limit():  # a tiny file-size limit: "disk full" without root (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=repo.path,
        env={**tool_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit if limit_bytes else None,
    )


def _one_error_line(result) -> str:
    ours = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert len(ours) == 1, result.stderr
    return ours[0]


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _no_partials(repo) -> None:
    assert not [p for p in repo.path.rglob(".partial-*") if ".dvc" not in p.parts]


@pytest.fixture
def photos(pipeline_copy):
    """A user's folder of photos inside the project, not tracked by anything."""
    folder = pipeline_copy.path / "my_photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(
            folder / f"photo_{i}.png"
        )
    return folder


# --------------------------------------------------------------------------- the rule


def test_predict_csv_naming_the_photo_folder_refuses_and_keeps_every_photo(pipeline_copy, photos):
    before = _tree(photos)
    result = _run(
        pipeline_copy, "-m", "transfer_pipeline.shipping.predict", photos, "--csv", photos
    )
    assert "give a file name ending in .csv" in _one_error_line(result)
    assert _tree(photos) == before and result.stdout == ""


def test_predict_csv_naming_an_input_image_refuses_and_keeps_it(pipeline_copy, photos):
    image = photos / "photo_0.png"
    before = image.read_bytes()
    result = _run(pipeline_copy, "-m", "transfer_pipeline.shipping.predict", photos, "--csv", image)
    _one_error_line(result)
    assert image.read_bytes() == before


def test_predict_csv_that_is_an_input_folder_refuses(pipeline_copy, photos):
    folder = photos.rename(photos.with_name("photos.csv"))  # a folder that looks like a CSV
    before = _tree(folder)
    result = _run(
        pipeline_copy, "-m", "transfer_pipeline.shipping.predict", folder, "--csv", folder
    )
    assert "it is or contains the input" in _one_error_line(result)
    assert _tree(folder) == before


def _whole_tree(repo) -> dict[str, str]:
    """MD5 of every file of the checkout, .git and the DVC cache included (not bytecode)."""
    return {k: v for k, v in _tree(repo.path).items() if "__pycache__" not in k}


def test_stage_run_by_hand_on_the_data_folder_deletes_nothing(pipeline_copy):
    repo = pipeline_copy
    mine = repo.path / "data/new_images/cats"  # a folder not yet added to DVC
    mine.mkdir(parents=True)
    (mine / "cat.png").write_bytes(b"my cat")
    before = _whole_tree(repo)
    result = _run(repo, "-m", "stages.prepare", "data", "metrics/prepare.json")
    line = _one_error_line(result)
    assert "prepare: refusing to write data: dvc.yaml declares only" in line
    assert "data/prepared, metrics/prepare.json" in line
    assert _whole_tree(repo) == before


def test_a_stage_writes_no_file_that_dvc_yaml_does_not_declare_for_it(pipeline_copy):
    """Run by hand with any existing file as an output: refused in one line before any work,
    and every file of the checkout (.git and the DVC cache included) is unchanged."""
    repo = pipeline_copy
    before = _whole_tree(repo)
    for target in (
        "params.yaml",
        "dvc.yaml",
        "dvc.lock",
        "stages/prepare.py",
        ".git/config",
        TARBALL,
        "weights/new.h5",
        "metrics/features.json",  # declared, but by another stage
    ):
        result = _run(repo, "-m", "stages.prepare", "data/prepared", target)
        line = _one_error_line(result)
        assert f"prepare: refusing to write {target}: dvc.yaml declares only" in line, target
        assert result.stdout == ""
    assert _whole_tree(repo) == before


def test_the_dvclive_folder_must_be_the_declared_one(pipeline_copy):
    """DVCLive cleans the folder it is given: `.` would delete params.yaml and dvc.yaml."""
    repo = pipeline_copy
    notes = repo.path / "my_notes"
    notes.mkdir()
    (notes / "metrics.json").write_text('{"mine": 1}')
    before = _whole_tree(repo)
    inputs = ["data/prepared", "data/features", "models/head.keras"]
    for live in (".", "my_notes", "dvclive/fine_tune"):
        result = _run(repo, "-m", "stages.train_head", *inputs, live, "compute/train_head.json")
        line = _one_error_line(result)
        assert f"train_head: refusing to write the DVCLive folder {live}:" in line
        assert "dvclive/train_head/metrics.json, dvclive/train_head/plots" in line
    assert _whole_tree(repo) == before


def test_outputs_under_data_raw_or_weights_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for target in ("data/raw/cifar.tar.gz", "weights/new.h5"):
        with pytest.raises(PipelineError, match="which holds your data"):
            check_replaceable(Path(target), folder=False)


def test_what_dvc_yaml_declares_for_a_foreach_stage(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    assert declared_outputs("export@onnx") == ["models/export/onnx", "metrics/export/onnx.json"]
    assert declared_outputs("train_head") == [
        "models/head.keras",
        "compute/train_head.json",
        "dvclive/train_head/metrics.json",
        "dvclive/train_head/plots",
    ]
    with pytest.raises(PipelineError, match="is a foreach stage: name its item"):
        declared_outputs("export")
    with pytest.raises(PipelineError, match="no dvc.yaml declaring this stage"):
        declared_outputs("train_head@onnx")


def test_a_folder_output_replaces_only_empty_or_marked_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    users = tmp_path / "users"
    users.mkdir()
    (users / "thesis.txt").write_text("mine")
    with pytest.raises(PipelineError, match="was not made by this pipeline"):
        check_replaceable(users, folder=True)
    with pytest.raises(PipelineError, match="it is a folder and this output is a file"):
        check_replaceable(users, folder=False)
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", folder=True)
    with StageOutputs("test", folders=[tmp_path / "made"]) as outputs:
        (outputs.path(tmp_path / "made") / "a.npy").write_bytes(b"1")
    assert (tmp_path / "made" / MARKER).is_file()
    with StageOutputs("test", folders=[tmp_path / "made"]) as outputs:  # its own: replaced
        (outputs.path(tmp_path / "made") / "b.npy").write_bytes(b"2")
    assert sorted(p.name for p in (tmp_path / "made").iterdir()) == [MARKER, "b.npy"]
    assert (users / "thesis.txt").read_text() == "mine"


# --------------------------------------------------------------------------- one line, nothing lost


def test_disk_full_while_writing_the_split_replaces_nothing(pipeline_copy):
    repo = pipeline_copy
    good = repo.snapshot()
    result = _run(
        repo, "-m", "stages.prepare", "data/prepared", "metrics/prepare.json", limit_bytes=1 << 18
    )
    line = _one_error_line(result)
    assert "prepare: writing" in line and "data/prepared" in line
    assert "nothing was replaced" in line
    assert "file size limit reached" in line
    assert repo.snapshot() == good
    _no_partials(repo)


def test_disk_full_while_writing_features_replaces_nothing(pipeline_copy):
    repo = pipeline_copy
    good = repo.snapshot()
    args = ["data/prepared", "data/features", "models/feature_extractor.keras"]
    result = _run(
        repo,
        "-m",
        "stages.features",
        *args,
        "metrics/features.json",
        "compute/features.json",
        limit_bytes=1 << 18,
    )
    line = _one_error_line(result)
    assert "features: writing" in line and "nothing was replaced" in line
    assert repo.snapshot() == good
    _no_partials(repo)


def test_truncated_model_names_the_file_and_the_stage_that_rebuilds_it(pipeline_copy):
    repo = pipeline_copy
    good = repo.snapshot()
    head = repo.path / "models/head.keras"
    head.write_bytes(head.read_bytes()[: head.stat().st_size // 2])
    result = repo.dvc("repro", "-s", "fine_tune", check=False)
    line = _one_error_line(result)
    assert "models/head.keras is not a readable Keras model" in line
    assert "dvc repro -f -s train_head" in line
    hint = re.search(r"`(dvc checkout [^`]+)`", line).group(1)
    assert hint == "dvc checkout --force models/head.keras"
    repo.run(sys.executable, "-m", *hint.split())  # the command as printed
    restored = repo.dvc("repro")
    assert repo.ran_stages(restored.stdout) == set(), restored.stdout
    assert repo.snapshot() == good


def test_corrupt_features_fail_evaluate_and_nothing_is_recorded(pipeline_copy):
    repo = pipeline_copy
    good = repo.snapshot()
    features = repo.path / "data/features/test.npy"
    features.write_bytes(features.read_bytes()[:200])  # header intact, rows missing
    lock = (repo.path / "dvc.lock").read_text()
    result = repo.dvc("repro", "-s", "evaluate", check=False)
    line = _one_error_line(result)
    assert "data/features/test.npy" in line and "truncated or corrupt" in line
    assert "dvc repro -f -s features" in line
    assert (repo.path / "dvc.lock").read_text() == lock
    repo.dvc("checkout", "--force", "data/features")
    restored = repo.dvc("repro")
    assert repo.ran_stages(restored.stdout) == set(), restored.stdout
    assert repo.snapshot() == good


def test_predict_with_the_head_instead_of_the_classifier(pipeline, tmp_path):
    image = tmp_path / "image.png"
    Image.new("RGB", (8, 8)).save(image)
    result = _run(
        pipeline, "-m", "transfer_pipeline.shipping.predict", "--model", "models/head.keras", image
    )
    assert "is not an image classifier" in _one_error_line(result)


def test_predict_with_a_corrupt_model_file(pipeline, tmp_path):
    broken = tmp_path / "broken.keras"
    broken.write_bytes((pipeline.path / "models/fine_tuned.keras").read_bytes()[:5000])
    image = tmp_path / "image.png"
    Image.new("RGB", (8, 8)).save(image)
    result = _run(pipeline, "-m", "transfer_pipeline.shipping.predict", "--model", broken, image)
    assert f"{broken} is not a readable Keras model" in _one_error_line(result)


def test_unwritable_csv_fails_before_any_prediction(pipeline, tmp_path):
    image = tmp_path / "image.png"
    Image.new("RGB", (8, 8)).save(image)
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("a file, not a folder")
    result = _run(
        pipeline,
        "-m",
        "transfer_pipeline.shipping.predict",
        image,
        "--csv",
        not_a_folder / "out.csv",
    )
    assert f"cannot write {not_a_folder / 'out.csv'}" in _one_error_line(result)
    assert result.stdout == ""


def test_ctrl_c_during_training_says_interrupted_and_replaces_nothing(pipeline_copy):
    repo = pipeline_copy
    repo.set_params({"lr": 0.002})
    good = repo.snapshot()
    interrupt = {"TL_AFTER_EPOCH": "train_head:1:kill -INT $PPID"}
    result = repo.dvc("repro", check=False, env=interrupt)
    ours = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert "error: interrupted; nothing replaced" in ours, result.stderr
    assert "130" in result.stderr  # DVC names the stage's exit code
    _no_partials(repo)
    repo.back_to_last_good(good)


def test_params_edited_while_a_stage_runs_fail_it_and_nothing_is_recorded(pipeline_copy):
    repo = pipeline_copy
    repo.set_params({"lr": 0.002})
    lock = (repo.path / "dvc.lock").read_text()
    good = repo.snapshot()
    edit = {"TL_AFTER_EPOCH": "train_head:1:sed -i 's/^lr: .*/lr: 0.003/' params.yaml"}
    result = repo.dvc("repro", check=False, env=edit)
    line = _one_error_line(result)
    assert "params.yaml changed while train_head ran; nothing recorded" in line
    assert "run `dvc repro` again" in line
    assert (repo.path / "dvc.lock").read_text() == lock
    repo.back_to_last_good(good)


# --------------------------------------------------------------------------- run by hand, killed


TRAIN_HEAD = ["-m", "stages.train_head", "data/prepared", "data/features", "models/head.keras"]


def test_a_failed_stage_run_by_hand_keeps_its_dvclive_files_and_clears_stale_partials(
    pipeline_copy,
):
    """A NaN loss by hand: DVCLive wrote into its partial folder, so dvclive/train_head/ (metrics
    and every curve) is the last good one; the partials a kill left before are gone."""
    repo = pipeline_copy
    repo.set_params({"lr": 1e30})
    before = repo.snapshot()
    # Where a kill -9 leaves them: the staging folder inside the stage's declared plots/
    # folder, and a sibling as earlier versions wrote.
    staging = repo.path / "dvclive/train_head/plots/.partial-train_head"
    (staging / "train_head").mkdir(parents=True)
    (staging / "train_head/metrics.json").write_text("{}")
    (staging / "head.keras").write_bytes(b"left by kill -9")
    (repo.path / "models/.partial-head.keras").write_bytes(b"left by kill -9")
    result = _run(repo, *TRAIN_HEAD, "dvclive/train_head", "compute/train_head.json")
    assert "train_head: the loss became nan in epoch 1" in _one_error_line(result)
    assert repo.snapshot() == before
    assert (repo.path / "dvclive/train_head/plots/metrics/loss.tsv").is_file()
    _no_partials(repo)


def test_a_read_only_checkout_is_one_line_before_any_work(pipeline_copy):
    """The checkout mounted read-only (a private mount namespace, as a read-only share
    would be): the stage names the path it cannot write before loading data or Keras."""
    repo = pipeline_copy
    before = _whole_tree(repo)
    command = " ".join(
        [sys.executable, *TRAIN_HEAD, "dvclive/train_head", "compute/train_head.json"]
    )
    script = (
        f"mount --bind {repo.path} {repo.path} && mount -o remount,ro,bind {repo.path} "
        f"&& cd {repo.path} && exec {command}"
    )
    result = subprocess.run(
        ["unshare", "--map-root-user", "--mount", "sh", "-c", script],
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = _one_error_line(result)
    lock = ".dvc/tmp/transfer-pipeline-train_head.lock"  # the first thing a stage writes
    assert line.startswith(f"error: train_head: cannot write {lock} (Read-only file system)")
    assert "give a writable path" in line and result.stdout == ""
    assert "keras" not in result.stderr.replace(line, "").lower()  # nothing loaded before
    assert _whole_tree(repo) == before


def test_partial_files_are_ignored_by_dvc_and_never_recorded(pipeline_copy):
    """What a kill -9 of a stage run by hand leaves (its staging folder inside its own folder
    output) changes no stage's dependencies: `dvc repro` reruns nothing (train_head depends on
    data/features, report on dvclive/train_head/plots) and dvc.lock stays as it was."""
    repo = pipeline_copy
    for staging in (
        "data/features/.partial-features",
        "dvclive/train_head/plots/.partial-train_head",
    ):
        (repo.path / staging).mkdir()
        (repo.path / staging / "half.npy").write_bytes(b"half")
    lock = (repo.path / "dvc.lock").read_text()
    result = repo.dvc("repro")
    assert repo.ran_stages(result.stdout) == set(), result.stdout
    assert (repo.path / "dvc.lock").read_text() == lock and ".partial-" not in lock


def test_no_partial_outlives_a_killed_export_that_dvc_restores_from_the_run_cache(pipeline_copy):
    """export@saved_model killed (kill -9) once it has written its whole model and metrics,
    before it moved them: the next `dvc repro` restores the stage from DVC's run-cache without
    running it, and no `.partial-*` is left anywhere, since the staging folder is inside the
    stage's declared output, which DVC deletes before it restores the stage."""
    repo = pipeline_copy
    good = repo.snapshot()
    kill = {"TL_BEFORE_REPLACE": "export@saved_model:kill -KILL $PPID"}
    forced = repo.dvc("repro", "-f", "-s", "export@saved_model", check=False, env=kill)
    assert forced.returncode != 0 and "Running stage 'export@saved_model'" in forced.stdout
    staging = repo.path / "models/export/saved_model/.partial-export@saved_model"
    assert (staging / "saved_model.json").is_file(), forced.stderr  # what the kill left:
    assert any(path.is_file() for path in (staging / "saved_model").rglob("*"))  # all of it
    assert not list((repo.path / "metrics/export").glob(".partial-*"))  # report's dependency

    result = repo.dvc("repro")
    assert repo.restored_stages(result.stdout) == {"export@saved_model"}, result.stdout
    assert repo.ran_stages(result.stdout) == set(), result.stdout
    _no_partials(repo)
    assert repo.snapshot() == good
    assert repo.dvc("status", "--json").stdout.strip() == "{}"


def test_predict_outside_the_project_says_to_pass_classes_and_that_works(pipeline, tmp_path):
    """On a serving host there is no dvc.yaml to repro: the hint is --classes, run as printed."""
    host = tmp_path / "host"
    host.mkdir()
    shutil.copy(pipeline.path / "models/fine_tuned.keras", host / "model.keras")
    image = host / "image.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(image)

    def predict(*args):  # the installed command, in a folder that is not the project
        command = ["tl-predict", "--model", "model.keras", *map(str, args), "image.png"]
        return subprocess.run(command, cwd=host, env=tool_env(), capture_output=True, text=True)

    line = _one_error_line(predict())
    assert "data/prepared/classes.json not found; pass --classes with the classes.json" in line
    result = predict("--classes", pipeline.path / "data/prepared/classes.json")
    assert result.returncode == 0 and result.stdout.startswith("image.png: "), result.stderr


def test_predict_csv_replaces_only_a_csv_it_wrote(pipeline_copy, photos):
    mine = pipeline_copy.path / "budget.csv"
    mine.write_text("month,amount\njan,3\n")
    result = _run(pipeline_copy, "-m", "transfer_pipeline.shipping.predict", photos, "--csv", mine)
    assert "refusing to replace" in _one_error_line(result) and "did not write it" in result.stderr
    assert mine.read_text() == "month,amount\njan,3\n"


# --------------------------------------------------- another run still writing, a killed process


def _project(tmp_path) -> Repo:
    """dvc.yaml, params.yaml and the tiny tarball: enough to run `stages.prepare` by hand with
    this checkout's code (no git; of DVC only its folder, where a stage takes its lock)."""
    project = Repo(tmp_path / "project")
    (project.path / ".dvc").mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO_ROOT / name, project.path / name)
    tarball = write_cifar10_tarball(project.path / TARBALL)
    md5 = hashlib.md5(tarball.read_bytes()).hexdigest()
    project.set_params({**TINY, "data": {**TINY["data"], "md5": md5}})
    return project


def _python(cwd: Path, *args: str, temp: Path | None = None, **popen) -> subprocess.Popen:
    """A Python process with this checkout's code (and ``temp`` as its temporary folder)."""
    env = {**tool_env(), "PYTHONPATH": str(REPO_ROOT)}
    if temp is not None:
        env["TMPDIR"] = str(temp)
    return subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, **popen
    )


def _finished(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr or "")


# Takes prepare's lock as the stage does, writes half a file into its staging folder and waits
# for its stdin to close: the stage process of a killed `dvc`, still writing.
WRITING_PREPARE = """
import sys
from pathlib import Path
from transfer_pipeline.plumbing.stage_outputs import StageOutputs
prepared = Path("data/prepared")
outputs = StageOutputs.of_stage("prepare", files=[Path("metrics/prepare.json")], folders=[prepared])
with outputs:
    (outputs.path(prepared) / "half.npy").write_bytes(b"half")
    print("writing", flush=True)
    sys.stdin.read()
"""
PREPARE = ("-m", "stages.prepare", "data/prepared", "metrics/prepare.json")


def test_a_run_still_writing_refuses_the_next_in_one_line_and_a_killed_one_is_cleared(tmp_path):
    """While another run of the same stage still writes (`dvc` killed, its stage process alive)
    the stage says so in one line naming that process and touches none of its files. Once that
    process is killed its lock is free: the next run removes its staging folder, runs, and
    leaves no `.partial-*` behind (staging folder or lock file)."""
    project = _project(tmp_path)
    writing = _python(project.path, "-c", WRITING_PREPARE, stdin=subprocess.PIPE)
    try:
        assert writing.stdout.readline() == "writing\n"
        before = _tree(project.path)
        assert "data/prepared/.partial-prepare/prepared/half.npy" in before
        refused = _finished(_python(project.path, *PREPARE, stderr=subprocess.PIPE))
        assert _one_error_line(refused) == (
            f"error: prepare: another run of this stage (pid {writing.pid}) is still writing "
            f"metrics/prepare.json, data/prepared; wait for it or stop it (kill {writing.pid}), "
            "then rerun"
        )
        assert refused.stdout == "" and _tree(project.path) == before
    finally:
        writing.kill()  # as the line says
        writing.wait()
    result = _finished(_python(project.path, *PREPARE, stderr=subprocess.PIPE))
    assert result.returncode == 0, result.stderr
    assert (project.path / "data/prepared/classes.json").is_file()
    assert not list(project.path.rglob(".partial-*"))
    assert not list(project.path.rglob("*.lock"))  # .dvc/tmp/transfer-pipeline-prepare.lock


def test_dvc_killed_alone_then_rerun_names_its_stage_process_still_writing(tmp_path):
    """The case as it happens: `kill -9` of `dvc` alone while its stage process is writing,
    then `dvc repro` again. When DVC runs the stage (here forced), the stage says in one line
    that the first stage process still writes; when DVC restores it from its run-cache, that
    process, once it goes on, finds its staging folder gone (DVC deleted the outputs) and
    replaces nothing: the restored outputs stay, and nothing is left behind."""
    repo = new_repo(tmp_path / "repo")
    repo.dvc("repro", "prepare")
    good = repo.snapshot()
    ready, go = tmp_path / "ready", tmp_path / "go"
    for fifo in (ready, go):
        os.mkfifo(fifo)
    # Read and write ends held here: neither side of a FIFO blocks on opening, and `cat`
    # ends when go is closed. prepare, all written and nothing moved, says its pid and waits.
    ready_end, go_end = os.open(ready, os.O_RDWR), os.open(go, os.O_RDWR)
    hook = f"prepare:echo $PPID > {ready} && cat {go} > /dev/null"
    dvc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "-f", "prepare"],
        cwd=repo.path,
        env={**tool_env(), "TL_BEFORE_REPLACE": hook},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert select.select([ready_end], [], [], 300)[0], "prepare never reached its end"
        writing = int(os.read(ready_end, 64))
        dvc.kill()  # dvc alone: its stage process lives on, still holding its lock
        dvc.wait()
        lock = os.open(repo.path / ".dvc/tmp/transfer-pipeline-prepare.lock", os.O_RDONLY)
        rerun = repo.dvc("repro", "-f", "prepare", check=False)
        assert _one_error_line(rerun) == (
            f"error: prepare: another run of this stage (pid {writing}) is still writing "
            f"metrics/prepare.json, data/prepared; wait for it or stop it (kill {writing}), "
            "then rerun"
        )
        restored = repo.dvc("repro", "prepare")
        assert repo.restored_stages(restored.stdout) == {"prepare"}, restored.stdout
        assert repo.snapshot() == good
    finally:
        os.close(go_end)  # the first stage process goes on, and ends
        os.close(ready_end)
    fcntl.flock(lock, fcntl.LOCK_EX)  # ... and has ended: its lock is free
    os.close(lock)
    assert repo.snapshot() == good  # it replaced nothing
    assert not list(repo.path.rglob(".partial-*"))
    assert not list((repo.path / ".dvc/tmp").glob("transfer-pipeline-*"))
    assert repo.dvc("status", "prepare", "--json").stdout.strip() == "{}"


# fine_tune's outputs as the stage writes them (DVCLive into its staging folder): one epoch
# logged, then it waits for a line on stdin (DVC deletes, and may restore, the stage's outputs
# meanwhile), logs the next epoch, writes the rest and ends: the stage process of a killed `dvc`.
ORPHANED_FINE_TUNE = """
import sys
from pathlib import Path
from transfer_pipeline.plumbing.stage_outputs import StageOutputs
from transfer_pipeline.plumbing.errors import exit_on_pipeline_error
from transfer_pipeline.running.live import log_epoch, open_live

@exit_on_pipeline_error
def main():
    live_folder, compute = Path("dvclive/fine_tune"), Path("compute/fine_tune.json")
    outputs = StageOutputs.of_stage("fine_tune", files=[compute], live=live_folder)
    epoch = dict(loss=1.0, accuracy=0.5, val_loss=1.0, val_accuracy=0.5)
    with outputs:
        live = open_live(outputs.path(live_folder))
        log_epoch(live, epoch)
        print(outputs.staging, flush=True)
        sys.stdin.readline()
        log_epoch(live, epoch)  # DVCLive makes the folders it writes into: the staging again
        outputs.write_json(compute, {"epochs": 2})
        live.end()

main()
"""


@pytest.mark.parametrize("dvc_then", ["restored", "ran"])
def test_a_staging_folder_an_orphaned_stage_made_again_is_removed_when_it_ends(tmp_path, dvc_then):
    """`kill -9` of `dvc` alone during fine_tune, then `dvc repro`: DVC deletes the stage's
    outputs, its staging folder with them, and restores them from its run-cache (or runs the
    stage, which is refused while the old process holds the lock). The old stage process goes
    on, and DVCLive makes the staging folder again for its next epoch. When that process ends
    it replaces nothing and removes what it made again: the next `dvc repro` never runs a
    stage it restored, so nothing else would (before: the folder outlived that `dvc repro`,
    and a staging folder made again on the deleted one's inode passed for it, so the restored
    outputs were replaced)."""
    project = _project(tmp_path)
    good = {  # the last good run's outputs: what DVC restores
        "dvclive/fine_tune/metrics.json": "{}\n",
        "dvclive/fine_tune/plots/metrics/loss.tsv": "step\tloss\n0\t0.5\n",
    }

    def write_good():
        for name, text in good.items():
            (project.path / name).parent.mkdir(parents=True, exist_ok=True)
            (project.path / name).write_text(text)

    write_good()
    writing = _python(
        project.path, "-c", ORPHANED_FINE_TUNE, stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        staging = project.path / writing.stdout.readline().strip()
        assert staging.parent == project.path / "dvclive/fine_tune/plots"
        assert (staging / "fine_tune/plots/metrics/loss.tsv").is_file()  # the first epoch
        shutil.rmtree(project.path / "dvclive/fine_tune/plots")  # DVC's remove_outs
        (project.path / "dvclive/fine_tune/metrics.json").unlink()
        if dvc_then == "restored":
            write_good()
        writing.stdin.write("go on\n")
        writing.stdin.flush()
        ended = _finished(writing)
    finally:
        writing.kill()
        writing.wait()
    assert _one_error_line(ended) == (
        f"error: fine_tune: {staging.relative_to(project.path)} was removed while this run "
        "wrote it (a `dvc repro` or `dvc checkout` since it started?); nothing was replaced"
    )
    assert not list(project.path.rglob(".partial-*"))
    assert not list((project.path / ".dvc/tmp").glob("transfer-pipeline-*"))  # lock released
    assert not (project.path / "compute/fine_tune.json").exists()
    if dvc_then == "restored":
        assert _tree(project.path / "dvclive") == {
            name.removeprefix("dvclive/"): hashlib.md5(text.encode()).hexdigest()
            for name, text in good.items()
        }
    else:  # plots/ made again, for the staging folder alone: removed with it
        assert not (project.path / "dvclive/fine_tune/plots").exists()


OWN_FOLDER = re.compile(r"tpipe-[a-z0-9_]{8}")  # tempfile.mkdtemp's name: not guessable

# A process's own temporary folder with what a stage leaves there (a multi-host process's
# scratch folder, an autograph source); then alive until its stdin closes, or killed.
TEMP_USER = """
import os, signal, sys, tempfile
from transfer_pipeline.plumbing.locks import use_own_temp_folder
use_own_temp_folder("fine_tune")
tempfile.mkdtemp(prefix="fine_tune-not-written-")
open(os.path.join(tempfile.gettempdir(), "__autograph_generated_file1.py"), "w").close()
print(tempfile.gettempdir(), flush=True)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()
"""


def test_the_next_run_removes_the_temporary_files_of_a_killed_process_not_a_live_ones(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    live = _python(tmp_path, "-c", TEMP_USER, "live", temp=temp, stdin=subprocess.PIPE)
    try:
        live_folder = Path(live.stdout.readline().strip())
        process = _python(tmp_path, "-c", TEMP_USER, "kill", temp=temp)
        killed = _finished(process)
        assert killed.returncode == -signal.SIGKILL
        killed_folder = Path(killed.stdout.strip())
        assert killed_folder.parent == temp and OWN_FOLDER.fullmatch(killed_folder.name)
        assert set(temp.iterdir()) == {killed_folder, live_folder}
        assert list(killed_folder.glob("fine_tune-not-written-*"))  # what the kill left
        # The next run of any stage (here its --help) removes the dead process's folder.
        result = _finished(_python(tmp_path, *PREPARE[:2], "--help", temp=temp))
        assert result.returncode == 0 and result.stdout.startswith("usage:")
        assert list(temp.iterdir()) == [live_folder]
        assert (live_folder / "__autograph_generated_file1.py").is_file()
    finally:
        live.stdin.close()
        live.wait()
    assert list(temp.iterdir()) == []  # the live one removed its own when it ended


def _plant_ours(temp: Path, name: str) -> Path:
    """A folder exactly like a dead process's own (mode 0700, an unheld lock, a file left)."""
    folder = temp / name
    folder.mkdir(mode=0o700)
    (folder / ".lock").write_bytes(b"4242 elsewhere\n")
    (folder / "__autograph_generated_file1.py").write_bytes(b"left by a killed process\n")
    return folder


def _everything(root: Path, *leave_out: Path) -> dict[str, tuple]:
    """Every path under ``root`` (symlinks not followed): type, mode, owner, bytes or target."""
    seen = {}
    for folder, names, files in os.walk(root):
        for name in names + files:
            path = Path(folder) / name
            if any(path.is_relative_to(left) for left in leave_out):
                continue
            info = os.lstat(path)
            if path.is_symlink():
                what = os.readlink(path)
            elif path.is_file():
                what = path.read_bytes()
            else:
                what = None
            seen[str(path.relative_to(root))] = (info.st_mode, info.st_uid, what)
    return seen


def _next_run(cwd: Path, temp: Path) -> Path:
    """The start of the next run of any entry point: its own folder (the sweep ran first)."""
    result = _finished(_python(cwd, "-c", NEXT_RUN, temp=temp, stderr=subprocess.PIPE))
    assert result.returncode == 0 and not result.stderr, result.stderr
    return temp / result.stdout.split()[0]


def test_the_sweep_follows_no_symlink_and_touches_only_folders_exactly_like_ours(tmp_path):
    """On a shared /tmp anyone can plant a tpipe-* name: the sweep removes only a real folder
    of this user, closed to others, whose lock is a file of its own no live process holds."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    target = tmp_path / "bashrc"  # what a planted symlink would have the sweep overwrite
    target.write_bytes(b"alias ls='ls -F'\n")
    elsewhere = _plant_ours(tmp_path, "tpipe-elsewher")  # ours in every way, but not in temp
    dead = _plant_ours(temp, "tpipe-dead0000")  # the one to remove: the sweep did run
    symlinked_lock = _plant_ours(temp, "tpipe-symlock0")
    (symlinked_lock / ".lock").unlink()
    (symlinked_lock / ".lock").symlink_to(target)
    hard_linked_lock = _plant_ours(temp, "tpipe-hardlnk0")
    (hard_linked_lock / ".lock").unlink()
    os.link(target, hard_linked_lock / ".lock")
    (temp / "tpipe-symdir00").symlink_to(elsewhere)
    _plant_ours(temp, "tpipe-open0000").chmod(0o755)  # others may enter: not made by mkdtemp
    _plant_ours(temp, "tpipe-notmkdtemp")  # not a name mkdtemp gives
    (temp / "tpipe-file0000").write_bytes(b"a file with our prefix\n")
    if os.geteuid() == 0:  # as root (CI): a folder of another user
        foreign = _plant_ours(temp, "tpipe-nobody00")
        for path in (foreign, *foreign.iterdir()):
            os.chown(path, 65534, 65534)
    before = _everything(tmp_path, dead)
    live = _python(tmp_path, "-c", TEMP_USER, "live", temp=temp, stdin=subprocess.PIPE)
    try:  # a live process's folder (its start swept too)
        live_folder = Path(live.stdout.readline().strip())
        assert OWN_FOLDER.fullmatch(live_folder.name) and live_folder.parent == temp
        own = _next_run(tmp_path, temp)
        assert not dead.exists()
        assert (live_folder / "__autograph_generated_file1.py").is_file()  # kept
        assert _everything(tmp_path, own, live_folder) == before  # every other byte as it was
        assert target.read_bytes() == b"alias ls='ls -F'\n"
    finally:
        live.stdin.close()
        live.wait()
    assert not live_folder.exists()  # the live one removed its own when it ended


@pytest.mark.skipif(os.geteuid() != 0, reason="making another user's folder needs root")
def test_the_sweep_leaves_a_folder_of_another_user_alone(tmp_path):
    """As root (in CI): a dead folder exactly like ours, but owned by nobody, stays."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    foreign = _plant_ours(temp, "tpipe-nobody00")
    for path in (foreign, *foreign.iterdir()):
        os.chown(path, 65534, 65534)
    dead = _plant_ours(temp, "tpipe-dead0000")
    before = _everything(temp, dead)
    own = _next_run(tmp_path, temp)
    assert not dead.exists()
    assert _everything(temp, own) == before


def test_a_process_removes_its_own_folder_only_while_it_is_still_its_own(tmp_path):
    """Its folder replaced while it ran (a symlink to a folder of yours; another folder with
    an unheld lock, as a process in another PID namespace would leave): nothing removed."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    for replacement in ("symlink", "other folder"):
        process = _python(tmp_path, "-c", TEMP_USER, "live", temp=temp, stdin=subprocess.PIPE)
        folder = Path(process.stdout.readline().strip())
        folder.rename(tmp_path / f"moved-{folder.name}")
        yours = _plant_ours(tmp_path, "yours")
        if replacement == "symlink":
            folder.symlink_to(yours)
        else:
            _plant_ours(temp, folder.name)
        before = _everything(tmp_path)
        process.stdin.close()
        assert process.wait(timeout=300) == 0
        assert _everything(tmp_path) == before, replacement
        shutil.rmtree(yours)
        if folder.is_symlink():
            folder.unlink()
        else:
            shutil.rmtree(folder)


# TensorFlow writes the source of every function autograph converts to a file in the temporary
# folder (tempfile.NamedTemporaryFile), removed by an exit handler that `kill -9` never runs.
# (In a file: autograph reads the function's source.)
AUTOGRAPH = """
import os, signal, sys, tempfile
from transfer_pipeline.plumbing.errors import exit_on_pipeline_error

@exit_on_pipeline_error
def main():
    import tensorflow as tf

    @tf.function
    def doubled(x):
        for _ in tf.range(2):
            x = x * 2
        return x

    doubled(tf.constant(1.0))
    print(tempfile.gettempdir(), *os.listdir(tempfile.gettempdir()), flush=True)
    if sys.argv[1] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)

main()
"""


def test_tensorflows_autograph_files_go_into_the_process_folder_and_never_outlive_it(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    (tmp_path / "autograph.py").write_text(AUTOGRAPH)
    for ending in ("exit", "kill"):
        process = _python(tmp_path, "autograph.py", ending, temp=temp, stderr=subprocess.PIPE)
        result = _finished(process)
        assert result.returncode == (0 if ending == "exit" else -signal.SIGKILL), result.stderr
        folder, *seen = result.stdout.split()
        assert Path(folder).parent == temp and OWN_FOLDER.fullmatch(Path(folder).name)
        assert any(name.startswith("__autograph_generated_file") for name in seen), seen
        if ending == "exit":
            assert list(temp.iterdir()) == []  # TensorFlow's exit handlers, then the folder
    left = list(temp.rglob("*"))
    assert any(path.name.startswith("__autograph_generated_file") for path in left)
    assert all(path.is_relative_to(folder) for path in left)  # only inside its own folder
    result = _finished(_python(tmp_path, *PREPARE[:2], "--help", temp=temp))
    assert result.returncode == 0 and list(temp.iterdir()) == []  # the next run removed it


# An entry point that decodes images with prepare's forkserver pool (images.decode_into).
FORKSERVER_USER = """
import sys
import numpy as np
from transfer_pipeline.plumbing.errors import PipelineError, exit_on_pipeline_error
from transfer_pipeline.data.images import decode_into

@exit_on_pipeline_error
def main():
    files = sys.argv[2:]
    unreadable = decode_into(np.zeros((len(files), 8, 8, 3), np.uint8), files, 8, workers=2)
    print(len(files) - len(unreadable), flush=True)
    if sys.argv[1] == "fail":
        raise PipelineError("failing on purpose")

if __name__ == "__main__":
    main()
"""


NEXT_RUN = """
import os
from transfer_pipeline.plumbing.locks import use_own_temp_folder
own = use_own_temp_folder("next")
print(own.name, *sorted(p.name for p in own.parent.glob("tpipe-*")))
"""


def test_a_forkserver_pool_ends_in_one_line_or_none_and_the_next_run_sweeps(tmp_path):
    """A forkserver pool started inside an entry point (prepare's image decoding): no traceback
    at the end, with or without an error; the next run sweeps what is left."""
    temp = tmp_path  # about as deep as a CI worker's TMPDIR
    (tmp_path / "user.py").write_text(FORKSERVER_USER)
    images = []
    for index in range(3):
        images.append(str(tmp_path / f"{index}.png"))
        Image.new("RGB", (9, 7), (index, 0, 0)).save(images[-1])
    for ending, code in (("ok", 0), ("fail", 1)):
        process = _python(tmp_path, "user.py", ending, *images, temp=temp, stderr=subprocess.PIPE)
        result = _finished(process)
        assert (result.returncode, result.stdout) == (code, "3\n"), result.stderr
        expected = ["error: failing on purpose"] if ending == "fail" else []
        assert stderr_lines(result) == expected, result.stderr
    after = _finished(_python(tmp_path, "-c", NEXT_RUN, temp=temp))  # the next run starts
    own, *folders = after.stdout.split()
    assert folders == [own], after.stdout  # only its own: the others' are swept
