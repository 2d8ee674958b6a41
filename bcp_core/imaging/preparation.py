"""The preprocessing of one mammogram: the same function at training and at prediction.

decode (reduced-scale JPEG decoding) -> crop to the breast -> orient (chest wall on the left)
-> aspect-preserving, antialiased resize -> pad to H x W -> float32 (H, W, 1) in [0, 1].

Everything a particular network needs beyond that (three channels, ImageNet normalisation)
lives inside the model itself, so one preprocessing serves every model and a bundle's
``bundle.json`` only has to record :class:`PreprocessSpec` for prediction to repeat it exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from bcp_core.config import DEFAULT_IMAGE_SIZE, PreprocessSpec
from bcp_core.imaging.decode import read_gray

__all__ = ["DEFAULT_IMAGE_SIZE", "PreprocessSpec", "preprocess_image", "prepare_gray"]

#: Pixels darker than this fraction of the image's 99th percentile count as background.
_BACKGROUND_LEVEL = 0.08
#: The mask for cropping is computed on an image about this many pixels high (speed).
_MASK_HEIGHT = 256


def breast_bbox(gray: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (top, bottom, left, right) of the largest bright region.

    Never fails: for an empty, uniform or all-white image it returns the whole image, so odd
    inputs (a white frame, a blank film) pass through uncropped rather than crashing.
    """
    h, w = gray.shape
    step = max(1, h // _MASK_HEIGHT)
    small = gray[::step, ::step]
    level = float(np.percentile(small, 99)) * _BACKGROUND_LEVEL
    mask = small > max(level, 1e-3)
    if mask.all() or not mask.any():
        return 0, h, 0, w
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    top, bottom = rows[0] * step, min(h, (rows[-1] + 1) * step)
    left, right = cols[0] * step, min(w, (cols[-1] + 1) * step)
    if (bottom - top) < 8 or (right - left) < 8:
        return 0, h, 0, w
    return int(top), int(bottom), int(left), int(right)


def chest_wall_on_right(gray: np.ndarray) -> bool:
    """True when the breast touches the right edge more than the left (a right breast).

    The chest wall side is where tissue meets the image edge; the nipple side is background.
    """
    band = max(1, gray.shape[1] // 10)
    return float(gray[:, -band:].mean()) > float(gray[:, :band].mean())


def fit_to_size(gray: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize keeping the aspect ratio (area-averaging when shrinking), pad with black to H x W.

    The image is placed top-left, against the chest wall, as oriented breasts line up.
    """
    h, w = gray.shape
    scale = min(height / h, width / w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    img = Image.fromarray(gray.astype(np.float32), mode="F")
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    resized = np.asarray(img.resize((new_w, new_h), resample=resample), dtype=np.float32)
    out = np.zeros((height, width), dtype=np.float32)
    top = (height - new_h) // 2
    out[top : top + new_h, :new_w] = resized
    return out


def prepare_gray(gray: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Crop, orient, resize and pad a decoded grey image: float32 (H, W, 1) in [0, 1]."""
    if spec.orient and chest_wall_on_right(gray):
        gray = gray[:, ::-1]
    if spec.crop:
        top, bottom, left, right = breast_bbox(gray)
        gray = gray[top:bottom, left:right]
    out = fit_to_size(np.ascontiguousarray(gray), spec.height, spec.width)
    return np.clip(out, 0.0, 1.0)[..., None]


def decode_size(spec: PreprocessSpec) -> tuple[int, int]:
    """The smallest (height, width) an image is decoded at for ``spec`` (see decode_margin)."""
    margin = spec.decode_margin
    return math.ceil(spec.height * margin), math.ceil(spec.width * margin)


def preprocess_image(source: str | Path | bytes, spec: PreprocessSpec) -> np.ndarray:
    """Decode and prepare one image file (path or bytes): float32 (H, W, 1) in [0, 1].

    This is the one function that turns a file into a network input, at training (through
    :mod:`bcp_core.model.dataset`) and at prediction alike.

    Raises:
        UserError: when the file is not a readable image.
    """
    gray = read_gray(source, min_size=decode_size(spec))
    return prepare_gray(gray, spec)
