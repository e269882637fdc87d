"""Bad input through the real `dvc repro`: one clear line, non-zero exit, nothing lost."""

import pytest
from conftest import TARBALL, copy_of

from transfer_pipeline.plumbing.param_schema import CIFAR10_MD5, CIFAR10_URL

# A proxy nobody listens on: "no network", the same on every machine.
OFFLINE = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}


@pytest.fixture(scope="module")
def broken(pipeline, tmp_path_factory):
    """One copy for all bad-input cases; each case restores params.yaml afterwards."""
    repo = copy_of(pipeline, tmp_path_factory.mktemp("bad-input") / "repo")
    repo.good_outputs = repo.snapshot()
    yield repo


@pytest.fixture(autouse=True)
def restore(broken):
    """Each case starts from the committed params, whether the one before passed or failed."""
    yield
    broken.git("checkout", "params.yaml")
    (broken.path / "data/raw/truncated.tar.gz").unlink(missing_ok=True)


def _fails_cleanly(repo, expected: str, env=None, added=()):
    result = repo.dvc("repro", check=False, env=env)
    output = result.stdout + result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0, output
    assert len(ours) == 1, output  # exactly one line of ours
    assert expected in ours[0], ours[0]
    assert "Traceback" not in output
    for path in added:  # data/raw is a dependency: what the case added goes first
        (repo.path / path).unlink()
    repo.back_to_last_good(repo.good_outputs)
    return ours[0]


def test_wrong_md5_names_both_checksums(broken):
    broken.set_params({"data": {"md5": "0" * 32}})
    line = _fails_cleanly(broken, "expected 00000000000000000000000000000000 (data.md5)")
    assert "corrupt or not the official one" in line


def test_truncated_tarball_is_reported_as_truncated(broken):
    whole = (broken.path / TARBALL).read_bytes()
    (broken.path / "data/raw/truncated.tar.gz").write_bytes(whole[: len(whole) // 2])
    broken.set_params({"data": {"source": "data/raw/truncated.tar.gz", "md5": None}})
    _fails_cleanly(broken, "truncated or corrupt", added=["data/raw/truncated.tar.gz"])


def test_missing_source_path(broken):
    broken.set_params({"data": {"source": "data/raw/nowhere.tar.gz"}})
    _fails_cleanly(broken, "data.source data/raw/nowhere.tar.gz does not exist")


def test_split_larger_than_the_data(broken):
    broken.set_params({"data": {"train_size": 5000}})
    _fails_cleanly(broken, "only 300 images; lower the sizes")


def test_unknown_backbone_names_the_key_and_the_choices(broken):
    broken.set_params({"model": {"backbone": "vgg99"}})
    line = _fails_cleanly(broken, "model.backbone = 'vgg99' is not allowed; expected one of")
    assert "xception" in line and "convnext_tiny" in line


def test_misspelled_key_is_reported(broken):
    broken.set_params({"fine_tune": {"lrr": 0.1}})
    _fails_cleanly(broken, "unknown key 'fine_tune.lrr'")


def test_offline_default_says_how_to_supply_the_tarball(broken):
    broken.set_params({"data": {"source": CIFAR10_URL, "md5": CIFAR10_MD5}})
    line = _fails_cleanly(broken, f"cannot download {CIFAR10_URL}", env=OFFLINE)
    assert "copy it to data/raw/cifar-10-python.tar.gz" in line
    assert "dvc exp run -S data.source=data/raw/cifar-10-python.tar.gz" in line
