"""KerasHub backbones (DINOv2, CLIP, SigLIP, MobileNetV3): parity with the reference
implementation, the checks that make a bad preset folder one line, head-only and fine-tuned
pipelines through `dvc repro`. Tiny random presets only: real weights cannot reach these
machines."""

import json
import re
import shutil
import socket
import subprocess
import sys
import zipfile
from collections import Counter

import numpy as np
import pytest
import yaml
from conftest import REPO_ROOT, new_repo, project_files, stderr_lines, tool_env
from hub_presets import (
    CLIP_KERAS_HUB,
    CLIP_REFERENCE,
    DINOV2_REFERENCE,
    DINOV2_TRANSFORMERS,
    save_dinov2,
    save_image_text,
    save_in_kagglehub_cache,
    save_mobilenet,
)

from transfer_pipeline.plumbing.errors import PipelineError
from transfer_pipeline.plumbing.param_checks import warnings_about
from transfer_pipeline.plumbing.param_schema import ParamError
from transfer_pipeline.plumbing.params import validate

BLOCKED_IMPORTS = REPO_ROOT / "tests" / "blocked_imports"
# Any connection off this machine fails at once in every process of a command started with
# these variables: sitecustomize.py patches the socket module (no_network.py), so no NO_PROXY
# in the environment and no client that ignores proxies can lift the block.
NO_NETWORK = {"PYTHONPATH": str(BLOCKED_IMPORTS), "BLOCKED_NETWORK": "1"}


def default_params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def _run_stage(repo, *args, backend="tensorflow", env=None):
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=repo.path,
        env={**tool_env(), "KERAS_BACKEND": backend, "JAX_LOG_COMPILES": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _run_features(repo, images, backend="tensorflow", env=None):
    """The features stage on ``images`` (12) as prepared train, val and test splits."""
    prepared = repo.path / "data" / "prepared"
    prepared.mkdir(parents=True)
    for split, rows in {"train": slice(0, 8), "val": slice(8, 10), "test": slice(10, 12)}.items():
        np.save(prepared / f"{split}_x.npy", images[rows])
        np.save(prepared / f"{split}_y.npy", np.arange(len(images))[rows] % 2)
    (prepared / "classes.json").write_text(json.dumps(["a", "b"]))
    outputs = ["data/features", "models/feature_extractor.keras", "metrics/features.json"]
    arguments = ["stages.features", "data/prepared", *outputs, "compute/features.json"]
    return _run_stage(repo, *arguments, backend=backend, env=env)


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_dinov2_features_stage_equals_the_transformers_reference(tmp_path, backend):
    """The features stage on a transformers Dinov2Model folder (preprocessing, position
    embeddings interpolated 56 -> 28 px, class token ++ patch mean) gives the features that
    transformers' Dinov2Model gives in PyTorch (tests/make_dinov2_reference.py), within 1e-4;
    on jax with one compilation of its predict step."""
    reference = np.load(DINOV2_REFERENCE)
    images, expected = reference["images"], reference["features"]
    repo = project_files(tmp_path / "repo")
    shutil.copytree(DINOV2_TRANSFORMERS, repo.path / "weights" / "dinov2_tiny")
    repo.set_params(
        {
            "model": {
                "backbone": "dinov2_small",
                "weights": "weights/dinov2_tiny",
                "image_size": 28,  # the images' own size: no resize in the comparison
            },
            "compute": {"backend": backend, "precision": "float32"},
            "features": {"batch_size": 5},  # a padded last batch too
        }
    )
    result = _run_features(repo, images, backend=backend)
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.concatenate(
        [np.load(repo.path / "data" / "features" / f"{s}.npy") for s in ("train", "val", "test")]
    )
    assert got.shape == expected.shape == (12, 64)
    assert np.abs(got - expected).max() < 1e-4
    if backend == "jax":  # three splits, a padded last batch: one compiled predict step, and
        # on a CPU the estimate's (its timing batch) and its throwaway training step (a preset
        # has no blocks to time apart: the whole base only)
        compiled = Counter(re.findall(r"Compiling jit\((\w+_step)\)", result.stderr))
        assert compiled == {"predict_step": 2, "train_step": 1}, compiled


@pytest.mark.parametrize(
    "backbone, image_size, weights, message",
    [
        ("dinov2_small", 224 + 7, "imagenet", "not a multiple of dinov2_small's patch size 14"),
        ("dinov2_base", 32, "imagenet", "use 28 or 42"),
        ("vit_base_patch16_224_imagenet21k", 384, "imagenet", "loads only at 224 px"),
        ("clip_vit_large_patch14", 32, "imagenet", "use 28 or 42"),
        ("dinov2_small", 224, "weights/dinov2.h5", "whose weights are a preset folder"),
        ("xception", 224, "weights/dinov2_small", "not a .h5 weights file of xception"),
    ],
)
def test_hub_params_are_checked_before_any_stage_runs(backbone, image_size, weights, message):
    raw = default_params()
    raw["model"].update(backbone=backbone, image_size=image_size, weights=weights)
    with pytest.raises(ParamError, match=message):
        validate(raw)


def test_hub_backbones_validate_by_name_and_head_only_is_a_note_not_a_small_run():
    raw = default_params()
    raw["model"].update(backbone="dinov2_with_registers_base", weights="weights/dinov2_base/")
    raw["fine_tune"]["epochs"] = 0
    params = validate(raw)
    assert params["model"]["weights"] == "weights/dinov2_base"
    assert warnings_about(params) == [
        "head only (fine_tune.epochs 0): the backbone stayed frozen; the seed fine-tuned it for "
        "15 epochs"
    ]


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("presets")
    return {
        "dinov2": save_dinov2(folder / "dinov2_registers", registers=2),
        "mobilenet": save_mobilenet(folder / "mobilenet"),
        "siglip": save_image_text(folder / "siglip", "siglip"),
    }


def test_hub_bad_preset_folders_are_one_line_each(presets, tmp_path):
    from transfer_pipeline.models.backbones import HUB_BACKBONES
    from transfer_pipeline.models.hub import load_backbone

    dinov2 = HUB_BACKBONES["dinov2_small"]
    with pytest.raises(PipelineError, match="does not exist; copy the preset folder"):
        load_backbone(dinov2, 28, str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match="has no config.json"):
        load_backbone(dinov2, 28, str(tmp_path / "empty"))
    with pytest.raises(PipelineError, match="holds a keras_hub 'keras_hub>MobileNetBackbone'"):
        load_backbone(dinov2, 28, str(presets["mobilenet"]))
    with pytest.raises(PipelineError, match="holds a transformers 'dinov2' model"):
        load_backbone(HUB_BACKBONES["dinov2_with_registers_small"], 28, str(DINOV2_TRANSFORMERS))
    with pytest.raises(PipelineError, match="converts none for CLIPBackbone .* KerasHub's layout"):
        load_backbone(HUB_BACKBONES["clip_vit_base_patch16"], 32, str(DINOV2_TRANSFORMERS))
    with pytest.raises(PipelineError, match="'keras_hub>CLIPBackbone' model, not the SigLIPBack"):
        load_backbone(HUB_BACKBONES["siglip2_base_patch16_224"], 32, str(CLIP_KERAS_HUB))
    with pytest.raises(PipelineError, match="patch size 16, not the 14 of clip_vit_large_patch14"):
        load_backbone(HUB_BACKBONES["clip_vit_large_patch14"], 28, str(CLIP_KERAS_HUB))
    missing = shutil.copytree(presets["dinov2"], tmp_path / "missing")
    (missing / "model.weights.h5").unlink()
    with pytest.raises(PipelineError, match="has no model.weights.h5: copy the whole preset"):
        load_backbone(dinov2, 28, str(missing))
    for name, file in (("keras", "model.weights.h5"), ("transformers", "model.safetensors")):
        source = presets["dinov2"] if name == "keras" else DINOV2_TRANSFORMERS
        truncated = shutil.copytree(source, tmp_path / f"truncated-{name}")
        data = (truncated / file).read_bytes()
        (truncated / file).write_bytes(data[: len(data) // 2])
        truncated_message = "cannot be loaded as dinov2_small .*truncated"
        with pytest.raises(PipelineError, match=truncated_message) as raised:
            load_backbone(dinov2, 28, str(truncated))
        assert "\n" not in str(raised.value)


def test_hub_by_name_failures_are_one_line_each(tmp_path, monkeypatch):
    """model.weights: imagenet, the preset by name: with the network unreachable and the
    preset not in kagglehub's cache, the offline line; a damaged download in the cache, a line
    naming the preset and the error."""
    from blocked_imports.no_network import refuse_connections

    from transfer_pipeline.models.backbones import HUB_BACKBONES
    from transfer_pipeline.models.hub import load_backbone

    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    refuse_connections(monkeypatch.setattr)  # this process's sockets: no variable lifts it
    monkeypatch.setenv("NO_PROXY", "*")  # as a user's environment may have it
    with pytest.raises(OSError, match="network blocked in this test"):
        socket.create_connection(("www.kaggle.com", 443), timeout=5)
    dinov2 = HUB_BACKBONES["dinov2_small"]
    offline = r"cannot download the KerasHub preset dinov2_small \(\w+\)\. Offline: .* weights/"
    with pytest.raises(PipelineError, match=offline) as raised:
        load_backbone(dinov2, 28, "imagenet")
    assert "\n" not in str(raised.value)

    cached = save_in_kagglehub_cache(tmp_path / "kagglehub", "dinov2_small")
    data = (cached / "model.weights.h5").read_bytes()
    (cached / "model.weights.h5").write_bytes(data[: len(data) // 2])
    damaged = r"cannot load the KerasHub preset dinov2_small by name \(OSError: .*truncated"
    with pytest.raises(PipelineError, match=damaged) as raised:
        load_backbone(dinov2, 28, "imagenet")
    assert "\n" not in str(raised.value) and "kagglehub's cache" in str(raised.value)
    # The broken file and the cache folder in use (KAGGLEHUB_CACHE), not the default one.
    assert f"{cached / 'model.weights.h5'} is damaged" in str(raised.value)
    assert f"kagglehub's cache {tmp_path / 'kagglehub'}" in str(raised.value)
    assert f"remove {cached} to download it again" in str(raised.value)


def test_hub_by_name_without_kagglehub_is_one_line(tmp_path):
    """model.weights: imagenet with kagglehub not installed (its import blocked, as an absent
    package fails; the install of KerasHub with --no-deps once left it out): the features
    stage stops with one line that says how to install it."""
    repo = project_files(tmp_path / "repo")
    repo.set_params(
        {
            "model": {"backbone": "dinov2_small", "weights": "imagenet", "image_size": 28},
            "compute": {"precision": "float32"},
        }
    )
    blocked = {"PYTHONPATH": str(BLOCKED_IMPORTS), "BLOCKED_IMPORTS": "kagglehub", **NO_NETWORK}
    images = np.load(DINOV2_REFERENCE)["images"]
    result = _run_features(repo, images, env=blocked)
    assert result.returncode == 1, result.stderr[-3000:]
    assert stderr_lines(result) == [
        "error: model.weights: imagenet loads the KerasHub preset dinov2_small by name through "
        "kagglehub, which is not installed; install it with pip install -e . (the project's "
        "dependencies bring it), or give the preset's folder as model.weights (docs/backbones.md)"
    ]


def test_hub_dinov2_pools_class_token_and_patch_mean_without_registers(presets, tmp_path):
    """DINOv2 with 2 registers: the features are [class token, mean of the 4 patch tokens],
    the registers (tokens 1-2) left out; the saved extractor reloads to the same numbers."""
    import keras

    from transfer_pipeline.models.model import backbone_of, build_feature_extractor, load_model

    extractor = build_feature_extractor(
        "dinov2_with_registers_small", 32, 28, str(presets["dinov2"])
    )
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("float32")
    features = keras.ops.convert_to_numpy(extractor(images))
    preprocessed = keras.Model(extractor.input, extractor.get_layer("preprocess").output)(images)
    base = backbone_of(extractor)
    tokens = keras.ops.convert_to_numpy(base({"images": preprocessed}))
    assert tokens.shape == (3, 1 + 2 + 4, 32)
    expected = np.concatenate([tokens[:, 0], tokens[:, 3:].mean(axis=1)], axis=-1)
    np.testing.assert_allclose(features, expected, atol=1e-6)
    extractor.save(tmp_path / "extractor.keras")
    reloaded = load_model(tmp_path / "extractor.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(images)), features, atol=1e-6)


def test_hub_clip_features_equal_the_transformers_reference():
    """The feature extractor on a tiny KerasHub CLIP preset (tests/data/clip_tiny/, trained at
    32 px) run at 48 px gives the features of transformers' CLIPVisionModel in PyTorch with
    interpolate_pos_encoding (tests/make_clip_reference.py), within 1e-4: CLIP's preprocessing,
    its position embeddings interpolated as PyTorch does, the class token after the final
    LayerNorm and before the projection (CLIP's linear probes). Layer-wise learning-rate decay
    finds its blocks."""
    import keras

    from transfer_pipeline.models.model import backbone_of, build_feature_extractor
    from transfer_pipeline.models.optimizers import layer_decay_factors

    reference = np.load(CLIP_REFERENCE)
    images, expected = reference["images"].astype("float32"), reference["features"]
    extractor = build_feature_extractor("clip_vit_base_patch16", 48, 48, str(CLIP_KERAS_HUB))
    got = keras.ops.convert_to_numpy(extractor(images))
    assert got.shape == expected.shape == (12, 32)
    assert np.abs(got - expected).max() < 1e-4

    # Layer-wise learning-rate decay knows CLIP's blocks: embeddings and the LayerNorm before
    # the blocks at decay ** 3, block i of 2 at decay ** (2 - i), the final LayerNorm at 1.
    base = backbone_of(extractor)
    base.trainable = True
    factors = layer_decay_factors(extractor, base, 0.5)
    by_layer = {}
    for variable, factor in zip(extractor.trainable_variables, factors, strict=True):
        layer = variable.path.split("/")[0].removeprefix("clip_vision_encoder_")
        by_layer.setdefault(layer, set()).add(factor)
    assert by_layer == {
        "embedding": {0.125},
        "pre_layer_norm": {0.125},
        "encoder_block_0": {0.25},
        "encoder_block_1": {0.5},
        "layer_norm": {1.0},
    }


def test_hub_siglip_features_are_its_attention_pooled_image_embedding_at_any_patch_multiple(
    presets, tmp_path
):
    """SigLIP's features are KerasHub's own image embedding (its attention-pooling head),
    preprocessed by the preset's image converter. At another size only the position
    embeddings change (a 3 x 3 grid from 2 x 2, no class token), every other weight is
    copied, and the saved extractor reloads to the same numbers."""
    import keras
    import keras_hub

    from transfer_pipeline.models.model import backbone_of, build_feature_extractor, load_model

    folder = str(presets["siglip"])
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("float32")
    extractor = build_feature_extractor("siglip2_base_patch16_224", 32, 32, folder)
    siglip = keras_hub.models.Backbone.from_preset(folder)
    converter = keras_hub.layers.ImageConverter.from_preset(folder)
    expected = keras.ops.convert_to_numpy(siglip.get_vision_embeddings(converter(images)))
    got = keras.ops.convert_to_numpy(extractor(images))
    assert got.shape == (3, 32)
    np.testing.assert_allclose(got, expected, atol=1e-5)

    at_48 = build_feature_extractor("siglip2_base_patch16_224", 32, 48, folder)
    trained, resized = backbone_of(extractor), backbone_of(at_48)
    assert resized.image_shape[:2] == (48, 48)
    changed = [
        v.path
        for v, w in zip(trained.weights, resized.weights)
        if v.shape != w.shape
        or not np.array_equal(keras.ops.convert_to_numpy(v), keras.ops.convert_to_numpy(w))
    ]
    assert sorted(path.split("/", 1)[1] for path in changed) == [
        "position_embedding/embeddings",
        "position_ids",
    ]
    assert tuple(resized.embedding.position_embedding.embeddings.shape) == (9, 32)
    at_48.save(tmp_path / "extractor.keras")
    features = keras.ops.convert_to_numpy(at_48(images))
    reloaded = keras.ops.convert_to_numpy(load_model(tmp_path / "extractor.keras")(images))
    np.testing.assert_array_equal(reloaded, features)


def test_hub_dinov2_fine_tunes_with_adamw(presets):
    """Unfrozen DINOv2 + head, AdamW with weight decay: a training step changes the
    transformer's weights and gives a finite loss."""
    import keras

    from transfer_pipeline.models.model import (
        backbone_of,
        build_classifier,
        build_feature_extractor,
        build_head,
        unfreeze,
    )
    from transfer_pipeline.models.optimizers import optimizer

    extractor = build_feature_extractor(
        "dinov2_with_registers_small", 32, 28, str(presets["dinov2"])
    )
    classifier = build_classifier(extractor, build_head(64, [16], 0.0, 3))
    assert unfreeze(backbone_of(extractor), "all") > 0
    adamw = optimizer("adam", 1e-3, 0.9, 0.05)  # weight decay > 0: AdamW
    classifier.compile(optimizer=adamw, loss="categorical_crossentropy")
    before = [keras.ops.convert_to_numpy(w).copy() for w in backbone_of(extractor).weights]
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    loss = classifier.train_on_batch(x, np.eye(3)[[0, 1, 2, 0]])
    assert np.isfinite(loss)
    after = [keras.ops.convert_to_numpy(w) for w in backbone_of(extractor).weights]
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))


def test_hub_pipeline_head_only_exports_predicts_and_a_backbone_switch_reruns_from_features(
    tmp_path,
):
    """dvc repro with DINOv2 by name (model.weights: imagenet), a tiny preset that kagglehub
    serves from its cache (KAGGLEHUB_CACHE) as it would after a download, with the network
    unreachable; fine_tune.epochs 0: the exported models pass their parity checks, tl-predict
    ranks an image, the report says the backbone was frozen. Then DINOv2 fine-tuned with
    layer-wise learning-rate decay, AdamW and stochastic depth (fine_tune alone reruns). Then
    model.backbone switched to MobileNetV3 (a preset folder): prepare is not rerun, features
    and the head are."""
    repo = new_repo(tmp_path / "repo")
    save_in_kagglehub_cache(tmp_path / "kagglehub", "dinov2_small")
    by_name = {"KAGGLEHUB_CACHE": str(tmp_path / "kagglehub"), **NO_NETWORK}
    save_mobilenet(repo.path / "weights" / "mobilenet_v3")
    repo.dvc("add", "-q", "weights/mobilenet_v3")
    repo.set_params(
        {
            "model": {"backbone": "dinov2_small", "weights": "imagenet", "image_size": 28},
            # A preset is not cut into blocks (the tiny recipe counts 2): fine-tuned below, all.
            "fine_tune": {"epochs": 0, "unfreeze": "all"},
            "export": {"formats": ["saved_model", "onnx", "litert"]},
        }
    )
    repo.commit("tiny DINOv2, head only")
    first = repo.dvc("repro", env=by_name)
    assert "fine_tune.epochs 0: backbone + head saved" in first.stdout
    evaluated = repo.json("dvclive/evaluate/metrics.json")["test_accuracy"]
    for fmt in ("saved_model", "onnx", "litert"):  # every test image is in the parity sample
        metrics = repo.json(f"metrics/export/{fmt}.json")
        assert metrics["keras_test_accuracy"] == round(evaluated, 6), (fmt, metrics)
        assert metrics["changed_class"] == 0, (fmt, metrics)  # the same answers, not just as many
        # Only a near tie may flip (this preset has one in float16: 0.46794 against 0.46786).
        ties = metrics["near_ties"] / metrics["parity_images"]
        difference = abs(metrics["runtime_test_accuracy"] - metrics["keras_test_accuracy"])
        assert difference <= ties + 1e-6, (fmt, metrics)
    report = (repo.path / "report" / "report.md").read_text()
    assert "backbone frozen (fine_tune.epochs 0)" in report
    image = repo.path / "one.png"
    from PIL import Image

    Image.fromarray(np.load(repo.path / "data/prepared/test_x.npy")[0]).save(image)
    predicted = repo.run(sys.executable, "-m", "transfer_pipeline.shipping.predict", str(image))
    assert predicted.stdout.startswith(f"{image}: ") and not stderr_lines(predicted)
    repo.commit("DINOv2 run")

    # DINOv2 fine-tuned with layer decay, AdamW and drop path: only fine_tune reruns.
    repo.set_params(
        {
            "fine_tune": {
                "epochs": 1,
                "layer_decay": 0.75,
                "weight_decay": 0.05,
                "drop_path_rate": 0.1,
            }
        }
    )
    tuned = repo.dvc("repro", "fine_tune", env=by_name)  # rebuilt by name at that rate
    assert repo.ran_stages(tuned.stdout) == {"fine_tune"}
    assert repo.json("dvclive/fine_tune/metrics.json")["best_epoch"] == 1
    with zipfile.ZipFile(repo.path / "models" / "fine_tuned.keras") as saved:
        assert '"drop_path_rate": 0.1' in saved.read("config.json").decode()

    # The switch to the CNN family: prepare is not rerun, features and the head are (its
    # exports are checked in process below).
    repo.set_params(
        {
            "model": {
                "backbone": "mobilenet_v3_large_100_imagenet_21k",
                "weights": "weights/mobilenet_v3",
                "image_size": 32,
            },
            "fine_tune": {"layer_decay": 1.0, "weight_decay": 0.0, "drop_path_rate": None},
        }
    )
    switched = repo.dvc("repro", "train_head")
    # weights: model.weights changed (the stage reads the folder and writes its MD5s).
    assert repo.ran_stages(switched.stdout) == {"weights", "features", "train_head"}
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    assert params["model"]["backbone"] == "xception"  # the project's defaults untouched


def test_hub_dinov2_layer_decay_scales_each_blocks_first_adam_step_and_survives_a_checkpoint(
    presets, tmp_path
):
    """fine_tune.layer_decay 0.5 on a 2-block DINOv2: Adam's first step moves each weight by
    about lr times its factor (head and final norm 1, block 2 0.5, block 1 0.25, embeddings
    0.125); a model saved with its optimizer (the resume checkpoint) reloads the factors."""
    import keras

    from transfer_pipeline.models.model import (
        backbone_of,
        build_classifier,
        build_feature_extractor,
        build_head,
        load_model,
        unfreeze,
    )
    from transfer_pipeline.models.optimizers import layer_decay_factors, optimizer

    extractor = build_feature_extractor("dinov2_small", 32, 28, str(presets["dinov2"]))
    classifier = build_classifier(extractor, build_head(64, [16], 0.0, 3))
    unfreeze(backbone_of(extractor), "all")
    factors = layer_decay_factors(classifier, backbone_of(extractor), 0.5)
    by_path = dict(zip((v.path for v in classifier.trainable_variables), factors))

    def factor(suffix: str) -> float:
        (found,) = [f for path, f in by_path.items() if path.endswith(suffix)]
        return found

    assert factor("embeddings/cls_token") == 0.125
    assert factor("encoder/layers_0/mlp/fc1/kernel") == 0.25
    assert factor("encoder/layers_1/mlp/fc1/kernel") == 0.5
    assert factor("backbone_layernorm/gamma") == 1.0 and factor("probabilities/kernel") == 1.0
    classifier.compile(optimizer=optimizer("adam", 1e-3, lr_factors=factors), loss="mse")
    before = [keras.ops.convert_to_numpy(v).copy() for v in classifier.trainable_variables]
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    classifier.train_on_batch(x, np.eye(3)[[0, 1, 2, 0]])
    checked = 0
    for variable, old, factor in zip(classifier.trainable_variables, before, factors):
        # Adam's first step is lr * g / (|g| + eps): lr wherever |g| >> eps, as in any kernel
        # (a key bias gets no gradient: attention is invariant to it)
        if variable.path.endswith(("kernel", "cls_token")):
            step = np.abs(keras.ops.convert_to_numpy(variable) - old).max()
            assert step == pytest.approx(1e-3 * factor, rel=0.01), variable.path
            checked += 1
    assert checked > 10
    classifier.save(tmp_path / "checkpoint.keras")  # with its optimizer, as resume.py saves
    reloaded = load_model(tmp_path / "checkpoint.keras")
    assert type(reloaded.optimizer).__name__ == "LayerwiseAdam"
    assert reloaded.optimizer.lr_factors == factors


def test_hub_dinov2_stochastic_depth_drops_whole_samples_trains_and_resumes(presets, tmp_path):
    """fine_tune.drop_path_rate on DINOv2 (KerasHub 0.32's own drop path cannot train:
    hub_fixes.py): the fine-tuning twin drops each sample's residual branch whole, is the
    frozen extractor in inference, trains inside fit, and a resume checkpoint brings back its
    random state."""
    import keras

    from transfer_pipeline.models.hub_fixes import DropPath
    from transfer_pipeline.models.model import (
        backbone_of,
        build_classifier,
        build_feature_extractor,
        build_head,
        twin_extractor,
        unfreeze,
    )
    from transfer_pipeline.running.resume import Checkpoints, _seed_states

    folder = str(presets["dinov2"])
    extractor = build_feature_extractor("dinov2_small", 32, 28, folder)
    twin = twin_extractor(extractor, "dinov2_small", 28, "float32", folder, drop_path_rate=0.5)
    blocks = backbone_of(twin).encoder.layers
    assert [type(b.drop_path) for b in blocks] == [DropPath, DropPath]
    assert {b.drop_path.rate for b in blocks} == {0.5}
    x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(twin(x)), keras.ops.convert_to_numpy(extractor(x))
    )

    # Whole branches: every sample's output is all 0 or all 1 / (1 - rate) = 2, never between.
    dropped = keras.ops.convert_to_numpy(blocks[0].drop_path(np.ones((64, 5, 3)), training=True))
    per_sample = {tuple(np.unique(sample)) for sample in dropped}
    assert per_sample == {(0.0,), (2.0,)}

    classifier = build_classifier(twin, build_head(64, [16], 0.0, 3))
    unfreeze(backbone_of(twin), "all")
    classifier.compile(optimizer="adam", loss="categorical_crossentropy")
    history = classifier.fit(x, np.eye(3)[np.arange(8) % 3], batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    checkpoints = Checkpoints(tmp_path / "resume", "fingerprint")
    checkpoints.set_model(classifier)
    checkpoints.on_epoch_end(0, {"val_accuracy": 0.5})
    resumed = Checkpoints(tmp_path / "resume", "fingerprint")
    assert resumed.resume_point()["epochs_done"] == 1
    reloaded = resumed.load_latest()
    states = [keras.ops.convert_to_numpy(v) for v in _seed_states(classifier)]
    assert len(states) == 2  # one per block's drop path
    for state, again in zip(states, _seed_states(reloaded), strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(again), state)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(reloaded(x)), keras.ops.convert_to_numpy(classifier(x))
    )


def test_hub_dinov2_saves_its_fine_tuned_position_embeddings(presets, tmp_path):
    """KerasHub 0.32 saves DINOv2's position embeddings only if the signed sum of their change
    is positive (hub_fixes.py): a change that sums below zero is saved too."""
    import keras

    from transfer_pipeline.models.model import backbone_of, build_feature_extractor, load_model
    from transfer_pipeline.models.saving import save_model

    extractor = build_feature_extractor("dinov2_small", 32, 28, str(presets["dinov2"]))
    embeddings = backbone_of(extractor).embeddings
    tuned = embeddings.interpolated_position_embeddings
    rng = np.random.default_rng(0)
    tuned.assign(tuned + 0.5 * rng.random(tuned.shape))  # as fine-tuning moves them; sum > 0
    x = rng.integers(0, 256, (4, 32, 32, 3)).astype("float32")
    save_model(extractor, tmp_path / "extractor.keras")
    reloaded = load_model(tmp_path / "extractor.keras")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded(x)), keras.ops.convert_to_numpy(extractor(x)), atol=1e-5
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"fine_tune": {"layer_decay": 0.7}}, "xception has none"),
        ({"fine_tune": {"drop_path_rate": 0.1}}, "xception has none"),
        (
            {
                "model": {"backbone": "clip_vit_base_patch16", "image_size": 224},
                "fine_tune": {"drop_path_rate": 0.1},
            },
            "clip_vit_base_patch16 has none .presets with it: dinov2_small",
        ),
        ({"fine_tune": {"drop_path_rate": 1.0}}, "drop_path_rate.*<= 0.95 or null"),
        (
            {
                "model": {"backbone": "dinov2_small"},
                "fine_tune": {"layer_decay": 0.7, "optimizer": "sgd"},
            },
            "works with fine_tune.optimizer adam or adamw",
        ),
    ],
)
def test_hub_fine_tuning_params_fit_the_backbone(overrides, message):
    raw = default_params()
    for section, values in overrides.items():
        raw[section].update(values)
    with pytest.raises(ParamError, match=message):
        validate(raw)


def test_hub_mobilenet_exports_to_litert_with_parity_and_not_to_onnx_in_one_line(presets, tmp_path):
    """The CNN family's classifier (the export stage's own convert and runtime): LiteRT
    (float16) ranks like Keras; tf2onnx cannot convert KerasHub MobileNetV3's convolutions,
    which is one line naming the format."""
    from transfer_pipeline.models.model import build_classifier, build_feature_extractor, build_head
    from transfer_pipeline.shipping.export import convert
    from transfer_pipeline.shipping.runtimes import load

    extractor = build_feature_extractor(
        "mobilenet_v3_large_100_imagenet_21k", 32, 32, str(presets["mobilenet"])
    )
    width = extractor.output.shape[-1]
    classifier = build_classifier(extractor, build_head(width, [16], 0.0, 3))
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype("uint8")
    keras_side = classifier.predict(images, verbose=0)
    (tmp_path / "litert").mkdir()
    litert = load(convert(classifier, "litert", tmp_path / "litert")).predict(images)
    np.testing.assert_allclose(litert, keras_side, atol=0.01)  # float16 weights
    (tmp_path / "onnx").mkdir()
    with pytest.raises(PipelineError) as raised:
        convert(classifier, "onnx", tmp_path / "onnx")
    message = str(raised.value)
    assert message.startswith("exporting the model as onnx failed: tf2onnx could not convert")
    assert "\n" not in message
