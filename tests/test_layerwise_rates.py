"""Layer-wise rates (``train --rate-decay``): the optimiser's per-weight rate, the factors down
the EfficientNet-Lite backbone, the setting's checks, and a fine-tune that uses them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import keras
import numpy as np
import pytest

from bcp_core.config import LITE_RECIPE, SCRATCH_RECIPE, TrainConfig
from bcp_core.errors import UserError
from bcp_core.model import pretrained
from bcp_core.model.optimizers import LayerwiseAdam


def two_layer_model() -> keras.Model:
    keras.utils.set_random_seed(5)
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="a"), keras.layers.Dense(1, name="b")]
    )


def weights_after_steps(optimizer: Callable[[dict], keras.optimizers.Optimizer], steps=1) -> list:
    """How far each weight of a fixed two-layer model moves in ``steps`` steps on fixed data,
    trained by ``optimizer(paths)`` (paths: "a/kernel" etc. -> the weight's ``path``)."""
    model = two_layer_model()
    paths = {f"{layer.name}/{v.name}": v.path for layer in model.layers for v in layer.weights}
    model.compile(optimizer=optimizer(paths), loss="mse")
    before = [w.copy() for w in model.get_weights()]
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(8, 4)).astype("float32"), rng.normal(size=(8, 1)).astype("float32")
    model.fit(x, y, batch_size=8, epochs=steps, verbose=0, shuffle=False)
    return [after - start for after, start in zip(model.get_weights(), before, strict=True)]


def test_a_named_weight_steps_at_its_share_of_the_rate_and_the_others_as_with_adam():
    plain = weights_after_steps(lambda _: keras.optimizers.Adam(0.01))
    scaled = weights_after_steps(
        lambda paths: LayerwiseAdam(0.01, rate_factors={paths["a/kernel"]: 0.25})
    )
    # [a/kernel, a/bias, b/kernel, b/bias]: after one step every weight has the same gradient
    np.testing.assert_allclose(scaled[0], 0.25 * plain[0], rtol=1e-4, atol=1e-7)
    for mine, adams in zip(scaled[1:], plain[1:], strict=True):
        np.testing.assert_allclose(mine, adams, rtol=1e-5, atol=1e-8)
    assert np.abs(plain[0]).min() > 1e-4  # the step is there to be scaled


def test_the_factor_multiplies_a_schedule_too_and_every_step():
    schedule = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=10)
    scaled = weights_after_steps(
        lambda paths: LayerwiseAdam(schedule, rate_factors={paths["b/bias"]: 0.1}), steps=3
    )
    plain = weights_after_steps(lambda _: keras.optimizers.Adam(schedule), steps=3)
    # Over three steps the gradients part ways, but b's bias moves about a tenth as far.
    ratio = np.abs(scaled[3]).sum() / np.abs(plain[3]).sum()
    assert 0.05 < ratio < 0.2, ratio


def test_factors_outside_zero_to_one_are_refused_and_the_config_round_trips():
    for bad in (0.0, -1.0, 1.5):
        with pytest.raises(ValueError, match="Rate factors must be in"):
            LayerwiseAdam(0.01, rate_factors={"a/kernel": bad})
    optimizer = LayerwiseAdam(0.003, rate_factors={"a/kernel": 0.5})
    again = LayerwiseAdam.from_config(optimizer.get_config())
    assert again.rate_factors == {"a/kernel": 0.5}
    assert math.isclose(float(again.learning_rate), 0.003, rel_tol=1e-6)


@pytest.fixture(scope="module")
def lite0_backbone():
    return pretrained.build_backbone("efficientnet_lite0", (64, 64, 3))


def test_the_rate_falls_one_factor_a_stage_from_the_head_convolution_to_the_stem(
    lite0_backbone,
):
    stages = pretrained.layer_stages(lite0_backbone)
    order = [stages[layer.name] for layer in lite0_backbone.layers if layer.weights]
    assert order == sorted(order) and order[0] == 0 and order[-1] == 8
    assert set(order) == set(range(9))  # stem, the 7 stages, the head convolution
    factors = pretrained.rate_factors(lite0_backbone, 0.5)
    assert factors["head_conv/kernel"] == 0.5
    assert factors["stem_conv/kernel"] == 0.5**9
    assert factors["block0_dwconv/kernel"] == 0.5**8  # stage 1
    assert factors["block15_project_conv/kernel"] == 0.5**2  # the last block: stage 7
    every = {v.path for v in lite0_backbone.trainable_weights}
    assert set(factors) == every  # batch norm's moving statistics are not trained


def test_frozen_stages_keep_no_factor_and_the_stages_match_freezing():
    backbone = pretrained.build_backbone("efficientnet_lite0", (64, 64, 3), weights=False)
    stages = pretrained.layer_stages(backbone)
    pretrained.freeze_stages(backbone, 2)
    for layer in backbone.layers:
        assert layer.trainable == (stages[layer.name] > 2), layer.name
    factors = pretrained.rate_factors(backbone, 0.8)
    assert min(factors.values()) == pytest.approx(0.8**6)  # stage 3, the first that learns
    assert not any(path.startswith(("stem_", "block0_", "block1_")) for path in factors)


def test_the_setting_defaults_to_one_rate_is_checked_and_recorded_only_when_used():
    assert LITE_RECIPE.rate_decay == SCRATCH_RECIPE.rate_decay == 1
    assert "rate_decay" not in TrainConfig(model="efficientnet_lite0").validate().to_dict()
    on = TrainConfig(model="efficientnet_lite0", rate_decay=0.8).validate()
    assert on.to_dict()["rate_decay"] == 0.8
    assert "layer-wise rates (x0.8 a stage down)" in replace(LITE_RECIPE, rate_decay=0.8).describe()
    for bad in (0.05, 1.5, "slow", float("nan")):
        with pytest.raises(UserError, match="Layer-wise rate decay must be from 0.1 to 1"):
            TrainConfig(model="efficientnet_lite0", rate_decay=bad).validate()
    for other in (
        TrainConfig(model="default_cnn", rate_decay=0.8),
        TrainConfig(model="efficientnet_lite0", rate_decay=0.8, fine_tune=False),
    ):
        with pytest.raises(UserError, match="Layer-wise rates apply to a fine-tuned EfficientNet"):
            other.validate()


def test_train_takes_rate_decay_from_the_command_line():
    from bcp_core.cli import _train_config, build_parser

    def cfg(*extra: str) -> TrainConfig:
        args = build_parser().parse_args(["train", "--data-root", ".", "--out", "b", *extra])
        return _train_config(args)

    assert cfg("--rate-decay", "0.7").rate_decay == 0.7
    assert cfg().rate_decay == 1
    with pytest.raises(UserError, match="Layer-wise rates apply"):
        cfg("--model", "default_cnn", "--rate-decay", "0.7")


@pytest.mark.slow
def test_a_fine_tune_with_layer_wise_rates_moves_deep_weights_less_and_saves_a_bundle(
    tiny_manifest, tmp_path
):
    """One seed, one epoch, the same batches: with decay 0.3 the first stage that learns
    (stage 3, at 0.3 ** 6 of the rate) moves far less from ImageNet than with one rate, while
    the new head learns at the full rate in both."""
    from bcp_core.inference.predict import predict_one
    from bcp_core.model.architectures import BACKBONE_LAYER
    from bcp_core.model.bundle import load_bundle
    from bcp_core.model.training import train_model

    imagenet = pretrained.keras_weights("efficientnet_lite0")
    base = dict(
        model="efficientnet_lite0", image_size=(64, 48), epochs=1, batch_size=8,
        val_fraction=0.3, seed=4, learning_rate=1e-3, keep_from_epoch=1, tta_passes=1,
        frozen_stages=2,
    )  # fmt: skip
    moved = {}
    for name, decay in (("one", 1.0), ("decay", 0.3)):
        train_model(tiny_manifest, TrainConfig(**base, rate_decay=decay), tmp_path / name)
        bundle = load_bundle(tmp_path / name)
        backbone = bundle.model.get_layer(BACKBONE_LAYER)
        stage3 = backbone.get_layer("block3_dwconv").get_weights()[0]
        head = backbone.get_layer("head_conv").get_weights()[0]
        moved[name] = (
            np.abs(stage3 - imagenet["block3_dwconv/kernel"]).mean(),
            np.abs(head - imagenet["head_conv/kernel"]).mean(),
        )
        assert 0.0 <= predict_one(bundle, tiny_manifest["path"].iloc[0]).prediction.probability <= 1
    assert load_bundle(tmp_path / "decay").meta.training["rate_decay"] == 0.3
    assert "rate_decay" not in load_bundle(tmp_path / "one").meta.training
    assert moved["one"][0] > 0 and moved["decay"][0] < 0.05 * moved["one"][0], moved
    # the head convolution at 0.3 of the rate: it moves, less than with one rate
    assert 0 < moved["decay"][1] < moved["one"][1], moved
