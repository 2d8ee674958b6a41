"""Loss functions and output initialisation for sigmoid cancer probabilities."""

from __future__ import annotations

import math

import keras

from bcp_core.config import MAX_LABEL_SMOOTHING
from bcp_core.errors import UserError

LOSS_KINDS = ("bce", "focal")
DEFAULT_FOCAL_GAMMA = 2.0


def make_loss(
    kind: str = "bce",
    *,
    label_smoothing: float = 0.0,
    focal_gamma: float = DEFAULT_FOCAL_GAMMA,
) -> keras.losses.Loss:
    """The training loss for sigmoid probabilities.

    Args:
        kind: "bce" (binary cross-entropy) or "focal" (binary focal cross-entropy, which
            down-weights the many easy negatives).
        label_smoothing: From 0 to ``MAX_LABEL_SMOOTHING``: pulls the targets towards 0.5
            by this amount.
        focal_gamma: Focusing parameter of the focal loss, at least 0 (0 gives plain BCE).

    Returns:
        ``keras.losses.BinaryCrossentropy`` or ``keras.losses.BinaryFocalCrossentropy``.
    """
    if kind not in LOSS_KINDS:
        raise UserError(
            f"Unknown loss {kind!r}; choose one of {', '.join(repr(k) for k in LOSS_KINDS)}."
        )
    if not 0.0 <= label_smoothing <= MAX_LABEL_SMOOTHING:
        raise UserError(
            f"Label smoothing must be from 0 to {MAX_LABEL_SMOOTHING}; got {label_smoothing!r}."
        )
    if kind == "bce":
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    if not (math.isfinite(focal_gamma) and focal_gamma >= 0.0):
        raise UserError(f"The focal gamma must be 0 or more; got {focal_gamma!r}.")
    return keras.losses.BinaryFocalCrossentropy(gamma=focal_gamma, label_smoothing=label_smoothing)


def initial_bias(positive_fraction: float) -> float:
    """The output bias that makes an untrained model predict the class prior.

    ``log(p / (1 - p))``: with it the first loss is the prior's entropy (about 0.09 at 1:57)
    instead of about 0.69, and the first epochs are not spent pushing every output down.

    Args:
        positive_fraction: Fraction of cancer images in the training data, strictly in (0, 1).

    Returns:
        The bias (negative when cancers are the minority).
    """
    if not 0.0 < positive_fraction < 1.0:
        raise UserError(
            "The positive fraction must be strictly between 0 and 1 (the training data needs "
            f"both classes); got {positive_fraction!r}."
        )
    return math.log(positive_fraction / (1.0 - positive_fraction))
