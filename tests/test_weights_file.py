"""Air-gapped weights: `model.weights: weights/<file>.h5` starts the base from that file."""

import shutil

import h5py
import keras
import numpy as np
import pytest
import yaml

from transfer_pipeline.models.model import backbone_of, build_backbone, load_model
from transfer_pipeline.plumbing.errors import PipelineError


def _random_backbone(constructor, seed):
    keras.utils.set_random_seed(seed)
    return constructor(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")


def test_pipeline_starts_from_exactly_the_weights_in_the_file(pipeline_copy):
    repo = pipeline_copy
    source = _random_backbone(keras.applications.ResNet50, seed=123)
    source.save_weights(repo.path / "weights/resnet50_notop.weights.h5")
    good = repo.snapshot()
    features_before = np.load(repo.path / "data/features/train.npy")
    repo.set_params({"model": {"weights": "weights/resnet50_notop.weights.h5"}})

    result = repo.dvc("repro", "features")
    assert "Running stage 'features'" in result.stdout
    base = backbone_of(load_model(repo.path / "models/feature_extractor.keras"))
    assert len(base.weights) == len(source.weights)
    assert all(np.array_equal(a, b) for a, b in zip(base.get_weights(), source.get_weights()))
    assert not np.array_equal(np.load(repo.path / "data/features/train.npy"), features_before)
    lock = yaml.safe_load((repo.path / "dvc.lock").read_text())["stages"]
    # features depends on exactly the named file (the weights stage's identity of it).
    assert "data/weights.json" in [dep["path"] for dep in lock["features"]["deps"]]
    assert "weights" not in [dep["path"] for dep in lock["features"]["deps"]]

    # A file for another backbone: one clear line naming the backbone and the expected layer.
    _random_backbone(keras.applications.MobileNetV2, seed=1).save_weights(
        repo.path / "weights/wrong.weights.h5"
    )
    after_good_run = repo.snapshot()
    repo.set_params({"model": {"weights": "weights/wrong.weights.h5"}})
    failed = repo.dvc("repro", "features", check=False)
    ours = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert failed.returncode != 0 and len(ours) == 1, failed.stderr
    assert "does not fit resnet50 without top (expected layer 'conv1_conv'" in ours[0]
    assert "Traceback" not in failed.stdout + failed.stderr
    # Back to the good file, the other file left beside it in weights/: features depends on
    # exactly the named file, so its outputs come back from the run-cache, nothing retrains
    # (only the weights stage reruns: it reads the folder, in a second).
    repo.set_params({"model": {"weights": "weights/resnet50_notop.weights.h5"}})
    restored = repo.dvc("repro", "features")
    assert repo.ran_stages(restored.stdout) == {"weights"}, restored.stdout
    assert "features" in repo.restored_stages(restored.stdout), restored.stdout
    assert repo.snapshot() == after_good_run
    assert good != after_good_run
    # A whole preset folder added under weights/ reruns nothing that reads the weights.
    shutil.copytree(repo.path / "data/features", repo.path / "weights/another_preset")
    again = repo.dvc("repro", "features")
    assert repo.ran_stages(again.stdout) <= {"weights"}, again.stdout


def test_keras_legacy_h5_notop_files_load_exactly(tmp_path):
    """Keras' own downloaded *_notop.h5 files use the legacy HDF5 layout: it loads too."""
    from keras.src.legacy.saving import legacy_h5_format

    source = _random_backbone(keras.applications.ResNet50, seed=7)
    path = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, source)
    loaded = build_backbone("resnet50", 32, str(path))
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), source.get_weights()))


def test_a_file_that_is_not_hdf5_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not weights")
    with pytest.raises(PipelineError, match="is not an HDF5 weights file"):
        build_backbone("resnet50", 32, str(path))


def test_the_weights_identity_is_exactly_what_model_weights_names(tmp_path, monkeypatch):
    """What features depends on (stages/weights.py): a keyword as it is, a file's MD5, a
    folder's files' MD5s; a missing path is one line naming it."""
    from stages.weights import identity

    monkeypatch.chdir(tmp_path)
    assert identity("imagenet") == {"weights": "imagenet"} and identity(None) == {"weights": None}
    (tmp_path / "weights/preset").mkdir(parents=True)
    (tmp_path / "weights/preset/config.json").write_text("{}")
    (tmp_path / "weights/file.h5").write_bytes(b"abc")
    assert identity("weights/file.h5") == {
        "weights": "weights/file.h5",
        "md5": "900150983cd24fb0d6963f7d28e17f72",  # md5("abc")
    }
    folder = identity("weights/preset")
    assert folder == {
        "weights": "weights/preset",
        "files": {"config.json": "99914b932bd37a50b983c5e7c90ae93b"},  # md5("{}")
    }
    (tmp_path / "weights/other.h5").write_bytes(b"another file beside them changes neither")
    assert identity("weights/preset") == folder
    with pytest.raises(PipelineError, match="model.weights names weights/gone.h5, which does not"):
        identity("weights/gone.h5")
