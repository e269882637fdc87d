"""compute.precision auto on CPUs (issue 31): native bfloat16 is read from the CPU flags; where
the CPU has it, the features and fine_tune stages time their own model in float32 and in mixed
bfloat16 and keep the faster (precision.py), remembered per machine and model; bfloat16
extraction gives the float32 features."""

import ast
import json
import multiprocessing
import time

import keras
import numpy as np
import pytest
from conftest import REPO_ROOT

from transfer_pipeline.models.features import extract_features
from transfer_pipeline.models.model import load_model, twin_extractor
from transfer_pipeline.running import precision
from transfer_pipeline.running.compute import Timing, cpu_bfloat16_flag, resolve_precision

FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 avx avx2 fma"


def _cpuinfo(tmp_path, *extra_flags):
    path = tmp_path / "cpuinfo"
    block = f"processor\t: 0\nmodel name\t: test\nflags\t\t: {' '.join([FLAGS, *extra_flags])}\n"
    path.write_text(block + "\n" + block.replace(": 0", ": 1"))
    return path


@pytest.mark.parametrize(
    "extra, expected",
    [
        ((), None),
        (("avx512f", "avx512_vnni"), None),  # VNNI is int8, not bfloat16
        (("avx512f", "avx512_bf16"), "avx512_bf16"),
        (("avx512_bf16", "amx_tile", "amx_bf16"), "amx_bf16"),
    ],
)
def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path, extra, expected):
    assert cpu_bfloat16_flag(_cpuinfo(tmp_path, *extra)) == expected


def test_unreadable_cpu_flags_mean_no_native_bfloat16(tmp_path):
    assert cpu_bfloat16_flag(tmp_path / "missing") is None


def test_the_machine_key_names_the_cpu_model_and_its_flags(tmp_path):
    plain = precision.machine(_cpuinfo(tmp_path))
    assert plain.startswith("test; ") and "cores; flags " in plain
    assert precision.machine(_cpuinfo(tmp_path, "avx512_bf16")) != plain


@pytest.mark.parametrize(
    "rates, chosen",
    [
        ({"float32": 10.0, "mixed_bfloat16": 20.0}, "mixed_bfloat16"),
        ({"float32": 10.0, "mixed_bfloat16": 6.0}, "float32"),
        # Within the timing's noise float32, the exact one, wins.
        ({"float32": 10.0, "mixed_bfloat16": 10.4}, "float32"),
    ],
)
def test_the_faster_precision_is_chosen_and_remembered(tmp_path, rates, chosen):
    cache, asked = tmp_path / "precision.json", []

    def rate_of(policy):
        asked.append(policy)
        return rates[policy]

    first = precision.choose("extraction", {"backbone": "x"}, rate_of, cache)
    assert first[0] == chosen and asked == ["float32", "mixed_bfloat16"]
    assert f"float32 {rates['float32']:g} vs mixed_bfloat16 {rates['mixed_bfloat16']:g}" in first[1]
    assert first[1].endswith("timed now")
    second = precision.choose("extraction", {"backbone": "x"}, rate_of, cache)
    assert second[0] == chosen and len(asked) == 2  # read back, not timed again
    assert second[1].endswith(f"remembered in {cache}")
    # Another model (or task) is timed anew.
    precision.choose("training", {"backbone": "x"}, rate_of, cache)
    assert len(asked) == 4 and len(json.loads(cache.read_text())) == 2


RATES = {"float32": 1.0, "mixed_bfloat16": 3.0}


def _timing(rates=RATES):
    """rate_of for choose(), and the list of the policies it was asked to time."""
    asked = []

    def rate_of(policy):
        asked.append(policy)
        return rates[policy]

    return rate_of, asked


def _entries(cache):
    return json.loads(cache.read_text())


def _one_line(capsys, *words):
    """The one line choose() said on stderr, checked to hold ``words``."""
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and not captured.out, captured
    assert lines[0].startswith("precision: ") and all(word in lines[0] for word in words), lines
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "not JSON"),
        ("", "not JSON"),
        ("[1, 2]", "a JSON list, not an object"),
        ("7", "a JSON int, not an object"),
        (b"\xff\xfe{", "not text"),
    ],
)
def test_a_damaged_cache_is_named_once_timed_again_and_replaced(tmp_path, capsys, content, problem):
    cache = tmp_path / "precision.json"
    (cache.write_bytes if isinstance(content, bytes) else cache.write_text)(content)
    rate_of, asked = _timing()
    assert precision.choose("extraction", {}, rate_of, cache)[0] == "mixed_bfloat16"
    assert len(asked) == 2
    _one_line(capsys, str(cache), f"is damaged ({problem}", "timing again")
    assert list(json.loads(cache.read_text()).values()) == [RATES]  # replaced whole
    assert precision.choose("extraction", {}, rate_of, cache)[1].endswith(f"remembered in {cache}")
    assert len(asked) == 2 and capsys.readouterr().err == ""  # said once: the file is mended


@pytest.mark.parametrize(
    "entry",
    [
        7,  # an int where the rates belong
        [1.0, 3.0],  # a list: another layout
        {"float32": 1.0},  # mixed_bfloat16 missing
        {"float32": 1.0, "bfloat16": 3.0},  # another layout's names
        {"float32": -1.0, "mixed_bfloat16": 3.0},
        {"float32": 0, "mixed_bfloat16": 3.0},
        {"float32": "1.0", "mixed_bfloat16": 3.0},
        {"float32": True, "mixed_bfloat16": 3.0},
        {"float32": 1.0, "mixed_bfloat16": None},
        {"float32": float("nan"), "mixed_bfloat16": 3.0},
        {"float32": 1.0, "mixed_bfloat16": float("inf")},
    ],
)
def test_an_entry_of_the_wrong_shape_is_named_once_and_timed_again(tmp_path, capsys, entry):
    cache = tmp_path / "precision.json"
    rate_of, asked = _timing()
    precision.choose("extraction", {"backbone": "x"}, rate_of, cache)  # the real key
    precision.choose("training", {"backbone": "x"}, rate_of, cache)  # another entry
    stored = json.loads(cache.read_text())
    key = next(key for key in stored if '"task": "extraction"' in key)
    cache.write_text(json.dumps({**stored, key: entry}))
    capsys.readouterr()
    chosen = precision.choose("extraction", {"backbone": "x"}, rate_of, cache)
    assert chosen[0] == "mixed_bfloat16" and chosen[1].endswith("timed now")
    assert len(asked) == 6
    _one_line(capsys, f"ignoring the extraction entry in {cache}", "layout", "timing again")
    assert json.loads(cache.read_text()) == stored  # mended; the other entry kept


def test_a_valid_entry_is_used_as_stored(tmp_path, capsys):
    """Whole numbers and extra fields are a valid entry: read back, not timed, nothing said."""
    cache = tmp_path / "precision.json"
    rate_of, asked = _timing()
    precision.choose("extraction", {}, rate_of, cache)
    (key,) = json.loads(cache.read_text())
    cache.write_text(json.dumps({key: {"float32": 4, "mixed_bfloat16": 2, "note": "x"}}))
    capsys.readouterr()
    chosen, reason = precision.choose("extraction", {}, rate_of, cache)
    assert chosen == "float32" and "float32 4 vs mixed_bfloat16 2" in reason
    assert len(asked) == 2 and capsys.readouterr().err == ""


def _unwritable(tmp_path, monkeypatch, how):
    """A cache that cannot be written, for root too (where chmod blocks nothing): the given
    cache and the one named, XDG_CACHE_HOME a regular file or the cache under one."""
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder would be")
    if how == "XDG_CACHE_HOME is a file":
        monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
        return None, blocker / "transfer-pipeline/precision.json"
    return blocker / "precision.json", blocker / "precision.json"


@pytest.mark.parametrize("how", ["XDG_CACHE_HOME is a file", "under a file"])
def test_a_cache_that_cannot_be_written_is_said_once_with_the_pin(
    tmp_path, capsys, monkeypatch, how
):
    given, named = _unwritable(tmp_path, monkeypatch, how)
    rate_of, asked = _timing()
    for run in (1, 2):  # each run times again, chooses the same and says so once
        assert precision.choose("extraction", {}, rate_of, given)[0] == "mixed_bfloat16"
        assert len(asked) == 2 * run
        line = _one_line(capsys, f"cannot store the timed choice in {named} (", "times again")
        assert line.endswith("set compute.precision to mixed_bfloat16 to pin it")


def test_a_read_only_folder_keeps_what_it_holds(tmp_path, capsys):
    """A folder made read-only after the rates were stored: read back, nothing said (as root,
    where chmod blocks nothing, the same)."""
    folder = tmp_path / "cache"
    cache = folder / "precision.json"
    rate_of, asked = _timing()
    precision.choose("extraction", {}, rate_of, cache)
    (folder / "precision.json.lock").unlink()
    folder.chmod(0o555)
    try:
        chosen, reason = precision.choose("extraction", {}, rate_of, cache)
    finally:
        folder.chmod(0o755)
    assert chosen == "mixed_bfloat16" and reason.endswith(f"remembered in {cache}")
    assert len(asked) == 2 and capsys.readouterr().err == ""


def _write_keys(cache, writer, count):
    for index in range(count):
        precision.choose("extraction", {"writer": writer, "index": index}, _slow_rate, cache)


def _slow_rate(policy):
    time.sleep(0.002)  # a window between reading the cache and writing it
    return RATES[policy]


def test_concurrent_writers_lose_no_entry(tmp_path):
    """Two processes timing at once (dvc queue start -j 2) on one cache: every entry of both
    is kept (the lock makes each read-merge-write whole)."""
    cache, count = tmp_path / "precision.json", 25
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_keys, args=(cache, w, count)) for w in "ab"]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
        assert writer.exitcode == 0
    settings = {(entry["writer"], entry["index"]) for entry in map(json.loads, _entries(cache))}
    assert settings == {(w, index) for w in "ab" for index in range(count)}


def test_the_key_holds_model_weights_and_the_stages_pass_it(tmp_path):
    cache = tmp_path / "precision.json"
    rate_of, asked = _timing()
    for weights in ("imagenet", None, "weights/mine.h5"):
        precision.choose("training", {"backbone": "x", "weights": weights}, rate_of, cache)
    assert len(asked) == 6 and len(_entries(cache)) == 3  # each weights timed on its own
    for stage in ("features", "fine_tune"):
        tree = ast.parse((REPO_ROOT / f"stages/{stage}.py").read_text())
        (timing,) = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "compute.Timing"
        ]
        setting = ast.unparse(timing.args[1])
        assert "'weights': " in setting and "['weights']" in setting, (stage, setting)


def test_a_real_model_is_timed_in_both_precisions_and_the_global_policy_is_kept(tmp_path):
    """images_per_s and under_policy on a real Keras model (its rates are this CPU's)."""
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype("float32")
    built = {}

    def rate_of(policy):
        def build():
            inputs = keras.Input((8, 8, 3))
            x = keras.layers.Conv2D(4, 3)(inputs)
            return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))

        model = precision.under_policy(policy, build)
        built[policy] = model.layers[1].compute_dtype
        return precision.images_per_s(lambda: model.predict_on_batch(images), len(images))

    chosen, reason = precision.choose("extraction", {"model": "conv"}, rate_of, tmp_path / "c")
    assert built == {"float32": "float32", "mixed_bfloat16": "bfloat16"}
    assert keras.config.dtype_policy().name == "float32"
    assert chosen in precision.CANDIDATES and reason.startswith("auto: extraction on this CPU")


def test_auto_on_this_cpu_times_only_where_it_has_native_bfloat16(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    rates = {"float32": 2.0, "mixed_bfloat16": 5.0}
    chosen = resolve_precision("auto", Timing("extraction", {"m": 1}, rates.get))
    if cpu_bfloat16_flag():
        assert chosen[0] == "mixed_bfloat16" and "float32 2 vs mixed_bfloat16 5" in chosen[1]
        assert (tmp_path / "transfer-pipeline/precision.json").is_file()
    else:
        assert chosen == ("float32", "auto: CPU without native bfloat16")
    untimed = resolve_precision("auto")  # train_head, evaluate
    assert untimed[0] == "float32" and untimed[1].startswith("auto: CPU")
    assert resolve_precision("mixed_bfloat16") == ("mixed_bfloat16", "compute.precision")


STAGES_THAT_TIME = {"features": "extraction", "fine_tune": "training"}


def test_auto_in_the_stages_times_their_models_and_records_the_choice(pipeline_copy, tmp_path):
    """features and fine_tune under auto, each timing its own model once: the compute line
    names both rates and the choice; compute/<stage>.json keeps it. Where float32 wins the
    features are the float32 run's, bit for bit (the timing's models leave the seed alone)."""
    repo = pipeline_copy
    before = np.load(repo.path / "data/features/test.npy")
    repo.set_params({"compute": {"precision": "auto"}})
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    # The two stages that time (-s: train_head's rerun would add nothing here).
    log = "".join(repo.dvc("repro", "-s", stage, env=env).stdout for stage in STAGES_THAT_TIME)
    for stage, task in STAGES_THAT_TIME.items():
        record = repo.json(f"compute/{stage}.json")
        assert f"precision={record['precision']} ({record['precision_reason']})" in log, stage
        if cpu_bfloat16_flag():
            assert record["precision_reason"].startswith(f"auto: {task} on this CPU float32 ")
            assert " vs mixed_bfloat16 " in record["precision_reason"]
        else:
            assert record["precision_reason"] == "auto: CPU without native bfloat16"
    features = repo.json("compute/features.json")
    after = np.load(repo.path / "data/features/test.npy")
    if features["precision"] == "float32":
        np.testing.assert_array_equal(after, before)
    remembered = tmp_path / "cache/transfer-pipeline/precision.json"
    assert remembered.is_file() == bool(cpu_bfloat16_flag())


def test_bfloat16_extraction_gives_the_float32_features_and_head_accuracy(pipeline):
    """The features stage's bfloat16 twin (same weights) against the stage's float32 output."""
    path, params = pipeline.path, pipeline.params()
    extractor = load_model(path / "models/feature_extractor.keras")
    model = params["model"]
    images = np.load(path / "data/prepared/test_x.npy")
    twin = twin_extractor(extractor, model["backbone"], model["image_size"], "mixed_bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left as it was
    batch = params["features"]["batch_size"]
    bf16 = extract_features(twin, images, batch, "test")
    float32 = np.load(path / "data/features/test.npy")
    cosine = (bf16 * float32).sum(1) / (
        np.linalg.norm(bf16, axis=1) * np.linalg.norm(float32, axis=1)
    )
    assert bf16.dtype == np.float32 and cosine.min() >= 0.999, cosine.min()

    # The head decides alike wherever float32 is not near a tie (a 0.05 margin between its
    # top two probabilities); near-ties may go either way on another CPU's rounding.
    head = load_model(path / "models/head.keras")
    on_float32, on_bf16 = (head.predict(f, batch_size=batch, verbose=0) for f in (float32, bf16))
    top_two = np.sort(on_float32, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 0.05
    assert clear.any()
    np.testing.assert_array_equal(on_bf16.argmax(1)[clear], on_float32.argmax(1)[clear])


def test_head_only_evaluate_under_mixed_bfloat16_gives_the_shipped_float32_models_classes(
    pipeline_copy,
):
    """The path auto takes on a GPU or a bfloat16 CPU, forced: fine_tune.epochs 0 under mixed
    bfloat16. evaluate's shortcut (the head on the cached test features, which the features
    stage extracts in float32) must give the classes of the model it ships, the float32
    extractor + head, run here on the test images in float32."""
    from conftest import mixed_policies

    repo = pipeline_copy
    repo.set_params({"compute": {"precision": "mixed_bfloat16"}, "fine_tune": {"epochs": 0}})
    result = repo.dvc("repro", "evaluate")
    assert {"features", "train_head", "fine_tune", "evaluate"} <= repo.ran_stages(result.stdout)
    for stage in ("features", "train_head", "fine_tune", "evaluate"):
        assert repo.json(f"compute/{stage}.json")["precision"] == "mixed_bfloat16", stage
    predictions = np.load(repo.path / "eval/predictions.npz")
    # The shortcut was taken: the shipped model's predictions are the head's on the features.
    np.testing.assert_array_equal(predictions["fine_tuned"], predictions["head_only"])
    assert mixed_policies(repo.path / "models/fine_tuned.keras") == []
    assert keras.config.dtype_policy().name == "float32"
    shipped = load_model(repo.path / "models/fine_tuned.keras")
    test_x = np.load(repo.path / "data/prepared/test_x.npy")
    on_images = shipped.predict(test_x, batch_size=64, verbose=0)
    np.testing.assert_array_equal(predictions["fine_tuned"].argmax(1), on_images.argmax(1))
    # Both are the float32 computation, in batches of other shapes: the same numbers to float32
    # rounding over ResNet50's sums, far below bfloat16's 2^-8 (4e-3).
    np.testing.assert_allclose(predictions["fine_tuned"], on_images, rtol=0, atol=1e-4)
