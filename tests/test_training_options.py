"""Fine-tuning options (issue 4), checked in-process on small real Keras objects."""

import keras
import numpy as np
import pytest
from keras import layers

from transfer_pipeline.data.feeding import ArrayBatches
from transfer_pipeline.models.blocks import top_layers
from transfer_pipeline.models.model import (
    augmentation,
    backbone_of,
    build_classifier,
    build_feature_extractor,
    build_head,
    unfreeze,
)
from transfer_pipeline.models.optimizers import cosine_with_warmup, optimizer
from transfer_pipeline.running.callbacks import EpochLog
from transfer_pipeline.running.progress import ProgressBar
from transfer_pipeline.running.resume import Checkpoints, fingerprint


@pytest.fixture(scope="module")
def extractor():
    keras.utils.set_random_seed(0)
    return build_feature_extractor("mobilenet_v2", 32, 32, None)


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    schedule = cosine_with_warmup(1e-3, epochs=5, warmup_epochs=1, steps_per_epoch=10)
    values = [float(schedule(step)) for step in (0, 5, 10, 30, 50)]
    assert values[0] == pytest.approx(0.0)
    assert values[1] == pytest.approx(5e-4, rel=1e-3)  # half way through the warmup
    assert values[2] == pytest.approx(1e-3, rel=1e-3)  # peak at the end of the warmup
    assert values[2] > values[3] > values[4]
    assert values[4] == pytest.approx(0.0, abs=1e-9)


def test_weight_decay_switches_to_adamw():
    assert isinstance(optimizer("adam", 1e-3, weight_decay=0.05), keras.optimizers.AdamW)
    assert type(optimizer("adam", 1e-3)) is keras.optimizers.Adam


def test_each_optimizer_param_builds_that_keras_optimizer():
    sgd = optimizer("sgd", 1e-2, momentum=0.8)
    assert type(sgd) is keras.optimizers.SGD and sgd.momentum == pytest.approx(0.8)
    assert type(optimizer("rmsprop", 1e-3)) is keras.optimizers.RMSprop
    assert type(optimizer("adamw", 1e-3)) is keras.optimizers.AdamW


def test_unfreezing_the_top_blocks_trains_only_those_and_never_batchnorm(extractor):
    base = backbone_of(extractor)
    unfreeze(base, top_layers(base, "mobilenet_v2", 1))
    names = [layer.name for layer in base.layers]
    first = names.index("block_16_expand")  # MobileNetV2's top block, then its last conv
    top, rest = base.layers[first:], base.layers[:first]
    assert not any(layer.trainable_weights for layer in rest)
    unfrozen = [layer for layer in top if not isinstance(layer, layers.BatchNormalization)]
    assert all(layer.trainable for layer in unfrozen)
    assert {"block_16_project", "Conv_1"} <= {
        layer.name for layer in top if layer.trainable_weights
    }
    batchnorms = [layer for layer in base.layers if isinstance(layer, layers.BatchNormalization)]
    assert batchnorms and not any(layer.trainable for layer in batchnorms)
    unfreeze(base, "all")
    trainable_layers = [layer for layer in base.layers if layer.trainable_weights]
    assert len(trainable_layers) > 30
    base.trainable = False


def test_augmentation_changes_images_in_training_mode_only():
    images = np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3)).astype("float32")
    augment = augmentation(seed=1)
    trained = [keras.ops.convert_to_numpy(augment(images, training=True)) for _ in range(2)]
    assert not np.allclose(trained[0], images)
    assert not np.allclose(trained[0], trained[1])  # a new draw on every call
    inferred = keras.ops.convert_to_numpy(augment(images, training=False))
    np.testing.assert_array_equal(inferred, images)


def test_augmentation_is_active_in_training_only(extractor):
    head = build_head(extractor.output.shape[-1], [8], 0.0, 3)
    model = build_classifier(extractor, head, augment_seed=1)
    assert any(layer.name == "augment" for layer in model.layers)
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3)).astype("uint8")
    inference = [model(images, training=False).numpy() for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    plain = build_classifier(extractor, head).predict(images, verbose=0)
    np.testing.assert_allclose(inference[0], plain, atol=1e-6)


def test_early_stopping_stops_after_patience_epochs_without_a_better_val_accuracy(tmp_path):
    model = keras.Sequential([keras.Input((2,)), layers.Dense(2)])
    checkpoints = Checkpoints(tmp_path / "resume", "fingerprint", patience=2)
    checkpoints.set_model(model)
    for epoch, val_accuracy in enumerate([0.5, 0.7, 0.6, 0.65]):
        model.stop_training = False
        checkpoints.on_epoch_end(
            epoch, {"loss": 1.0, "accuracy": 0.5, "val_loss": 1.0, "val_accuracy": val_accuracy}
        )
        if model.stop_training:
            break
    assert epoch == 3 and checkpoints.state["best"]["epoch"] == 2
    assert checkpoints.resume_point()["epochs_done"] == 4
    assert Checkpoints(tmp_path / "resume", "other params").resume_point() is None


def test_resume_fingerprint_changes_with_code_data_and_params(tmp_path, monkeypatch):
    """A checkpoint is only resumed by the same code, data and params (dvc.yaml's deps)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages:\n  fine_tune:\n    deps: [stage.py, data]\n")
    (tmp_path / "stage.py").write_text("print('v1')\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.npy").write_bytes(b"images")
    first = fingerprint("fine_tune", {"lr": 1e-5})
    assert fingerprint("fine_tune", {"lr": 1e-5}) == first
    assert fingerprint("fine_tune", {"lr": 3e-5}) != first
    (tmp_path / "stage.py").write_text("print('v2: a bug fixed')\n")
    second = fingerprint("fine_tune", {"lr": 1e-5})
    assert second != first
    (tmp_path / "data" / "train.npy").write_bytes(b"other images")
    assert fingerprint("fine_tune", {"lr": 1e-5}) not in (first, second)


def test_progress_counts_are_integers_and_ci_lines_come_every_tenth(monkeypatch, capsys):
    monkeypatch.setenv("CI", "true")
    bar = ProgressBar(4000, "fine_tune epoch 1/2", unit=" images", every=0.1)
    for _ in range(125):
        bar.update(32)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10
    assert lines[2].startswith("fine_tune epoch 1/2: 1216/4000 images (30%")


@pytest.mark.parametrize("steps_per_execution", [1, 5, 256])
def test_the_epoch_progress_counts_every_image_once_whatever_steps_per_execution(
    steps_per_execution,
):
    """train_head's default is 256 steps per call (one batch hook per call, its step the call's
    last): 203 images in batches of 8 (25 full batches and 3 images) count 203 per epoch, in
    updates that are never negative."""
    images, batch_size = 203, 8
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(images, 4)).astype("float32")
    y = keras.utils.to_categorical(np.arange(images) % 3, 3)
    model = keras.Sequential([keras.Input((4,)), layers.Dense(3, activation="softmax")])
    model.compile("sgd", "categorical_crossentropy", steps_per_execution=steps_per_execution)
    updates = []

    class Counted(EpochLog):  # the same callback, the amounts it gives its bar recorded
        def on_epoch_begin(self, epoch, logs=None):
            super().on_epoch_begin(epoch, logs)
            update = self.bar.update
            self.bar.update = lambda amount: (updates.append((epoch, amount)), update(amount))

    log = Counted("train_head", 2, images, batch_size)
    model.fit(ArrayBatches(x, y, batch_size, shuffle_seed=0), epochs=2, verbose=0, callbacks=[log])
    for epoch in (0, 1):
        amounts = [amount for seen, amount in updates if seen == epoch]
        assert sum(amounts) == images and min(amounts) > 0, amounts
    assert log.bar.done == images
