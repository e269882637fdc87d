"""The documentation holds together: every relative link leads to a file, every page of docs/ is
in the README's map, the README's first CPU run is a valid small run, and the offline page's
commands run as written (up to `features`, in a fresh copy of the project)."""

import hashlib
import re
import shlex

import yaml
from conftest import REPO_ROOT, TARBALL, TINY, project_files
from synthetic import write_cifar10_tarball

from transfer_pipeline.models.backbones import BACKBONES
from transfer_pipeline.plumbing import params as params_module
from transfer_pipeline.plumbing.param_checks import warnings_about
from transfer_pipeline.plumbing.params import declared_params, validate

README = REPO_ROOT / "README.md"
OFFLINE = REPO_ROOT / "docs/offline.md"
PAGES = sorted((REPO_ROOT / "docs").glob("*.md"))
# [text](target): the target up to a space or ")"; code spans are removed first.
LINK = re.compile(r"\]\(([^)\s]+)\)")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def _relative_links(page):
    for target in LINK.findall(CODE.sub("", page.read_text())):
        if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # not https:, mailto: ...
            yield target


def test_every_relative_link_leads_to_a_file():
    pages = [README, REPO_ROOT / "BENCHMARKS.md", *REPO_ROOT.glob("*/**/README.md"), *PAGES]
    broken = [
        f"{page.relative_to(REPO_ROOT)}: {target}"
        for page in pages
        if not any(part.startswith(".") for part in page.relative_to(REPO_ROOT).parts)
        for target in _relative_links(page)
        if not (page.parent / target.split("#")[0]).exists()
    ]
    assert not broken, broken


def test_every_docs_page_is_in_the_readme_map():
    linked = {target for target in _relative_links(README) if target.startswith("docs/")}
    assert {f"docs/{page.name}" for page in PAGES} <= linked


def test_the_first_cpu_run_is_a_small_run_whose_expected_time_is_measured_here(monkeypatch):
    """The command of "A first result on a CPU": valid params, a note in the report that it is
    a small run, and the features stage's estimate from this machine."""
    monkeypatch.chdir(REPO_ROOT)
    section = README.read_text().split("## A first result on a CPU")[1].split("\n## ")[0]
    command = section.split("```bash\n")[1].split("```")[0]
    words = shlex.split(command.replace("\\\n", " "))
    assert words[:5] == ["dvc", "exp", "run", "-n", "first-look"]
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for flag, override in zip(words[5::2], words[6::2]):
        assert flag == "-S", words
        key, value = override.split("=", 1)
        *sections, leaf = key.split(".")
        node = raw
        for name in sections:
            node = node[name]
        node[leaf] = yaml.safe_load(value)
    params = validate(raw)
    (note,) = warnings_about(params_module._only(params, declared_params("report")))
    assert note.startswith("a small run, not the seed's recipe")
    # The estimate is this machine's (stages/features.py), never a figure from another CPU.
    assert "prints what the run should take on this machine" in " ".join(section.split())


def _blocks(page, language: str) -> list[str]:
    """A page's fenced code blocks in one language; shell continuation lines joined."""
    found = re.findall(rf"```{language}\n(.*?)```", page.read_text(), re.DOTALL)
    return [block.replace("\\\n", " ") for block in found]


def _save_notop_weights(backbone: str, path) -> None:
    """A real Keras backbone's weights without top, in the legacy HDF5 layout of the *_notop.h5
    files Keras downloads (random weights: only the file's form matters here)."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    constructor = getattr(keras.applications, BACKBONES[backbone].constructor)
    model = constructor(include_top=False, weights=None, input_shape=(32, 32, 3))
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)


def test_the_offline_commands_run_as_written(tmp_path):
    """docs/offline.md's commands, each line as a shell runs it, in a fresh copy of the project
    with stand-ins for the two files copied in: a small CIFAR-10 tarball in the official format
    and a real backbone's weights without top under the file name the page gives."""
    (commands,) = _blocks(OFFLINE, "bash")
    (same_in_params,) = _blocks(OFFLINE, "yaml")
    repo = project_files(tmp_path / "clone")
    repo.commit("the project, as cloned")
    tarball = write_cifar10_tarball(repo.path / TARBALL)
    weights_file = re.search(r"weights/\S+\.h5", commands)[0]
    # MobileNetV2's weights (9 MB) stand in for Xception's (80 MB, and a slow 299 px model).
    _save_notop_weights("mobilenet_v2", repo.path / weights_file)
    # Appended to the `dvc exp run` line, which otherwise runs as written: the stand-in
    # tarball's MD5 (params.yaml holds the official one), the tiny sizes of the session
    # pipeline, the backbone whose weights the stand-in file holds at 32 px, and the stage to
    # stop after (`features` is the last stage that reads either file).
    appended = {
        "data.md5": hashlib.md5(tarball.read_bytes()).hexdigest(),
        **{f"data.{key}": TINY["data"][key] for key in ("train_size", "val_size", "test_size")},
        "model.backbone": "mobilenet_v2",
        "model.image_size": 32,
    }
    extra = " ".join(f"-S {key}={value}" for key, value in appended.items()) + " features"
    for line in commands.splitlines():
        if line.startswith("dvc exp run "):
            experiment = repo.run("bash", "-c", f"{line} {extra}")
        else:
            repo.run("bash", "-c", line)  # each line as a shell runs it: fails on its exit code

    assert repo.git("log", "-1", "--format=%s").strip() == "offline inputs"
    assert repo.git("show", "--name-only", "--format=", "HEAD").split() == [
        "data/raw/.gitignore",
        "data/raw/cifar-10-python.tar.gz.dvc",
        f"{weights_file}.dvc",
    ]
    assert repo.git("status", "--porcelain", "data/raw", "weights") == ""  # the files ignored
    assert repo.ran_stages(experiment.stdout) == {"prepare", "weights", "features"}
    lock = yaml.safe_load((repo.path / "dvc.lock").read_text())["stages"]
    words = shlex.split(commands, comments=True)
    overrides = dict(word.split("=", 1) for word in words if "=" in word)
    assert overrides == {"data.source": TARBALL, "model.weights": weights_file}
    assert lock["prepare"]["params"]["params.yaml"]["data"]["source"] == overrides["data.source"]
    assert lock["features"]["params"]["params.yaml"]["model.weights"] == weights_file
    in_params = yaml.safe_load(same_in_params)  # "or the same two lines in params.yaml"
    assert in_params == {"data": {"source": TARBALL}, "model": {"weights": weights_file}}
