"""The fine-tuning phases: the head alone first, then the network, with the rate's schedule."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from bcp_core.config import TrainConfig
from bcp_core.errors import UserError
from bcp_core.model import pretrained
from bcp_core.model.architectures import BACKBONE_LAYER, build_model
from bcp_core.model.training import backbone_frozen, fit_phases

LITE = {"model": "efficientnet_lite0", "fine_tune": True, "weights": "imagenet"}


@pytest.mark.parametrize(
    ("settings", "phases"),
    [
        ({**LITE, "epochs": 5, "head_epochs": 2}, [(0, 2, True), (2, 5, False)]),
        ({**LITE, "epochs": 5, "head_epochs": 0}, [(0, 5, False)]),
        # the whole network keeps at least one epoch
        ({**LITE, "epochs": 2, "head_epochs": 4}, [(0, 1, True), (1, 2, False)]),
        ({**LITE, "epochs": 1, "head_epochs": 1}, [(0, 1, False)]),
        # nothing to warm up for: the backbone is not fine-tuned, random, or absent
        ({**LITE, "epochs": 5, "head_epochs": 2, "fine_tune": False}, [(0, 5, False)]),
        ({**LITE, "epochs": 5, "head_epochs": 2, "weights": "none"}, [(0, 5, False)]),
        ({"model": "default_cnn", "epochs": 5, "head_epochs": 2}, [(0, 5, False)]),
    ],
)
def test_the_phases_of_a_run(settings, phases):
    assert fit_phases(TrainConfig(**settings).validate()) == phases


def test_bad_phase_settings_are_refused_with_a_sentence():
    with pytest.raises(UserError, match="Head epochs must be a whole number from 0 to 500"):
        TrainConfig(**LITE, head_epochs=-1).validate()
    with pytest.raises(UserError, match="schedule must be one of constant, cosine, got 'step'"):
        TrainConfig(**LITE, schedule="step").validate()


def test_bundles_record_the_phases_only_when_used():
    plain = TrainConfig(**LITE, head_epochs=0, schedule="constant").to_dict()
    assert "head_epochs" not in plain and "schedule" not in plain  # as bundles read before
    used = TrainConfig(**LITE, head_epochs=1, schedule="cosine").to_dict()
    assert (used["head_epochs"], used["schedule"]) == (1, "cosine")


def _trainable(model: keras.Model) -> list[tuple[str, bool]]:
    backbone = model.get_layer(BACKBONE_LAYER)
    return [(layer.name, layer.trainable) for layer in backbone.layers] + [
        (v.path, v.trainable) for v in backbone.weights
    ]


def test_freezing_the_backbone_for_the_head_gives_every_layer_back_its_own_setting():
    model = build_model(
        "efficientnet_lite0", (64, 48), weights="imagenet", fine_tune=True, frozen_stages=2,
        batch_norm="train",
    )  # fmt: skip
    before, count = _trainable(model), len(model.trainable_weights)
    assert any(not trainable for _, trainable in before)  # the stem and stages 1-2 frozen
    with backbone_frozen(model):
        names = {v.path.split("/")[0] for v in model.trainable_weights}
        assert names == {"probability"}, names  # the head's weights alone
    assert _trainable(model) == before and len(model.trainable_weights) == count
    with backbone_frozen(model, False):  # the whole network's phase: nothing changes
        assert len(model.trainable_weights) == count


class _Snapshots(keras.callbacks.Callback):
    """The backbone's and the head's weights, and the rate, after every epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[dict] = []
        self.start: np.ndarray | None = None

    def on_train_begin(self, logs=None):
        if self.start is None:  # the first phase's start
            self.start = keras.ops.convert_to_numpy(self.model.get_layer("probability").kernel)

    def on_epoch_end(self, epoch, logs=None):
        backbone = self.model.get_layer(BACKBONE_LAYER)
        get = keras.ops.convert_to_numpy
        self.epochs.append(
            {
                "stem": get(backbone.get_layer("stem_conv").kernel),
                "head_conv": get(backbone.get_layer("head_conv").kernel),
                "head_bn_mean": get(backbone.get_layer("head_bn").moving_mean),
                "probability": get(self.model.get_layer("probability").kernel),
                "rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
                "iterations": int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)),
            }
        )


@pytest.mark.slow
def test_a_run_trains_the_head_alone_first_then_the_network_with_a_decaying_rate(
    tiny_manifest, tmp_path
):
    from bcp_core.model.bundle import load_bundle
    from bcp_core.model.training import train_model

    cfg = TrainConfig(
        model="efficientnet_lite0", image_size=(64, 48), epochs=3, batch_size=8, patience=5,
        val_fraction=0.3, seed=4, fine_tune=True, frozen_stages=2, batch_norm="train",
        learning_rate=1e-3, head_epochs=1, schedule="cosine",
    )  # fmt: skip
    snapshots = _Snapshots()
    result = train_model(tiny_manifest, cfg, tmp_path / "b", extra_callbacks=[snapshots])
    assert result.epochs_run == 3 and result.status == "completed"
    head, half, end = snapshots.epochs
    imagenet = pretrained.keras_weights("efficientnet_lite0")
    # Epoch 1: the head learned, the backbone (its batch norm statistics too) did not.
    assert not np.allclose(head["probability"], snapshots.start)
    np.testing.assert_array_equal(head["head_conv"], imagenet["head_conv/kernel"])
    np.testing.assert_array_equal(head["head_bn_mean"], imagenet["head_bn/moving_mean"])
    assert head["rate"] == pytest.approx(1e-3)  # the head's epoch: the recipe's rate
    # Epochs 2-3: the network learns, but the stages the recipe freezes stay ImageNet's.
    assert not np.allclose(half["head_conv"], imagenet["head_conv/kernel"])
    assert not np.allclose(half["head_bn_mean"], imagenet["head_bn/moving_mean"])
    np.testing.assert_array_equal(end["stem"], imagenet["stem_conv/kernel"])
    # The rate falls along half a cosine over the network's two epochs: half-way, then zero.
    assert half["iterations"] * 2 == end["iterations"]  # a fresh optimiser for the phase
    assert half["rate"] == pytest.approx(0.5e-3, rel=1e-3)
    assert end["rate"] == pytest.approx(0.0, abs=1e-9)
    training = load_bundle(tmp_path / "b").meta.training
    assert (training["head_epochs"], training["schedule"]) == (1, "cosine")
