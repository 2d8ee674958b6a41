"""A moving average of the weights (``weight_ema``), validated and kept instead of the weights
as trained: the average itself, its swap in and out of the model, its settings, and a run."""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np
import pytest

from bcp_core.config import LITE_RECIPE, TrainConfig
from bcp_core.errors import UserError
from bcp_core.model.bundle import load_bundle, read_bundle_meta
from bcp_core.model.resources import estimate_training_bytes
from bcp_core.model.training import train_model
from bcp_core.model.weight_average import WeightAverage


class Recorder(keras.callbacks.Callback):
    """The model's weights after every step, and at each epoch's start and end."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[list[np.ndarray]] = []
        self.at_begin: list[list[np.ndarray]] = []
        self.at_end: list[list[np.ndarray]] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.at_begin.append(self.model.get_weights())

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(self.model.get_weights())

    def on_epoch_end(self, epoch, logs=None):
        self.at_end.append(self.model.get_weights())


def tiny_fit(momentum: float, epochs: int = 2):
    """A two-layer model with batch norm fitted on random data, the average first in the
    callbacks and a recorder after it; returns the model, the weights it started with, the
    recorder and the average."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4), keras.layers.BatchNormalization(),
         keras.layers.Dense(1, activation="sigmoid")]
    )  # fmt: skip
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    start = model.get_weights()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)).astype("float32"), rng.integers(0, 2, 40).astype("float32")
    recorder = Recorder()
    average = WeightAverage(momentum)
    model.fit(x, y, batch_size=8, epochs=epochs, callbacks=[average, recorder], verbose=0)
    return model, start, recorder, average


def test_the_average_of_every_weight_is_what_the_callbacks_after_it_see_at_an_epoch_end():
    momentum = 0.6
    model, start, recorder, average = tiny_fit(momentum)
    assert len(recorder.steps) == 10 and average.steps == 10  # 5 steps an epoch, 2 epochs
    expected = [w.astype(np.float64) for w in start]
    for k, weights in enumerate(recorder.steps, start=1):
        expected = [momentum * e + (1 - momentum) * w for e, w in zip(expected, weights)]
        if k == 5:  # the end of the first epoch: the average of its steps is in the model
            for seen, want in zip(recorder.at_end[0], expected, strict=True):
                np.testing.assert_allclose(seen, want, rtol=1e-5, atol=1e-6)
    for seen, want in zip(recorder.at_end[1], expected, strict=True):
        np.testing.assert_allclose(seen, want, rtol=1e-5, atol=1e-6)
    # batch norm's moving statistics are averaged as well (weights 4-5 of the model)
    assert not np.allclose(recorder.at_end[1][4], recorder.steps[-1][4])
    # the second epoch trains on from the weights as trained, not from the average
    for seen, trained in zip(recorder.at_begin[1], recorder.steps[4], strict=True):
        np.testing.assert_array_equal(seen, trained)
    assert not all(np.allclose(a, t) for a, t in zip(recorder.at_end[0], recorder.steps[4]))
    # after the last epoch the model holds the average
    for kept, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_allclose(kept, want, rtol=1e-5, atol=1e-6)


def test_a_momentum_outside_zero_to_one_is_refused():
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="momentum"):
            WeightAverage(bad)


def test_the_setting_is_off_by_default_checked_and_recorded_only_when_used():
    assert LITE_RECIPE.weight_ema == 0 and TrainConfig(model="efficientnet_lite0").weight_ema == 0
    assert "weight_ema" not in TrainConfig(model="efficientnet_lite0").to_dict()
    on = TrainConfig(model="efficientnet_lite0", weight_ema=0.995).validate()
    assert on.to_dict()["weight_ema"] == 0.995
    assert "weights averaged (momentum 0.995)" in replace(LITE_RECIPE, weight_ema=0.995).describe()
    assert estimate_training_bytes(on) > estimate_training_bytes(
        TrainConfig(model="efficientnet_lite0")
    )
    for bad in (0.3, 1.0, "high", float("nan")):
        with pytest.raises(UserError, match="Weight-average momentum must be from 0.5 to 0.9999"):
            TrainConfig(weight_ema=bad).validate()


def test_a_run_keeps_the_averaged_weights_it_validated(tiny_manifest, tmp_path):
    """One seed gives the same batches, so the two runs train the same weights; the run that
    keeps the average validates and saves other weights, and its bundle says so."""
    base = dict(
        model="seed_cnn", image_size=(64, 48), batch_size=8, val_fraction=0.3, seed=1,
        epochs=2, patience=2, learning_rate=1e-2, augment=False,
    )  # fmt: skip
    plain = train_model(tiny_manifest, TrainConfig(**base), tmp_path / "plain")
    averaged = train_model(tiny_manifest, TrainConfig(**base, weight_ema=0.9), tmp_path / "avg")
    assert plain.status == averaged.status == "completed"
    assert read_bundle_meta(tmp_path / "avg").training["weight_ema"] == 0.9
    assert "weight_ema" not in read_bundle_meta(tmp_path / "plain").training
    a, b = load_bundle(tmp_path / "plain"), load_bundle(tmp_path / "avg")
    # the average is what was validated and saved: other scores, other weights
    assert not np.allclose(
        a.val_predictions["probability"].to_numpy(), b.val_predictions["probability"].to_numpy()
    )
    weights_a, weights_b = a.model.get_weights(), b.model.get_weights()
    assert any(not np.allclose(x, y) for x, y in zip(weights_a, weights_b, strict=True))
