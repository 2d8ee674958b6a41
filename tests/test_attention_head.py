"""The attention head (``train --head attention``): how it starts, that it learns, the setting's
checks, and a pretrained fine-tune that saves, loads, predicts and explains with it."""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np
import pytest

from bcp_core.config import LITE_RECIPE, SCRATCH_RECIPE, TrainConfig
from bcp_core.errors import UserError
from bcp_core.model.architectures import FEATURE_MAP_LAYER, build_model

SIZE = (128, 96)  # the default CNN's feature map: 4 x 3 cells


def attention_of(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """(batch, cells) attention weights of ``images``."""
    probe = keras.Model(model.input, model.get_layer("head_attention").output)
    return np.asarray(probe(images))[..., 0]


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *SIZE, 1), dtype=np.float32)


def test_the_attention_head_starts_as_the_pooling_head_and_its_weights_sum_to_one():
    attention = build_model("default_cnn", SIZE, seed=1, head="attention")
    pool = build_model("default_cnn", SIZE, seed=1)
    shared = {layer.name for layer in attention.layers} & {layer.name for layer in pool.layers}
    for name in shared:  # the same weights wherever the two models share a layer
        attention.get_layer(name).set_weights(pool.get_layer(name).get_weights())
    x = images(3)
    weights = attention_of(attention, x)
    cells = int(np.prod(attention.get_layer(FEATURE_MAP_LAYER).output.shape[1:3]))
    assert weights.shape == (3, cells) == (3, 12)
    np.testing.assert_allclose(weights, 1.0 / cells, rtol=1e-5)
    np.testing.assert_allclose(attention.predict(x, verbose=0), pool.predict(x, verbose=0), 1e-5)
    assert {"head_attention_v", "head_attention_u", "head_attention_score"} <= {
        layer.name for layer in attention.layers
    }
    assert "head_avg_pool" not in {layer.name for layer in attention.layers}


def test_training_moves_the_attention_off_equal_weights_and_keeps_their_sum():
    model = build_model("default_cnn", SIZE, seed=2, head="attention", output_bias=0.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    x = images(16, seed=3)
    x[8:, 40:56, 30:46] = 1.0  # positives hold one bright square
    y = np.array([0] * 8 + [1] * 8, "float32")[:, None]
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
    weights = attention_of(model, x)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    assert np.ptp(weights, axis=1).max() > 1e-3, weights  # no longer one weight for all cells


def test_the_setting_defaults_to_pool_is_checked_and_recorded_only_when_used():
    assert LITE_RECIPE.head == SCRATCH_RECIPE.head == "pool"
    assert "head" not in TrainConfig(model="efficientnet_lite0").validate().to_dict()
    on = TrainConfig(model="efficientnet_lite0", head="attention").validate()
    assert on.to_dict()["head"] == "attention"
    assert "attention head" in replace(LITE_RECIPE, head="attention").describe()
    assert "head" not in LITE_RECIPE.describe()
    TrainConfig(model="default_cnn", head="attention").validate()
    with pytest.raises(UserError, match="The head must be one of pool, attention, got 'gem'"):
        TrainConfig(model="efficientnet_lite0", head="gem").validate()
    for model in ("seed_cnn", "mil_cnn"):
        with pytest.raises(UserError, match=f"The {model} model has a head of its own"):
            TrainConfig(model=model, head="attention").validate()
    with pytest.raises(UserError, match="apply to default_cnn"):
        build_model("mil_cnn", SIZE, head="attention")


def test_train_takes_the_head_from_the_command_line():
    from bcp_core.cli import _train_config, build_parser

    def cfg(*extra: str) -> TrainConfig:
        args = build_parser().parse_args(["train", "--data-root", ".", "--out", "b", *extra])
        return _train_config(args)

    assert cfg("--head", "attention").head == "attention"
    assert cfg().head == "pool"
    with pytest.raises(UserError, match="has a head of its own"):
        cfg("--model", "seed_cnn", "--head", "attention")
    with pytest.raises(SystemExit):
        cfg("--head", "gem")


@pytest.mark.slow
def test_a_lite0_fine_tune_with_the_attention_head_saves_loads_predicts_and_explains(
    tiny_manifest, tmp_path
):
    from bcp_core.inference.predict import predict_one
    from bcp_core.model.bundle import load_bundle
    from bcp_core.model.training import train_model

    cfg = TrainConfig(
        model="efficientnet_lite0", image_size=(64, 48), epochs=1, batch_size=8,
        val_fraction=0.3, seed=4, keep_from_epoch=1, tta_passes=1, head="attention",
    )  # fmt: skip
    train_model(tiny_manifest, cfg, tmp_path / "run")
    bundle = load_bundle(tmp_path / "run")
    assert bundle.meta.training["head"] == "attention"
    assert bundle.model.get_layer("head_attention").output.shape[1:] == (2 * 2, 1)
    result = predict_one(bundle, tiny_manifest["path"].iloc[0])
    assert 0.0 <= result.prediction.probability <= 1.0
    assert result.input_heatmap is not None and result.input_heatmap.shape == (64, 48)
    assert np.isfinite(result.heatmap).all()
