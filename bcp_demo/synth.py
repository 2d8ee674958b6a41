"""Synthetic mammogram-like images for the demo data set, tests and benchmarks.

Pure numpy / Pillow, no file I/O. The renderer builds a breast silhouette (a half-ellipse
attached to the chest wall), a skin line, thickness fall-off towards the skin, fibroglandular
texture from multi-scale correlated noise, radiating strands (ducts / Cooper ligaments), a
pectoral muscle on MLO views and optionally one lesion (spiculated or round mass, or a
calcification cluster).

Speed: everything smooth is rendered at half resolution and upsampled once with Pillow's
bicubic filter; only sensor noise and the lesion (which needs thin spicules and tiny dots)
are drawn at full resolution. A 1024 x 832 image takes about 45-55 ms on one core.

Geometry is computed in "L orientation" (chest wall on the left edge, nipple towards the
image centre) in full-resolution pixel units; "R" images are mirrored horizontally at the
end, so flipping an R image left-right gives L orientation.

Lesion visibility: a lesion's ``contrast`` is ``base * visibility(subtlety)`` with
``visibility(s) = 1 - k * s``, which decreases monotonically with subtlety:

* masses (spiculated, round): base 100-130 grey levels, ``k = 0.8`` (100 % at s=0, 20 % at s=1);
  at the default s=0.45 they add ~75, comparable to the contrast between fat and dense tissue,
  so a mass in dense tissue is hard to tell from a gland lobule;
* calcifications: base 170-200 grey levels, ``k = 0.75`` (100 % at s=0, 25 % at s=1). Specks
  are 2.5-5 px at 1024 px height (about one pixel at the network's 320 px), so they need far
  more added intensity than a mass to be seen: at s=0.45 they add ~120.

The default was set by measurement: at s=0.45 the product's default CNN separates cancer from
non-cancer images on held-out patients, while the user's original recipe misses most cancers
(``bench/bench_train.py``); at s=0.6 even simple local-contrast features reach an AUC of only
~0.6, and the CNN about 0.8 with 130 training positives.

Tissue is soft-capped at 228 so that only calcifications (and lesions on dense tissue) reach
the top of the range.

Determinism: the output is a pure function of the generator's state and the arguments. The
lesion's random draws come after all background draws, so rendering with and without a
lesion from the same seed gives images that differ only around the lesion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from bcp_core.config import LATERALITIES, VIEWS
from bcp_core.values import is_whole_number

LESION_KINDS = ("spiculated", "round", "calcifications")
MIN_SIZE = 32

#: Lesion kind probabilities used by :func:`sample_breast_lesion`.
_KIND_PROBS = (0.4, 0.35, 0.25)
#: visibility(s) = 1 - k * s, per lesion family (see module docstring).
_K_MASS = 0.8
_K_CALC = 0.75
_MASS_CONTRAST = (100.0, 130.0)
_CALC_CONTRAST = (170.0, 200.0)

_ANATOMY_KEYS = ("density", "size", "fat_level", "fat_edge", "dense_level", "muscle_level")
_BACKGROUND = 4.0
_TISSUE_KNEE, _TISSUE_CAP = 198.0, 228.0  # soft ceiling so calcifications stay the brightest


@dataclass(frozen=True)
class Lesion:
    """One lesion as seen in one view.

    Attributes:
        kind: One of :data:`LESION_KINDS`.
        depth: 0..1, distance from the nipple (0) towards the chest wall (1).
        offset: -1..1, position across the breast in this view (-1 = top of the image).
        size: Radius as a fraction of image height (mass core radius, or the spread of a
            calcification cluster).
        contrast: Grey levels added at the lesion centre, already scaled by subtlety.
    """

    kind: str
    depth: float
    offset: float
    size: float
    contrast: float

    def __post_init__(self) -> None:
        if self.kind not in LESION_KINDS:
            raise ValueError(f"Lesion kind must be one of {LESION_KINDS}, got {self.kind!r}.")


@dataclass(frozen=True)
class _Geometry:
    """Breast outline of one view in L orientation, full-resolution pixel units."""

    cy: float  # row where the breast axis meets the chest wall
    rx: float  # chest wall to nipple distance along the axis
    ry_top: float  # half-height above the axis
    ry_bot: float  # half-height below the axis
    tilt: float  # radians; positive points the nipple downwards
    skew: float  # asymmetry of the outline between top and bottom
    square: float  # >0 boxier, <0 pointier outline
    muscle_x: float  # pectoral muscle width on the top edge (0 = no muscle)
    muscle_y: float  # pectoral muscle height on the chest-wall edge
    muscle_p: float  # exponent of the muscle boundary (1 = straight line)


# --- validation ------------------------------------------------------------------------


def _check_view(view: str, laterality: str) -> None:
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}.")
    if laterality not in LATERALITIES:
        raise ValueError(f"laterality must be one of {LATERALITIES}, got {laterality!r}.")


def _check_size(height: int, width: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, np.integer):  # NumPy's integers count as whole numbers here
            value = int(value)
        if not is_whole_number(value):
            raise ValueError(f"{name} must be an integer number of pixels, got {value!r}.")
        if value < MIN_SIZE:
            raise ValueError(f"{name} must be at least {MIN_SIZE} pixels, got {value}.")


def _check_unit(name: str, value: float) -> None:
    # `not (0 <= v <= 1)` also rejects NaN.
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}.")


def _check_anatomy(anatomy: dict) -> None:
    missing = [k for k in (*_ANATOMY_KEYS, *VIEWS) if k not in anatomy]
    if missing:
        raise ValueError(f"anatomy is missing keys {missing}; build it with breast_params().")


# --- random parameters -----------------------------------------------------------------


def sample_breast_lesion(rng: np.random.Generator, subtlety: float) -> dict[str, Lesion]:
    """Sample one lesion as seen in both views (CC and MLO) of one breast.

    Both views share kind, depth, size and contrast. The offsets are two projections of the
    same 3-D position: the lesion sits at angle ``psi`` around the nipple-chest-wall axis and
    radial fraction ``rho``; CC sees ``rho * cos(psi)``, the oblique MLO ``rho * cos(psi - 45°)``.
    The random draws do not depend on ``subtlety``, so the same generator state with a lower
    subtlety gives the same lesion with a higher contrast.

    Args:
        rng: Random generator.
        subtlety: 0 (obvious) .. 1 (barely visible); see the module docstring for the mapping.

    Returns:
        ``{"CC": Lesion, "MLO": Lesion}``.

    Raises:
        ValueError: If ``subtlety`` is outside [0, 1].
    """
    _check_unit("subtlety", subtlety)
    kind = LESION_KINDS[int(rng.choice(len(LESION_KINDS), p=_KIND_PROBS))]
    depth = float(rng.uniform(0.15, 0.85))
    is_calc = kind == "calcifications"
    size = float(rng.uniform(0.02, 0.04) if is_calc else rng.uniform(0.025, 0.05))
    psi = float(rng.uniform(0.0, 2.0 * math.pi))
    rho = 0.85 * math.sqrt(float(rng.random()))
    lo, hi = _CALC_CONTRAST if is_calc else _MASS_CONTRAST
    base = float(rng.uniform(lo, hi))
    contrast = base * (1.0 - (_K_CALC if is_calc else _K_MASS) * subtlety)
    offsets = {"CC": rho * math.cos(psi), "MLO": rho * math.cos(psi - math.pi / 4)}
    return {
        v: Lesion(kind, depth, float(np.clip(o, -1, 1)), size, contrast) for v, o in offsets.items()
    }


def breast_params(rng: np.random.Generator) -> dict:
    """Sample one woman's anatomy, shared by her four views.

    Returns:
        Dict with scalar keys ``density`` (0..1), ``size`` (overall scale), ``fat_level``,
        ``fat_edge``, ``dense_level``, ``muscle_level`` (grey levels), ``gland_center`` (0..1
        along the chest-wall-to-nipple axis), ``skew``, ``square`` (outline shape), and per-view
        outline dicts under ``"CC"`` and ``"MLO"`` (fractions of image width/height).
    """
    u = rng.uniform
    rx = float(u(0.62, 0.80))
    return {
        "density": float(rng.beta(2.0, 2.2)),
        "size": float(u(0.9, 1.06)),
        "fat_level": float(u(75.0, 100.0)),
        "fat_edge": float(u(32.0, 48.0)),
        "dense_level": float(u(160.0, 195.0)),
        "muscle_level": float(u(175.0, 200.0)),
        "gland_center": float(u(0.3, 0.5)),
        "skew": float(u(-0.08, 0.08)),
        "square": float(u(-0.05, 0.12)),
        "CC": {
            "cy": float(u(0.47, 0.53)),
            "rx": rx,
            "ry_top": float(u(0.37, 0.43)),
            "ry_bot": float(u(0.37, 0.43)),
            "tilt": float(u(-0.05, 0.05)),
        },
        "MLO": {
            "cy": float(u(0.46, 0.52)),
            "rx": rx * float(u(0.95, 1.05)),
            "ry_top": float(u(0.62, 0.72)),
            "ry_bot": float(u(0.40, 0.46)),
            "tilt": float(u(0.05, 0.2)),
            "muscle_x": float(u(0.45, 0.75)),
            "muscle_y": float(u(0.32, 0.55)),
            "muscle_p": float(u(0.95, 1.15)),
        },
    }


# --- geometry --------------------------------------------------------------------------


def _view_geometry(anatomy: dict, view: str, height: int, width: int) -> _Geometry:
    v, size = anatomy[view], anatomy["size"]
    g = _Geometry(
        cy=v["cy"] * height,
        rx=min(v["rx"] * size, 0.9) * width,
        ry_top=v["ry_top"] * size * height,
        ry_bot=v["ry_bot"] * size * height,
        tilt=v["tilt"],
        skew=anatomy["skew"],
        square=anatomy["square"],
        muscle_x=0.0,
        muscle_y=0.0,
        muscle_p=1.0,
    )
    if view != "MLO":
        return g
    # The muscle must stay inside the silhouette: scale it to where the outline meets row 0.
    xs = np.linspace(0.0, g.rx, 256)
    inside = xs[_ellipse(g, xs, np.zeros_like(xs))[2] < 1.0]
    x_top = float(inside.max()) if inside.size else 0.3 * g.rx
    return replace(
        g,
        muscle_x=v["muscle_x"] * x_top,
        muscle_y=v["muscle_y"] * height,
        muscle_p=v["muscle_p"],
    )


def _ellipse(g: _Geometry, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Breast-frame coordinates and normalised radius ``d`` (< 1 inside the breast).

    Returns:
        ``(xr, yr, d, rx_eff, ry)`` where ``xr`` runs from the chest wall to the nipple and
        ``yr`` across the breast.
    """
    c, s = math.cos(g.tilt), math.sin(g.tilt)
    dy = y - g.cy
    xr = x * c + dy * s
    yr = dy * c - x * s
    ry = np.where(yr < 0, g.ry_top, g.ry_bot).astype(np.float32)
    v = yr / ry
    rx_eff = g.rx * (1.0 + g.skew * v + g.square * v * v)
    d = np.sqrt((xr / rx_eff) ** 2 + v * v)
    return xr, yr, d, rx_eff, ry


def _muscle_m(g: _Geometry, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
    """Muscle coordinate: < 1 inside the pectoral muscle (upper chest-wall corner)."""
    mx = np.maximum(np.asarray(x, dtype=np.float32), 0.0) / g.muscle_x
    my = np.maximum(np.asarray(y, dtype=np.float32), 0.0) / g.muscle_y
    return mx**g.muscle_p + my**g.muscle_p


def lesion_center(
    lesion: Lesion, *, height: int, width: int, view: str, laterality: str, anatomy: dict
) -> tuple[float, float]:
    """Pixel position (row, col) of a lesion's centre in the rendered image.

    Depth runs along the breast axis from near the nipple (0) to near the chest wall (1);
    offset moves across the breast (-1 top, +1 bottom) within 80 % of the local half-height.
    On MLO views a position inside the pectoral muscle is pushed out of it.

    Args:
        lesion: The lesion.
        height: Image height in pixels.
        width: Image width in pixels.
        view: "CC" or "MLO".
        laterality: "L" or "R".
        anatomy: Output of :func:`breast_params` (the same dict given to the renderer).

    Returns:
        ``(row, col)`` as floats in pixel index coordinates of the output image.
    """
    _check_view(view, laterality)
    _check_size(height, width)
    _check_anatomy(anatomy)
    g = _view_geometry(anatomy, view, height, width)
    xr = g.rx * (0.9 - 0.75 * lesion.depth)
    ry = g.ry_top if lesion.offset < 0 else g.ry_bot
    yr = lesion.offset * 0.8 * ry * math.sqrt(max(0.0, 1.0 - (xr / g.rx) ** 2))
    c, s = math.cos(g.tilt), math.sin(g.tilt)
    x, y = xr * c - yr * s, g.cy + xr * s + yr * c
    if g.muscle_x > 0:
        m = float(_muscle_m(g, x, y))
        if m < 1.3:  # scale outwards from the corner until clear of the muscle
            k = (1.3 / max(m, 1e-3)) ** (1.0 / g.muscle_p)
            x, y = x * k, y * k
    y = min(max(y, 0.06 * height), 0.94 * height)
    x = min(max(x, 0.05 * width), 0.95 * width)
    col = x if laterality == "L" else (width - 1) - x
    return float(y), float(col)


# --- noise helpers ---------------------------------------------------------------------


def _resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bicubic resize of a float32 array with Pillow (mode "F"); returns a writable copy."""
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    return np.array(img.resize((w, h), Image.Resampling.BICUBIC))


def _pyramid_noise(
    rng: np.random.Generator,
    h: int,
    w: int,
    cells: tuple[int, ...],
    decay: float,
    col_ratio: float | None = None,
) -> np.ndarray:
    """Unit-std correlated noise: white-noise octaves with ``cells`` rows, summed coarse-to-fine.

    Each octave is upsampled to the next one's grid, so only the last resize is to (h, w).
    Octaves finer than the output grid are skipped. ``col_ratio`` (columns per row of each
    octave) makes the noise anisotropic; by default cells are square.
    """
    ratio = w / h if col_ratio is None else col_ratio
    acc, amp = None, 1.0
    for n in cells:
        if n > h:
            break
        lh, lw = n, min(w, max(2, round(n * ratio)))
        layer = rng.standard_normal((lh, lw), dtype=np.float32) * amp
        acc = layer if acc is None else _resize(acc, lh, lw) + layer
        amp *= decay
    if acc is None:
        return np.zeros((h, w), np.float32)
    acc = _resize(acc, h, w)
    sample = acc[::4, ::4]  # statistics from a subsample: 16x cheaper, accurate enough
    return (acc - sample.mean()) / (sample.std() + 1e-6)


def _fan(src: np.ndarray, h: int, w: int, fy: float, spread: float = 3.0) -> np.ndarray:
    """Warp a source whose streaks run along its rows onto an (h, w) grid (L orientation).

    Each output column samples a band of source rows that widens ``spread``-fold from the
    chest wall (left) to the nipple side (right), so streaks fan out from near row ``fy`` on
    the nipple side towards the chest wall, as ducts and ligaments do. One bilinear Pillow
    QUAD transform, much faster than a per-pixel polar lookup.
    """
    hs, ws = src.shape
    s0 = hs / spread
    v0 = (hs - s0) * min(max(fy, 0.0), h) / h
    quad = (0.0, v0, 0.0, v0 + s0, float(ws), float(hs), float(ws), 0.0)
    img = Image.fromarray(np.ascontiguousarray(src, dtype=np.float32))
    out = img.transform((w, h), Image.Transform.QUAD, quad, Image.Resampling.BILINEAR)
    return np.array(out)


def _streak_noise(
    rng: np.random.Generator, h: int, w: int, fy: float, cells: tuple[int, ...], decay: float
) -> np.ndarray:
    """Unit-std noise streaked along the breast axis and fanned towards the nipple."""
    hs = max(4, round(1.5 * h))
    # Source cells ~3x wider than tall after the ~1x mid-breast vertical magnification.
    src = _pyramid_noise(rng, hs, w, cells, decay, col_ratio=w / (3.0 * hs))
    out = _fan(src, h, w, fy)
    sample = out[::4, ::4]
    return (out - sample.mean()) / (sample.std() + 1e-6)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# --- background rendering --------------------------------------------------------------


def _strands(rng: np.random.Generator, h: int, w: int, fy: float) -> np.ndarray:
    """Thin lines fanning from the nipple: ridges at zero crossings of a 1-D noise over rows."""
    hs = max(4, round(1.5 * h))
    n_knots = max(4, hs // 12)
    knots = rng.standard_normal(n_knots).astype(np.float32)
    noise = np.interp(np.arange(hs), np.linspace(0, hs - 1, n_knots), knots)
    slope = np.abs(np.gradient(noise)) + 1e-3
    # Ridge half-width ~1.2 source rows whatever the local slope of the noise.
    ridge = np.clip(1.0 - np.abs(noise) / (1.2 * slope), 0.0, 1.0) ** 2
    src = np.repeat(ridge.astype(np.float32)[:, None], 2, axis=1)
    return _fan(src, h, w, fy)


def _coords(g: _Geometry, shape: tuple[int, int], scale: tuple[float, float]) -> dict:
    """Per-pixel geometry on the half-resolution grid, in full-resolution pixel units."""
    h, w = shape
    ys = ((np.arange(h, dtype=np.float32) + 0.5) * scale[0] - 0.5)[:, None]
    xs = ((np.arange(w, dtype=np.float32) + 0.5) * scale[1] - 0.5)[None, :]
    xr, yr, d, rx_eff, ry = _ellipse(g, xs, ys)
    # Signed distance to the outline (first order: (1 - d) / |grad d|), > 0 inside.
    grad = np.sqrt((xr / rx_eff**2) ** 2 + (yr / ry**2) ** 2) / np.maximum(d, 1e-3)
    dist = (1.0 - d) / np.maximum(grad, 1e-6)
    # Streaks converge on the nipple row (grid units).
    fy = (g.cy + g.rx * math.sin(g.tilt) + 0.5) / scale[0] - 0.5
    return {"xs": xs, "ys": ys, "xr": xr, "yr": yr, "ry": ry, "d": d, "dist": dist, "fy": fy}


def _tissue(
    rng: np.random.Generator,
    anatomy: dict,
    g: _Geometry,
    shape: tuple[int, int],
    scale: tuple[float, float],
) -> np.ndarray:
    """Half-resolution breast image (float32, L orientation) without sensor noise or lesion."""
    h, w = shape
    k = _coords(g, shape, scale)
    d, dist, px = k["d"], k["dist"], h * scale[0] / 1024.0  # px: pixels of a 1024-high image
    big = 0.55 * _pyramid_noise(rng, h, w, (4, 8, 16), 0.6)
    big += 0.85 * _streak_noise(rng, h, w, k["fy"], (4, 8, 16, 32), 0.6)
    fine = 0.5 * _pyramid_noise(rng, h, w, (64, 128, 256), 0.7)
    fine += 0.87 * _streak_noise(rng, h, w, k["fy"], (32, 64, 128, 256), 0.75)
    strands = _strands(rng, h, w, k["fy"])

    thick = _smoothstep(0.0, 60.0 * px, dist)  # compressed-thickness fall-off to the skin
    fat = anatomy["fat_edge"] + (anatomy["fat_level"] - anatomy["fat_edge"]) * thick**0.6
    fat = fat * (1.0 + 0.04 * big + 0.03 * fine)
    # Glandular envelope: centred on the axis, fading into the subcutaneous fat.
    a = k["xr"] / g.rx - anatomy["gland_center"]
    env = np.exp(-(a * a) / 0.18 - (k["yr"] / k["ry"]) ** 2 / 0.35)
    env *= 1.0 - _smoothstep(0.7, 0.93, d)
    level = big + 0.5 * fine + 2.2 * env - (2.6 - 2.4 * anatomy["density"])
    gland = _smoothstep(-0.9, 0.9, level) * (1.0 - _smoothstep(0.8, 0.95, d))

    dense = anatomy["dense_level"] * (1.0 + 0.04 * big)
    img = fat + (dense - fat) * gland * thick
    img += fine * (3.0 + 10.0 * gland)
    # Strands show as segments (where the streaky noise is high), mostly in the fat.
    segments = np.clip(0.3 + 0.8 * big, 0.0, 1.0) * np.clip(0.6 + 0.5 * fine, 0.0, 1.0)
    img += strands * segments * (20.0 - 10.0 * gland) * thick
    img += 30.0 * np.exp(-(((dist - 2.5 * px) / (1.6 * px)) ** 2))  # skin line
    if g.muscle_x > 0:
        img = _add_muscle(anatomy, g, img, k, (big, fine), px)
    over = np.maximum(img - _TISSUE_KNEE, 0.0)  # soft ceiling: keep the brightest for calcs
    img += (_TISSUE_CAP - _TISSUE_KNEE) * np.tanh(over / (_TISSUE_CAP - _TISSUE_KNEE)) - over
    alpha = np.clip(dist / scale[0] + 0.5, 0.0, 1.0)  # anti-aliased outline
    return (_BACKGROUND + alpha * (img - _BACKGROUND)).astype(np.float32)


def _add_muscle(
    anatomy: dict, g: _Geometry, img: np.ndarray, k: dict, noise: tuple, px: float
) -> np.ndarray:
    """Blend a bright pectoral muscle into the upper chest-wall corner (MLO)."""
    big, fine = noise
    m = _muscle_m(g, k["xs"], k["ys"])
    edge = 4.0 * px / min(g.muscle_x, g.muscle_y)
    alpha = 1.0 - _smoothstep(1.0 - edge, 1.0 + edge, m)
    level = anatomy["muscle_level"] + 14.0 * np.clip(1.0 - m, 0.0, 1.0)
    level = level + 9.0 * big + 6.0 * fine
    return img + alpha * (level - img)


# --- lesions ---------------------------------------------------------------------------


def _patch(img: np.ndarray, row: float, col: float, half: float) -> tuple:
    """Slice of ``img`` around (row, col) and the coordinates of its pixels relative to it."""
    h, w = img.shape
    r0, r1 = max(0, int(row - half)), min(h, int(row + half) + 2)
    c0, c1 = max(0, int(col - half)), min(w, int(col + half) + 2)
    yy = (np.arange(r0, r1, dtype=np.float32) - row)[:, None]
    xx = (np.arange(c0, c1, dtype=np.float32) - col)[None, :]
    return (slice(r0, r1), slice(c0, c1)), yy, xx


def _draw_mass(
    rng: np.random.Generator,
    img: np.ndarray,
    center: tuple[float, float],
    radius: float,
    contrast: float,
    lobes: float,
    blur: float,
) -> None:
    """Add a lobulated, dome-shaped blob with a soft edge."""
    sl, yy, xx = _patch(img, *center, radius * (1.6 + lobes) + 3)
    r = np.sqrt(yy * yy + xx * xx)
    th = np.arctan2(yy, xx)
    amps = rng.uniform(0.0, lobes, 3) * (1.0, 0.6, 0.4)
    phases = rng.uniform(0.0, 2 * math.pi, 3)
    shape = 1.0 + sum(a * np.cos(k * th + p) for a, k, p in zip(amps, (2, 3, 5), phases))
    q = r / (max(radius, 0.7) * shape)
    edge = 1.0 / (1.0 + np.exp(np.clip((q - 1.0) / blur, -30, 30)))
    dome = 0.55 + 0.45 * np.sqrt(np.clip(1.0 - q * q, 0.0, 1.0))
    img[sl] += contrast * edge * dome


def _draw_spicules(
    rng: np.random.Generator,
    img: np.ndarray,
    center: tuple[float, float],
    radius: float,
    contrast: float,
) -> None:
    """Add 8-19 thin, slightly curved, tapering lines radiating from a mass core."""
    n = int(rng.integers(8, 20))
    angles = rng.uniform(0.0, 2 * math.pi, n)  # irregular on purpose: a regular star looks fake
    lengths = radius * rng.uniform(1.0, 3.2, n)
    widths = np.maximum(0.6, rng.uniform(1.0, 1.8, n) * img.shape[0] / 1024.0)
    gains = rng.uniform(0.25, 0.55, n)
    bends = rng.uniform(-0.15, 0.15, n)
    for th, length, wid, gain, bend in zip(angles, lengths, widths, gains, bends):
        ux, uy = math.cos(th), math.sin(th)
        # Start at the core's edge so the spicules do not pile up into a bright centre.
        r_mid = 0.9 * radius + 0.5 * length
        mid = (center[0] + r_mid * uy, center[1] + r_mid * ux)
        sl, yy, xx = _patch(img, *mid, (0.5 + abs(bend)) * length + 3 * wid + 1)
        along = xx * ux + yy * uy
        t = np.clip(along, -0.5 * length, 0.5 * length)
        frac = t / length + 0.5  # 0 at the core, 1 at the tip
        perp = yy * ux - xx * uy - bend * length * frac * frac
        w = wid * (1.6 - frac)  # thicker at the base
        dist2 = (along - t) ** 2 + perp * perp
        img[sl] += contrast * gain * (1.0 - frac) ** 0.8 * np.exp(-dist2 / (w * w))


def _draw_calcifications(
    rng: np.random.Generator,
    img: np.ndarray,
    center: tuple[float, float],
    spread: float,
    contrast: float,
) -> None:
    """Add a cluster of 5-20 tiny bright specks (1-4 px radius at 1024 px height).

    Each speck is a disc plus two smaller overlapping discs, so the shapes are irregular
    (pleomorphic) rather than perfect circles.
    """
    n = int(rng.integers(8, 26))
    offsets = np.clip(rng.normal(0.0, 0.5 * spread, (n, 2)), -1.5 * spread, 1.5 * spread)
    radii = np.maximum(0.7, rng.uniform(2.5, 5.0, n) * img.shape[0] / 1024.0)
    gains = rng.uniform(0.75, 1.0, n)
    lobe_offsets = rng.normal(0.0, 0.6, (n, 2, 2))  # in units of the speck radius
    lobe_radii = rng.uniform(0.3, 0.8, (n, 2))
    for i in range(n):
        rad = radii[i]
        row, col = center[0] + offsets[i, 0], center[1] + offsets[i, 1]
        if rad < 1.5:  # snap tiny specks to a pixel centre so they are not smeared to grey
            row, col = round(row), round(col)
        sl, yy, xx = _patch(img, row, col, 2.5 * rad + 2)
        cover = np.clip(rad + 0.5 - np.sqrt(yy * yy + xx * xx), 0.0, 1.0)
        for (oy, ox), lr in zip(lobe_offsets[i] * rad, lobe_radii[i] * rad):
            lobe = np.clip(lr + 0.5 - np.sqrt((yy - oy) ** 2 + (xx - ox) ** 2), 0.0, 1.0)
            cover = np.maximum(cover, lobe)
        img[sl] += contrast * gains[i] * cover


def _draw_lesion(
    rng: np.random.Generator, img: np.ndarray, lesion: Lesion, center: tuple[float, float]
) -> None:
    radius = lesion.size * img.shape[0]
    if lesion.kind == "round":
        _draw_mass(rng, img, center, radius, lesion.contrast, lobes=0.08, blur=0.06)
    elif lesion.kind == "spiculated":
        _draw_mass(rng, img, center, 0.75 * radius, lesion.contrast, lobes=0.25, blur=0.12)
        _draw_spicules(rng, img, center, 0.75 * radius, lesion.contrast)
    else:
        _draw_calcifications(rng, img, center, radius, lesion.contrast)


# --- public renderer -------------------------------------------------------------------


def render_mammogram(
    rng: np.random.Generator,
    *,
    height: int,
    width: int,
    view: str,
    laterality: str,
    lesion: Lesion | None = None,
    density: float = 0.5,
    anatomy: dict | None = None,
) -> np.ndarray:
    """Render one mammogram-like image.

    Args:
        rng: Random generator; the image is a pure function of its state and the arguments.
        height: Image height in pixels (>= 32).
        width: Image width in pixels (>= 32).
        view: "CC" or "MLO" (MLO adds the pectoral muscle and a taller breast).
        laterality: "L" (chest wall on the left edge) or "R" (chest wall on the right edge).
        lesion: Optional lesion to draw, placed with :func:`lesion_center`.
        density: Fibroglandular density 0..1, used only when ``anatomy`` is None (otherwise
            ``anatomy["density"]`` wins, so a woman's views agree).
        anatomy: Per-woman parameters from :func:`breast_params`; drawn from ``rng`` if None.

    Returns:
        ``uint8`` array of shape (height, width).

    Raises:
        ValueError: For an unknown view or laterality, a size below 32 pixels, a density
            outside [0, 1] or an incomplete anatomy dict.
    """
    _check_view(view, laterality)
    _check_size(height, width)
    _check_unit("density", density)
    if anatomy is None:
        anatomy = {**breast_params(rng), "density": float(density)}
    _check_anatomy(anatomy)
    g = _view_geometry(anatomy, view, height, width)

    h2, w2 = (height + 1) // 2, (width + 1) // 2
    half = _tissue(rng, anatomy, g, (h2, w2), (height / h2, width / w2))
    if laterality == "R":
        half = half[:, ::-1]
    img = _resize(half, height, width)
    # Sensor noise: uniform is cheaper than Gaussian and looks the same at std ~2 grey levels.
    img += (rng.random((height, width), dtype=np.float32) - 0.5) * 7.0
    if lesion is not None:
        center = lesion_center(
            lesion, height=height, width=width, view=view, laterality=laterality, anatomy=anatomy
        )
        _draw_lesion(rng, img, lesion, center)
    return np.clip(img, 0.0, 255.0).astype(np.uint8)
