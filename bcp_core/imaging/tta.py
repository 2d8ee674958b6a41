"""Test-time augmentation: fixed variants of a prepared network input.

Prediction may score an image several times ("passes"), each on a slightly different view of
the same prepared input, and report the mean probability with the range the passes spanned.
The variants are the kind training's augmentation already shows the network
(:func:`bcp_core.model.dataset.augmenter`): an up-down flip, small vertical shifts and a small
zoom. There is no left-right flip: preparation puts every chest wall on the left, and the
network has never seen one on the right.

The variants are deterministic and ordered, so N passes are always the first N of
:data:`VARIANTS` and the same image gives the same figures on every machine.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from bcp_core.values import is_whole_number

#: The variants in the order passes take them (``passes=N`` uses the first N).
VARIANTS: tuple[str, ...] = (
    "as prepared",
    "flipped up-down",
    "shifted down",
    "shifted up",
    "flipped, shifted down",
    "flipped, shifted up",
    "zoomed in",
    "flipped, zoomed in",
)
MAX_PASSES = len(VARIANTS)
#: Vertical shift, as a share of the input's height.
SHIFT = 0.04
#: Zoom factor of the zoomed variants (training zooms by up to 10 %).
ZOOM = 1.08


def check_passes(passes: object) -> int:
    """``passes`` as an int from 1 to :data:`MAX_PASSES`.

    Raises:
        ValueError: with one sentence, for anything else.
    """
    if isinstance(passes, np.integer):  # NumPy's integers count as whole numbers here
        passes = int(passes)
    if not is_whole_number(passes):
        raise ValueError(f"Test-time passes must be a whole number, got {passes!r}.")
    if not 1 <= int(passes) <= MAX_PASSES:
        raise ValueError(f"Test-time passes must be from 1 to {MAX_PASSES}, got {passes}.")
    return int(passes)


def _shift_rows(image: np.ndarray, rows: int) -> np.ndarray:
    """``image`` moved down by ``rows`` (up when negative), the uncovered rows black."""
    out = np.zeros_like(image)
    if rows > 0:
        out[rows:] = image[:-rows]
    elif rows < 0:
        out[:rows] = image[-rows:]
    else:
        out[:] = image
    return out


def _zoom_in(image: np.ndarray, factor: float) -> np.ndarray:
    """The centre of ``image`` enlarged by ``factor`` back to the same size (bilinear)."""
    height, width = image.shape[:2]
    crop_h, crop_w = max(1, round(height / factor)), max(1, round(width / factor))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    centre = np.ascontiguousarray(image[top : top + crop_h, left : left + crop_w, 0])
    resized = Image.fromarray(centre, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=image.dtype)[..., None]


def variant(net_input: np.ndarray, index: int) -> np.ndarray:
    """Variant ``index`` (see :data:`VARIANTS`) of a prepared input (H, W, 1), same shape."""
    name = VARIANTS[index]
    image = np.asarray(net_input, dtype=np.float32)
    if name.startswith("flipped"):
        image = image[::-1]
    rows = max(1, round(SHIFT * image.shape[0]))
    if name.endswith("shifted down"):
        image = _shift_rows(image, rows)
    elif name.endswith("shifted up"):
        image = _shift_rows(image, -rows)
    elif name.endswith("zoomed in"):
        image = _zoom_in(image, ZOOM)
    return np.ascontiguousarray(image)


def variants(net_input: np.ndarray, passes: int) -> np.ndarray:
    """The first ``passes`` variants of one prepared input, stacked: (passes, H, W, 1)."""
    passes = check_passes(passes)
    return np.stack([variant(net_input, i) for i in range(passes)])
