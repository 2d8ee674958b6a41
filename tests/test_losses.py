"""Tests for bcp_core.model.losses: the output unit's initial bias and the training loss."""

from __future__ import annotations

import math

import keras
import pytest

from bcp_core.model.losses import initial_bias, make_loss


def test_initial_bias_is_the_log_odds_of_the_prior():
    assert initial_bias(0.5) == 0.0
    assert initial_bias(0.02) == pytest.approx(math.log(0.02 / 0.98))
    p = 1 / 58  # the hospital's 1:57 ratio
    assert 1 / (1 + math.exp(-initial_bias(p))) == pytest.approx(p)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_initial_bias_rejects_fractions_outside_zero_one(fraction):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        initial_bias(fraction)


def test_make_loss_returns_the_requested_loss_with_its_settings():
    bce = make_loss()
    assert isinstance(bce, keras.losses.BinaryCrossentropy)
    assert bce.get_config()["label_smoothing"] == 0.0

    smoothed = make_loss("bce", label_smoothing=0.1)
    assert smoothed.get_config()["label_smoothing"] == pytest.approx(0.1)

    focal = make_loss("focal", label_smoothing=0.05, focal_gamma=1.5)
    assert isinstance(focal, keras.losses.BinaryFocalCrossentropy)
    assert focal.get_config()["gamma"] == pytest.approx(1.5)
    assert focal.get_config()["label_smoothing"] == pytest.approx(0.05)
    assert not focal.get_config()["from_logits"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "hinge"}, "Unknown loss 'hinge'"),
        ({"label_smoothing": 0.5}, "Label smoothing must be"),
        ({"label_smoothing": -0.1}, "Label smoothing must be"),
        ({"kind": "focal", "focal_gamma": -1.0}, "focal gamma"),
    ],
)
def test_make_loss_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_loss(**kwargs)
