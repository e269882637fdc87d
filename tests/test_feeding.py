"""ArrayBatches: every batch full (one compiled shape per step), the results those of the rows."""

import keras
import numpy as np
import pytest

from transfer_pipeline.data.feeding import ArrayBatches, one_hot, predict_in_batches
from transfer_pipeline.models.model import build_head
from transfer_pipeline.plumbing.errors import PipelineError
from transfer_pipeline.running import cluster
from transfer_pipeline.running.callbacks import UnpaddedValLoss

N, BATCH, CLASSES = 30, 8, 3


def _rows(batches: ArrayBatches) -> list[np.ndarray]:
    batches.on_epoch_begin()
    return [batches[index][0][:, 0].astype(int) for index in range(len(batches))]


def test_training_fills_the_last_batch_from_the_start_of_the_epochs_order():
    x = np.arange(N)[:, None]
    batches = ArrayBatches(x, one_hot(np.zeros(N, int), CLASSES), BATCH, shuffle_seed=0)
    for _ in range(2):
        rows = _rows(batches)
        assert {len(batch) for batch in rows} == {BATCH}
        order = np.concatenate(rows)
        assert sorted(order[:N]) == list(range(N)), "every row once per epoch ..."
        np.testing.assert_array_equal(order[N:], order[: len(order) - N])  # ... a few twice
    resumed = ArrayBatches(x, one_hot(np.zeros(N, int), CLASSES), BATCH, 0, first_epoch=1)
    np.testing.assert_array_equal(np.concatenate(_rows(resumed)), order)


def test_validation_padding_weighs_nothing_and_the_metrics_are_those_of_the_real_rows():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2 * N, 4)).astype(np.float32)
    labels = one_hot(rng.integers(0, CLASSES, 2 * N), CLASSES)
    val = ArrayBatches(features[N:], labels[N:], BATCH)
    *_, weights = val[len(val) - 1]
    np.testing.assert_array_equal(weights, [1] * (N % BATCH) + [0] * (BATCH - N % BATCH))
    keras.utils.set_random_seed(0)
    head = build_head(4, [8], 0.1, CLASSES)
    head.compile("adam", "categorical_crossentropy", weighted_metrics=["accuracy"])
    history = head.fit(
        ArrayBatches(features[:N], labels[:N], BATCH, shuffle_seed=0),
        validation_data=val,
        epochs=2,
        verbose=0,
        shuffle=False,
        callbacks=[UnpaddedValLoss(val)],
    )
    unpadded = head.evaluate(features[N:], labels[N:], batch_size=N, verbose=0, return_dict=True)
    assert history.history["val_accuracy"][-1] == unpadded["accuracy"]
    assert history.history["val_loss"][-1] == pytest.approx(unpadded["loss"], rel=1e-6)


def test_predictions_in_full_batches_are_those_of_a_partial_last_batch_cut_back_to_the_rows():
    features = np.random.default_rng(1).normal(size=(N, 4)).astype(np.float32)
    head = build_head(4, [8], 0.1, CLASSES)
    predicted = predict_in_batches(head, features, BATCH)
    keras_side = head.predict(features, batch_size=BATCH, verbose=0)  # a last batch of 6 rows
    assert predicted.shape == keras_side.shape == (N, CLASSES)
    # Not bit for bit: a batch of 8 rows and one of 6 may take different matrix kernels
    # (blocking and FMA chosen by shape and instruction set; 6 of 90 values differed by 6e-8
    # on an avx2-only CPU). Each value here is a sum of at most 8 products of order-1 numbers
    # (4 features, 8 units) followed by a softmax, whose derivative is at most 1/2: another
    # order of summation moves it by at most about 8 x 2^-24 = 5e-7. 1e-6 allows that and
    # nothing else: a row of another image, or a padding row, differs by orders more.
    np.testing.assert_allclose(predicted, keras_side, rtol=0, atol=1e-6)
    assert np.abs(predicted - keras_side[::-1]).max() > 1e-3  # rows out of order would fail


def test_features_are_written_chunk_by_chunk_into_a_memory_map(tmp_path, monkeypatch):
    """extract_features fills the stage's memory-mapped .npy a few batches at a time: the
    same numbers as one predict over the whole split."""
    from numpy.lib.format import open_memmap

    from transfer_pipeline.models import features as extraction

    monkeypatch.setattr(extraction, "CHUNK_BATCHES", 2)  # 19 rows in batches of 4: 3 chunks
    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).integers(0, 256, (19, 6, 6, 3), dtype=np.uint8)
    inputs = keras.Input((6, 6, 3))
    model = keras.Model(
        inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(5, 3)(inputs))
    )
    out = open_memmap(tmp_path / "train.npy", mode="w+", dtype=np.float32, shape=(19, 5))
    extraction.extract_features(model, images, 4, "train", out)
    out.flush()
    del out
    whole = predict_in_batches(model, images, 4)
    np.testing.assert_array_equal(np.load(tmp_path / "train.npy"), whole)


@pytest.mark.parametrize("shuffle_seed", [0, None])
def test_in_a_multi_host_run_each_process_feeds_its_share_of_the_same_global_batches(
    shuffle_seed, monkeypatch
):
    """Process i of 2 gets the i-th half of every batch; Keras (and predict_in_batches) put
    the halves together in process order: the batches one process would feed."""
    x, y = np.arange(N)[:, None], one_hot(np.arange(N) % CLASSES, CLASSES)
    alone = _rows(ArrayBatches(x, y, BATCH, shuffle_seed))
    shares = []
    for process in range(2):
        monkeypatch.setattr(cluster, "_process", (process, 2))
        shares.append(_rows(ArrayBatches(x, y, BATCH, shuffle_seed)))
    assert [len(batch) for batch in shares[0]] == [BATCH // 2] * len(alone)
    for index, batch in enumerate(alone):
        np.testing.assert_array_equal(np.concatenate([shares[0][index], shares[1][index]]), batch)


def test_a_batch_that_does_not_split_evenly_between_the_processes_is_one_line(monkeypatch):
    monkeypatch.setattr(cluster, "_process", (0, 3))
    with pytest.raises(PipelineError, match="a batch of 8 cannot be split evenly between 3 "):
        ArrayBatches(np.zeros((N, 1)), None, BATCH)
