"""The preparation of one mammogram: the same function at training and at prediction.

decode (reduced-scale JPEG decoding) -> undo an inverted grey scale -> orient (a right breast
is mirrored so that every chest wall is on the left) -> crop to the breast (found on the
oriented image) -> aspect-preserving, antialiased resize -> optionally, equalise its contrast
locally (CLAHE) -> pad to H x W -> float32 (H, W, 1) in [0, 1].

:func:`prepare` makes each of these decisions once and records it in a :class:`Geometry`, so
that prediction can map a heatmap back onto the decoded image without deciding anything again.

Everything a particular network needs beyond that (three channels, ImageNet normalisation)
lives inside the model itself, so one preparation serves every model and a bundle's
``bundle.json`` only has to record :class:`PreprocessSpec` for prediction to repeat it exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from bcp_core.config import CLAHE_CLIP, CLAHE_TILES, DEFAULT_IMAGE_SIZE, PreprocessSpec
from bcp_core.imaging.decode import Decoded, decode_image
from bcp_core.imaging.limits import DEFAULT_MAX_UPLOAD_PIXELS

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "Geometry",
    "Placement",
    "Prepared",
    "PreprocessSpec",
    "decode_and_prepare",
    "equalise_locally",
    "mammogram_doubt",
    "prepare",
    "preprocess_image",
]

#: Pixels darker than this fraction of the image's 99th percentile count as background.
_BACKGROUND_LEVEL = 0.08
#: The mask for cropping is computed on an image about this many pixels high (speed).
_MASK_HEIGHT = 256
#: An image whose border median is above this grey level has an inverted grey scale...
_INVERTED_BORDER = 0.5
#: ...provided something in it is darker than the border by at least this much (not blank).
_INVERTED_CONTRAST = 0.25

# What a mammogram looks like (mammogram_doubt). Measured on 3,383 real screening films, each
# decoded as for a 320 x 256 input: grey-level spread (99.5th - 0.5th percentile) from 0.41,
# tissue share from 0.068, neighbouring-pixel correlation from 0.75, colour at most 0.01; the
# one film under these is black (grey levels 0 to 8 of 255).
#: Longest side over shortest side: films are about 1:1 to 4:3.
_MAX_ASPECT = 4.0
#: Grey levels of a blank image spread over less than this.
_MIN_SPREAD = 0.05
#: Share of the image brighter than the background (as breast_bbox sees it).
_MIN_TISSUE = 0.02
#: Correlation of neighbouring pixels (after shrinking to about 128 pixels): noise has ~0.
_MIN_NEIGHBOUR_CORRELATION = 0.5
#: Mean colour (max - min over R, G, B) of a colour picture; grey films have ~0.
_MAX_COLOUR = 0.1
#: Longest side of the image the checks look at.
_DOUBT_SIDE = 128
# The shape of what is bright (mammogram_doubt, after the checks above), measured on the same
# films decoded for 160 x 128, 320 x 256 and 1024 x 832 inputs and shrunk to 128 px (bench/
# bench_mammogram_check.py); bright = above the darkest 1% by 15% of the range up to the
# brightest 1%. Films: the bright region meets the chest-wall edge along 34% to 100% of the
# height; its fine detail is from 0.0025 (featureless shapes, blurred or not: at most 0.0003);
# the band along the opposite edge is at most 57% bright; the 10th percentile is at most 0.09 of
# the range above the 1st (an even black background), and 0.00 in every film whose far band is
# 30% bright or more.
#: Bright = above the darkest 1% by this share of the range up to the brightest 1%.
_SHAPE_LEVEL = 0.15
#: Share of the height along which the bright region meets the left or right edge, at least.
_MIN_CHEST_WALL = 0.15
#: Fine detail: mean |pixel - its 3 x 3 median of medians| inside the bright region (2 pixels in
#: from its edge), as a share of the range.
_MIN_DETAIL = 0.0012
#: A film centred on a wider canvas (digitised screen films are often padded to a square):
#: when the bright region meets neither side edge, the chest wall is its straight edge, the
#: region's rows reaching its outermost column (or the next) along at least this share of the
#: height...
_MIN_PADDED_EDGE = 0.6
#: ...on one side only: the other side reaches its outermost column along less than this (a
#: breast's curved front). MIAS's padded films: 0.67 and more on the chest-wall side for 99%,
#: under 0.28 on the other for 99%; synthetic hands and limbs, photographs cut out on black:
#: at most 0.6 on the straighter side, 0.38 and more on the other when it reaches 0.6.
_MAX_PADDED_FRONT = 0.35
#: Share of the band along the edge opposite the chest wall that is bright...
_MAX_FAR_EDGE = 0.4
#: ...refused only when the 10th percentile is this far (share of the range) above the 1st:
#: no even black background.
_MIN_DARK_GAP = 0.03

#: Grey levels of the local contrast step's histograms (equalise_locally).
_CLAHE_LEVELS = 256


@dataclass(frozen=True)
class Placement:
    """Where :func:`fit_to_size` put the resized image inside its padded output.

    Attributes:
        scale: the factor the image was resized by (the same for both axes, before the
            sizes are rounded to whole pixels).
        offset: (top, left) of the resized image in the output.
        fitted_size: (height, width) of the resized image.
    """

    scale: float
    offset: tuple[int, int]
    fitted_size: tuple[int, int]


@dataclass(frozen=True)
class Geometry:
    """Every geometric decision :func:`prepare` made, in the order it made them.

    Attributes:
        original_shape: (height, width) of the decoded image.
        flipped: the image was mirrored left-right (chest wall moved to the left).
        crop_box: (top, bottom, left, right) of the crop, in the decoded (unmirrored) image's
            coordinates; the whole image when cropping is off or found nothing.
        placement: where the resized crop sits in the network input (:class:`Placement`).
    """

    original_shape: tuple[int, int]
    flipped: bool
    crop_box: tuple[int, int, int, int]
    placement: Placement


@dataclass(frozen=True)
class Prepared:
    """A network input and how it was made from the decoded image.

    Attributes:
        net_input: float32 (H, W, 1) in [0, 1].
        geometry: the flip, crop and placement that made it (see :class:`Geometry`).
        inverted: the grey scale was inverted first (see :func:`looks_inverted`).
    """

    net_input: np.ndarray
    geometry: Geometry
    inverted: bool = False


def _tissue_level(small: np.ndarray) -> float:
    """The grey level above which a pixel counts as tissue, not background (:func:`breast_bbox`)."""
    return max(float(np.percentile(small, 99)) * _BACKGROUND_LEVEL, 1e-3)


def breast_bbox(gray: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (top, bottom, left, right) of the largest bright region.

    Never fails: for an empty, uniform or all-white image it returns the whole image, so odd
    inputs (a white frame, a blank film) pass through uncropped rather than crashing.
    """
    h, w = gray.shape
    step = max(1, h // _MASK_HEIGHT)
    small = gray[::step, ::step]
    mask = small > _tissue_level(small)
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


def looks_inverted(gray: np.ndarray) -> bool:
    """True when the image's border is mostly bright: air shown white, an inverted grey scale.

    In a mammogram the air around the breast is the darkest part of the film, and it fills
    most of the image's border (the breast touches at most the chest-wall side). A border whose
    median is above mid-grey therefore means the grey scale is inverted, as when a MONOCHROME1
    image is exported without its inversion. Blank or uniform images are left alone.
    """
    h, w = gray.shape
    band = max(1, min(h, w) // 20)
    border = np.concatenate(
        [gray[:band].ravel(), gray[-band:].ravel(), gray[:, :band].ravel(), gray[:, -band:].ravel()]
    )
    median = float(np.median(border))
    return median > _INVERTED_BORDER and float(gray.min()) < median - _INVERTED_CONTRAST


def mammogram_doubt(gray: np.ndarray, colour: float = 0.0, photometric: str = "") -> str:
    """Why ``gray`` does not look like a mammogram, in words; "" when it could be one.

    Each reason says what looked wrong and what to do. Refused: a DICOM whose header says it is
    in colour (a mammogram is MONOCHROME1 or MONOCHROME2 by the DICOM standard; an ultrasound
    or a photograph is not), an extreme aspect ratio, a blank image (one grey level), a colour
    picture, noise (neighbouring pixels unrelated), an image
    with almost nothing brighter than its background, and then by the shape of what is bright
    (:func:`_shape_doubt`): nothing bright at the left or right edge, where a breast meets the
    chest wall (a blob, a text page, another body part); a flat bright shape without the fine
    detail of tissue (a drawn blob, a gradient); bright up to the opposite edge with no even
    black background (a photograph, a chest radiograph, a pattern). An inverted grey scale is
    undone first, as :func:`prepare` does. It takes 1 to 3 ms (bench/bench_mammogram_check.py).

    Args:
        gray: the decoded image, float32 (h, w) in [0, 1].
        colour: :attr:`bcp_core.imaging.decode.Decoded.colour` of its file.
        photometric: a DICOM's PhotometricInterpretation ("" for other files).
    """
    if photometric and not photometric.startswith("MONOCHROME"):
        return (
            f"its DICOM header says it is a colour image ({photometric}), and mammograms are "
            "stored in monochrome; send the mammogram's own DICOM file"
        )
    h, w = gray.shape
    if max(h, w) > _MAX_ASPECT * max(min(h, w), 1):
        return (
            f"its sides are {max(h, w) / max(min(h, w), 1):.1f} to 1 (a film's are about 4 to "
            "3); send the whole film, not a strip of it"
        )
    if looks_inverted(gray):
        gray = 1.0 - gray
    scale = min(1.0, _DOUBT_SIDE / max(h, w))
    size = (max(2, round(w * scale)), max(2, round(h * scale)))
    img = Image.fromarray(gray.astype(np.float32, copy=False), mode="F")
    small = np.asarray(img.resize(size, resample=Image.Resampling.BOX), dtype=np.float64)
    low, high = np.percentile(small, [0.5, 99.5])
    if high - low < _MIN_SPREAD:
        return (
            f"it is blank (one grey level, {float(np.median(small)):.0%} bright); check that "
            "the file is the mammogram meant"
        )
    if colour > _MAX_COLOUR:
        return "it is a colour picture; mammograms are grey, so send the mammogram's own file"
    if _neighbour_correlation(small) < _MIN_NEIGHBOUR_CORRELATION:
        return (
            "it looks like noise (neighbouring pixels are unrelated); check that the file is "
            "a mammogram and not damaged"
        )
    tissue = float(np.mean(small > max(float(np.percentile(small, 99)) * _BACKGROUND_LEVEL, 1e-3)))
    if tissue < _MIN_TISSUE:
        return (
            f"almost nothing is brighter than the background ({tissue:.1%} of the image); "
            "check the film's exposure or choose another file"
        )
    return _shape_doubt(small)


def _shape_doubt(small: np.ndarray) -> str:
    """The shape checks of :func:`mammogram_doubt` on its shrunk, upright grey image."""
    h, w = small.shape
    darkest, brightest = np.percentile(small, [1, 99])
    span = max(float(brightest - darkest), 1e-6)
    bright = small > darkest + _SHAPE_LEVEL * span
    labels, n = ndimage.label(bright)
    if n == 0:
        return (
            "it is nearly blank (nothing stands out from its background); check that the file "
            "is the mammogram meant"
        )
    sizes = ndimage.sum_labels(bright, labels, index=np.arange(1, n + 1))
    region = labels == (int(np.argmax(sizes)) + 1)
    band = max(1, round(w / 32))  # a thin dark frame around a film does not hide the contact
    left = float(region[:, :band].any(axis=1).mean())
    right = float(region[:, -band:].any(axis=1).mean())
    if max(left, right) < _MIN_CHEST_WALL and _padded_edge(region) < _MIN_PADDED_EDGE:
        return (
            "nothing bright meets its left or right edge, where a breast meets the chest wall "
            "(it looks like a shape, a page or another body part); send the whole mammogram "
            "as exported, not a cut-out"
        )
    inside = ndimage.binary_erosion(region, iterations=2)
    if inside.sum() < 16:  # tiny images: the whole region
        inside = region
    detail = float(np.abs(small - _median_of_medians(small))[inside].mean()) / span
    if detail < _MIN_DETAIL:
        return (
            "the bright shape is flat, without the fine texture of breast tissue (it looks "
            "drawn or generated); send a mammogram"
        )
    far_band = max(1, round(w / 16))
    far = float(bright[:, -far_band:].mean() if left >= right else bright[:, :far_band].mean())
    dark_gap = (float(np.percentile(small, 10)) - darkest) / span
    if far >= _MAX_FAR_EDGE and dark_gap >= _MIN_DARK_GAP:
        return (
            "it is bright up to both side edges with no even black background around the "
            "breast (it looks like a photograph or another kind of radiograph); send a "
            "mammogram"
        )
    return ""


def _padded_edge(region: np.ndarray) -> float:
    """Share of the height along which ``region`` ends in a straight vertical edge on one side
    while it meets neither side of the image (a film centred on a padded canvas): its rows
    reaching its outermost column or the next. 0.0 when it meets a side, or when its other
    side is straight too (a rectangle, a cut-out photograph)."""
    cols = np.flatnonzero(region.any(axis=0))
    if cols.size == 0 or cols[0] == 0 or cols[-1] == region.shape[1] - 1:
        return 0.0
    left = float(region[:, cols[0] : cols[0] + 2].any(axis=1).mean())
    right = float(region[:, cols[-1] - 1 : cols[-1] + 1].any(axis=1).mean())
    return max(left, right) if min(left, right) < _MAX_PADDED_FRONT else 0.0


def _median_of_medians(img: np.ndarray) -> np.ndarray:
    """The median of the three row-wise medians of each 3 x 3 neighbourhood (edges repeated).

    Like a 3 x 3 median filter, it keeps flat areas, ramps and straight edges as they are and
    removes pixel-scale detail, at a tenth of the cost.
    """

    def median3(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))

    padded = np.pad(img, 1, mode="edge")
    rows = median3(padded[:, :-2], padded[:, 1:-1], padded[:, 2:])
    return median3(rows[:-2], rows[1:-1], rows[2:])


def _neighbour_correlation(small: np.ndarray) -> float:
    """The lower of the correlations of horizontally and vertically neighbouring pixels."""
    pairs = ((small[:, :-1], small[:, 1:]), (small[:-1], small[1:]))
    values = []
    for a, b in pairs:
        a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
        norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
        values.append(float((a * b).sum()) / norm if norm > 0 else 0.0)
    return min(values)


def chest_wall_on_right(gray: np.ndarray) -> bool:
    """True when the breast touches the right edge more than the left (a right breast).

    The chest wall side is where tissue meets the image edge; the nipple side is background.
    When the breast (:func:`breast_bbox`) meets neither side, as on a film centred on a padded
    canvas, the breast's own left and right ends stand in for the image's edges.
    """
    w = gray.shape[1]
    left, right = 0, w
    step = max(1, gray.shape[0] // _MASK_HEIGHT)
    level = _tissue_level(gray[::step, ::step])
    if not (gray[::step, [0, w - 1]] > level).any():  # no side edge is touched: padding?
        _, _, left, right = breast_bbox(gray)
    film = gray[:, left:right]
    band = max(1, film.shape[1] // 10)
    return float(film[:, -band:].mean()) > float(film[:, :band].mean())


def fit_to_size(gray: np.ndarray, height: int, width: int) -> tuple[np.ndarray, Placement]:
    """Resize keeping the aspect ratio (area-averaging when shrinking), pad with black to H x W.

    The image is placed against the left edge (the chest wall, once oriented) and centred
    vertically.

    Returns:
        ``(image, placement)``: float32 (height, width), and where the resized image sits.
    """
    h, w = gray.shape
    scale = min(height / h, width / w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    img = Image.fromarray(gray.astype(np.float32), mode="F")
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    resized = np.asarray(img.resize((new_w, new_h), resample=resample), dtype=np.float32)
    out = np.zeros((height, width), dtype=np.float32)
    top, left = (height - new_h) // 2, 0
    out[top : top + new_h, left : left + new_w] = resized
    return out, Placement(scale, (top, left), (new_h, new_w))


def _interpolation(size: int, tiles: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``size`` pixels along one side cut into ``tiles`` tiles: the tile whose
    centre is at or before it, the next one, and the weight of the next one (0 before the
    first centre and after the last)."""
    edges = np.linspace(0, size, tiles + 1)
    centres = (edges[:-1] + edges[1:]) / 2 - 0.5
    position = np.arange(size, dtype=np.float64)
    low = np.clip(np.searchsorted(centres, position, side="right") - 1, 0, tiles - 1)
    high = np.minimum(low + 1, tiles - 1)
    gap = centres[high] - centres[low]
    weight = np.clip((position - centres[low]) / np.where(gap > 0, gap, 1.0), 0.0, 1.0)
    return low, high, np.where(gap > 0, weight, 0.0)


def equalise_locally(
    img: np.ndarray, tiles: int = CLAHE_TILES, clip: float = CLAHE_CLIP
) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of a grey image in [0, 1].

    The image is cut into ``tiles`` x ``tiles`` tiles (fewer along a side shorter than that
    many pixels). Each tile's histogram of 256 grey levels is clipped at ``clip`` times its
    mean count per level, the clipped counts spread evenly over every level, and its
    cumulative sum becomes the tile's mapping of grey levels; a pixel takes the bilinear
    mix of the mappings of the four tiles whose centres surround it, so no tile's edge shows.
    Faint differences in dense tissue are stretched, while the clip keeps an even area (the
    black air, a flat patch) from turning into amplified noise.

    Returns:
        float32 array of ``img``'s shape, in [0, 1].
    """
    h, w = img.shape
    levels = _CLAHE_LEVELS
    rows_n, cols_n = max(1, min(tiles, h)), max(1, min(tiles, w))
    grey = np.clip(np.rint(img * (levels - 1)), 0, levels - 1).astype(np.intp)
    row_tile = np.minimum((np.arange(h) * rows_n) // h, rows_n - 1)
    col_tile = np.minimum((np.arange(w) * cols_n) // w, cols_n - 1)
    tile = row_tile[:, None] * cols_n + col_tile[None, :]
    hist = np.bincount((tile * levels + grey).ravel(), minlength=rows_n * cols_n * levels)
    hist = hist.reshape(rows_n * cols_n, levels).astype(np.float64)
    limit = np.maximum(clip * hist.sum(axis=1, keepdims=True) / levels, 1.0)
    excess = np.maximum(hist - limit, 0.0).sum(axis=1, keepdims=True)
    cdf = np.cumsum(np.minimum(hist, limit) + excess / levels, axis=1)
    mapping = (cdf / cdf[:, -1:]).reshape(rows_n, cols_n, levels)
    r0, r1, wr = _interpolation(h, rows_n)
    c0, c1, wc = _interpolation(w, cols_n)
    wr, wc = wr[:, None], wc[None, :]

    def mapped(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return mapping[r[:, None], c[None, :], grey]

    top = mapped(r0, c0) * (1 - wc) + mapped(r0, c1) * wc
    bottom = mapped(r1, c0) * (1 - wc) + mapped(r1, c1) * wc
    return np.clip(top * (1 - wr) + bottom * wr, 0.0, 1.0).astype(np.float32)


def prepare(gray: np.ndarray, spec: PreprocessSpec) -> Prepared:
    """Invert, orient, crop, resize and pad a decoded grey image, recording each decision.

    An inverted grey scale is undone first (when ``spec.invert``), since cropping and
    orienting look for the breast as bright on dark. Then a breast whose chest wall is on the
    right is mirrored, and the crop box is found on the mirrored image (it is recorded in the
    decoded image's own coordinates). With ``spec.contrast`` "clahe" the resized breast's
    contrast is then equalised locally (:func:`equalise_locally`), the padding left black.

    Returns:
        :class:`Prepared`: the network input, float32 (H, W, 1) in [0, 1], and its
        :class:`Geometry`.
    """
    h, w = gray.shape
    inverted = bool(spec.invert and looks_inverted(gray))
    if inverted:
        gray = 1.0 - gray
    flipped = bool(spec.orient and chest_wall_on_right(gray))
    oriented = gray[:, ::-1] if flipped else gray
    top, bottom, left, right = breast_bbox(oriented) if spec.crop else (0, h, 0, w)
    fitted, placement = fit_to_size(
        np.ascontiguousarray(oriented[top:bottom, left:right]), spec.height, spec.width
    )
    if spec.contrast == "clahe":  # the breast alone: the padding stays black
        (y, x), (fh, fw) = placement.offset, placement.fitted_size
        fitted[y : y + fh, x : x + fw] = equalise_locally(fitted[y : y + fh, x : x + fw])
    if flipped:  # the box was found on the mirrored image
        left, right = w - right, w - left
    geometry = Geometry((h, w), flipped, (int(top), int(bottom), int(left), int(right)), placement)
    return Prepared(np.clip(fitted, 0.0, 1.0)[..., None], geometry, inverted)


def decode_size(spec: PreprocessSpec) -> tuple[int, int]:
    """The smallest (height, width) an image is decoded at for ``spec`` (see decode_margin)."""
    margin = spec.decode_margin
    return math.ceil(spec.height * margin), math.ceil(spec.width * margin)


def decode_and_prepare(
    source: str | Path | bytes,
    spec: PreprocessSpec,
    name: str = "",
    *,
    max_upload_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS,
) -> tuple[Decoded, Prepared]:
    """Decode one image file (path or bytes) at ``spec``'s decode size and prepare it.

    The one path from a file to a network input: :func:`preprocess_image` (training) and
    :func:`bcp_core.inference.prepared.prepare_image` (prediction) both go through it.

    Args:
        source: a path or the file's bytes.
        spec: the preprocessing.
        name: the original file name of uploaded bytes (see :func:`decode_image`).
        max_upload_pixels: the most pixels uploaded bytes may declare (see
            :func:`decode_image`).

    Raises:
        UserError: when the file is not a readable image.
    """
    decoded = decode_image(
        source, min_size=decode_size(spec), name=name, max_upload_pixels=max_upload_pixels
    )
    return decoded, prepare(decoded.gray, spec)


def preprocess_image(source: str | Path | bytes, spec: PreprocessSpec) -> np.ndarray:
    """Decode and prepare one image file (path or bytes): float32 (H, W, 1) in [0, 1].

    This is the network input of a file at training (through :mod:`bcp_core.model.dataset`);
    prediction makes the identical input through :func:`decode_and_prepare`.

    Raises:
        UserError: when the file is not a readable image.
    """
    return decode_and_prepare(source, spec)[1].net_input
