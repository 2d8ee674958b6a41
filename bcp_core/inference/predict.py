"""Prediction with a bundle: one image with its heatmap, or many files in streamed batches.

Every image goes through :func:`bcp_core.imaging.preparation.prepare_gray`, the function training used,
driven by the bundle's preprocessing spec; :func:`prepare_image` also records where the crop
was and whether the image was mirrored, so a Grad-CAM heatmap can be drawn on the decoded
image. Batch prediction holds one batch of network inputs at a time, never the whole list, and
turns a file that cannot be read into an error entry instead of stopping the run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bcp_core.config import IMAGE_EXTENSIONS, PreprocessSpec
from bcp_core.errors import UserError
from bcp_core.imaging.decode import read_gray
from bcp_core.imaging.dicom import looks_like_dicom, read_dicom_gray
from bcp_core.imaging.preparation import breast_bbox, chest_wall_on_right, decode_size, prepare_gray
from bcp_core.inference.explain import gradcam_heatmap, heatmap_to_image
from bcp_core.model.bundle import MODEL_FILE, Bundle, load_keras_model

#: A file to predict: a path, or (name, bytes) for an upload.
Source = str | os.PathLike | tuple[str, bytes]
ProgressCallback = Callable[[int, int], None]

#: Header fields of a DICOM file kept with a prediction (the patient ID deliberately is not).
_DICOM_FIELDS = ("view", "laterality", "photometric", "bits_stored", "manufacturer", "frames")

# --- View and laterality from a file name -----------------------------------------------------

_SIDE = r"(?P<side>left|right|l|r)"
_VIEW = r"(?P<view>cc|mlo)"
_SEP = r"[-_. ]?"
# Letters may not touch the match ("access" is no "cc"); digits and separators may ("P01LCC").
_SIDE_VIEW = re.compile(rf"(?<![a-z]){_SIDE}{_SEP}{_VIEW}(?![a-z])", re.IGNORECASE)
_VIEW_SIDE = re.compile(rf"(?<![a-z]){_VIEW}{_SEP}{_SIDE}(?![a-z])", re.IGNORECASE)
_VIEW_ONLY = re.compile(rf"(?<![a-z]){_VIEW}(?![a-z])", re.IGNORECASE)
_SIDE_ONLY = re.compile(r"(?<![a-z])(?P<side>left|right)(?![a-z])", re.IGNORECASE)


def parse_view_from_name(name: str) -> dict[str, str]:
    """View (CC / MLO) and laterality (L / R) written in a file name, case-insensitively.

    Accepts "L-CC", "R_MLO", "LCC", "RMLO", "left_cc", "Right MLO", "CC-L", "mlo_right" and the
    like anywhere in the name; a lone "CC"/"MLO" or "left"/"right" gives just that part.

    Returns:
        ``{"view": "CC" | "MLO" | "", "laterality": "L" | "R" | ""}`` ("" when not found).
    """
    stem = Path(str(name)).stem
    match = _SIDE_VIEW.search(stem) or _VIEW_SIDE.search(stem)
    if match:
        return {"view": match["view"].upper(), "laterality": match["side"][0].upper()}
    view, side = _VIEW_ONLY.search(stem), _SIDE_ONLY.search(stem)
    return {
        "view": view["view"].upper() if view else "",
        "laterality": side["side"][0].upper() if side else "",
    }


# --- One image ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """Where the network input came from in the decoded image.

    Attributes:
        original_shape: (height, width) of the decoded image.
        crop_box: (top, bottom, left, right) of the crop, in the decoded image's coordinates.
        flipped: the image was mirrored left-right (chest wall moved to the left).
        fitted_size: (height, width) of the resized crop inside the padded network input.
    """

    original_shape: tuple[int, int]
    crop_box: tuple[int, int, int, int]
    flipped: bool
    fitted_size: tuple[int, int]


@dataclass
class PreparedImage:
    """A decoded image, its network input and how one maps onto the other.

    Attributes:
        name: the file name shown to the user.
        gray: the decoded image, float32 (h, w) in [0, 1] (large JPEGs are decoded at a
            reduced scale, exactly as at training).
        net_input: float32 (H, W, 1), identical to :func:`bcp_core.imaging.preparation.preprocess_image`.
        geometry: crop box, flip and fitted size (see :class:`Geometry`).
        meta: ``view`` and ``laterality`` (from the DICOM header, else from the file name, ""
            when unknown) and, for DICOM, ``photometric``, ``bits_stored``, ``manufacturer``,
            ``frames``; never the patient ID.
    """

    name: str
    gray: np.ndarray
    net_input: np.ndarray
    geometry: Geometry
    meta: dict = field(default_factory=dict)

    def heatmap_on_image(self, heatmap: np.ndarray) -> np.ndarray:
        """A network-size heatmap mapped onto :attr:`gray` (see :func:`heatmap_to_image`)."""
        g = self.geometry
        return heatmap_to_image(heatmap, g.original_shape, g.crop_box, g.flipped, g.fitted_size)


def fitted_size(shape: tuple[int, int], height: int, width: int) -> tuple[int, int]:
    """Size of an image of ``shape`` after :func:`bcp_core.imaging.preparation.fit_to_size`.

    The same arithmetic as ``fit_to_size`` (aspect kept, at least one pixel); a test checks
    the two against each other.
    """
    h, w = shape
    scale = min(height / h, width / w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def prepare_gray_with_geometry(
    gray: np.ndarray, spec: PreprocessSpec
) -> tuple[np.ndarray, Geometry]:
    """:func:`bcp_core.imaging.preparation.prepare_gray`, plus where the crop was and whether it flipped.

    The network input is ``prepare_gray``'s own output; the geometry repeats its decisions
    with the same public helpers (``chest_wall_on_right``, ``breast_bbox``), which are
    deterministic, so the two always agree.
    """
    net_input = prepare_gray(gray, spec)
    h, w = gray.shape
    flipped = bool(spec.orient and chest_wall_on_right(gray))
    oriented = gray[:, ::-1] if flipped else gray
    top, bottom, left, right = breast_bbox(oriented) if spec.crop else (0, h, 0, w)
    if flipped:  # the box was found on the mirrored image
        left, right = w - right, w - left
    geometry = Geometry(
        original_shape=(h, w),
        crop_box=(int(top), int(bottom), int(left), int(right)),
        flipped=flipped,
        fitted_size=fitted_size((bottom - top, right - left), spec.height, spec.width),
    )
    return net_input, geometry


def prepare_image(
    source: str | os.PathLike | bytes, spec: PreprocessSpec, name: str = ""
) -> PreparedImage:
    """Decode one file (path or bytes, DICOM or not) and prepare it as the bundle's input.

    Args:
        source: a path or the file's bytes.
        spec: the bundle's preprocessing.
        name: the file name of uploaded bytes (its suffix can mark DICOM; its words can name
            the view and laterality).

    Raises:
        UserError: one sentence, for a missing file, a folder or an unreadable image.
    """
    if not isinstance(source, bytes):
        source = Path(source)
        _check_file(source)
    label = name or (source.name if isinstance(source, Path) else "the uploaded image")
    meta: dict = {}
    if looks_like_dicom(source, name):
        gray, header = read_dicom_gray(source)
        meta = {k: header[k] for k in _DICOM_FIELDS}
    else:
        # The decode size preprocess_image asks for: large JPEGs shrink by the same factor.
        gray = read_gray(source, min_size=decode_size(spec), name=name)
    from_name = parse_view_from_name(label)
    for key in ("view", "laterality"):
        meta[key] = meta.get(key) or from_name[key]
    net_input, geometry = prepare_gray_with_geometry(gray, spec)
    return PreparedImage(label, gray, net_input, geometry, meta)


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise UserError(f"{path} is a folder without image files ({', '.join(IMAGE_EXTENSIONS)}).")
    if not path.exists():
        raise UserError(f"File not found: {path}.")


def predict_one(
    bundle: Bundle,
    source: str | os.PathLike | bytes,
    name: str = "",
    *,
    threshold: float | None = None,
    with_heatmap: bool = True,
) -> dict:
    """Predict one image for the dashboard, with its Grad-CAM heatmap on the decoded image.

    Returns:
        dict with ``file``, ``probability`` (of cancer), ``label`` (1 when probability >=
        threshold), ``threshold``, ``meta`` (see :class:`PreparedImage`), ``gray`` (the decoded
        image, float32 (h, w)), ``heatmap`` (float32 (h, w) in [0, 1] on ``gray``, or None),
        ``net_input`` (H, W, 1) and ``input_heatmap`` ((H, W) on the network input, or None).

    Raises:
        UserError: for an unreadable image or a threshold outside [0, 1].
    """
    cut = _threshold(bundle, threshold)
    prepared = prepare_image(source, bundle.spec, name)
    model = _model(bundle)
    probability = float(_probabilities(model, [prepared.net_input])[0])
    result = {
        "file": prepared.name,
        "probability": probability,
        "label": int(probability >= cut),
        "threshold": cut,
        "meta": prepared.meta,
        "gray": prepared.gray,
        "heatmap": None,
        "net_input": prepared.net_input,
        "input_heatmap": None,
    }
    if with_heatmap:
        heat = gradcam_heatmap(model, prepared.net_input)
        result["input_heatmap"] = heat
        result["heatmap"] = prepared.heatmap_on_image(heat)
    return result


# --- Many files ---------------------------------------------------------------------------------


def expand_inputs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders replaced by their image files (recursively, sorted).

    Hidden files and folders are skipped; only suffixes of ``config.IMAGE_EXTENSIONS`` are
    taken from folders. A missing path, or a folder without images, stays in the list as it is,
    so that :func:`predict_files` reports it as an error entry instead of the run failing.
    """
    out: list[Path] = []
    for given in paths:
        path = Path(given)
        found = _image_files(path) if path.is_dir() else []
        out.extend(found or [path])
    return out


def _image_files(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(root) / name)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def iter_predictions(
    bundle: Bundle,
    sources: Iterable[Source],
    *,
    batch_size: int = 16,
    threshold: float | None = None,
    on_progress: ProgressCallback | None = None,
) -> Iterator[dict]:
    """Like :func:`predict_files`, one result at a time (a batch is predicted at once)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"Batch size must be a whole number of at least 1, got {batch_size!r}.")
    cut = _threshold(bundle, threshold)
    items = list(sources)
    model, spec = _model(bundle), bundle.spec
    for start in range(0, len(items), batch_size):
        chunk = [_read_for_batch(item, spec) for item in items[start : start + batch_size]]
        ready = [entry for entry in chunk if "error" not in entry]
        probabilities = _probabilities(model, [entry.pop("_input") for entry in ready])
        for entry, probability in zip(ready, probabilities):
            entry.update(probability=float(probability), threshold=cut)
            entry["label"] = int(entry["probability"] >= cut)
        yield from (_ordered(entry) for entry in chunk)
        if on_progress is not None:
            on_progress(min(start + batch_size, len(items)), len(items))


def predict_files(
    bundle: Bundle,
    sources: Iterable[Source],
    *,
    batch_size: int = 16,
    threshold: float | None = None,
    on_progress: ProgressCallback | None = None,
) -> list[dict]:
    """Predict many files in batches; unreadable ones become error entries.

    Args:
        bundle: a loaded bundle (its model is loaded here when it was not).
        sources: paths (e.g. from :func:`expand_inputs`) or ``(name, bytes)`` uploads.
        batch_size: images decoded and predicted together; memory holds one batch.
        threshold: decision threshold; default the bundle's saved one.
        on_progress: called as ``on_progress(done, total)`` after each batch.

    Returns:
        One dict per source, in order: ``file``, ``probability`` (of cancer), ``label``
        (1 when probability >= threshold), ``threshold``, and ``view`` / ``laterality`` when
        known; or ``file`` and ``error`` (one sentence) for a file that could not be read.

    Raises:
        UserError: for a threshold outside [0, 1] or a bad batch size (not for bad files).
    """
    return list(
        iter_predictions(
            bundle, sources, batch_size=batch_size, threshold=threshold, on_progress=on_progress
        )
    )


def _read_for_batch(item: Source, spec: PreprocessSpec) -> dict:
    """A partial result holding the network input, or an error entry."""
    if isinstance(item, tuple):
        name, source = item
    else:
        name, source = str(item), item
    try:
        prepared = prepare_image(source, spec, name if isinstance(source, bytes) else "")
    except UserError as exc:
        return {"file": name, "error": str(exc)}
    # Keep only the network input: the decoded image can be 50 MB and is not needed here.
    entry = {"file": name, "_input": prepared.net_input}
    entry.update({k: prepared.meta[k] for k in ("view", "laterality") if prepared.meta.get(k)})
    return entry


def _ordered(entry: dict) -> dict:
    keys = ("file", "probability", "label", "threshold", "view", "laterality", "error")
    return {k: entry[k] for k in keys if k in entry}


def _probabilities(model, inputs: list[np.ndarray]) -> np.ndarray:
    if not inputs:
        return np.zeros(0, dtype=np.float32)
    batch = np.stack(inputs).astype(np.float32, copy=False)
    return np.asarray(model(batch, training=False), dtype=np.float32).reshape(-1)


def _threshold(bundle: Bundle, threshold: float | None) -> float:
    value = bundle.threshold if threshold is None else threshold
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise UserError(f"A threshold must be between 0 and 1, got {threshold!r}.")
    return value


def _model(bundle: Bundle):
    if bundle.model is None:
        bundle.model = load_keras_model(Path(bundle.path) / MODEL_FILE)
    return bundle.model


# --- Per breast and per woman -------------------------------------------------------------------

BREAST_COLUMNS = ("breast", "views", "probability", "label")


def breast_results_df(results: Iterable[dict]) -> pd.DataFrame:
    """Per-breast and per-woman probabilities from one woman's image results.

    The top screening systems average a breast's views and take the maximum over the two
    breasts (FIELD_NOTES, "Aggregate per breast and per patient"). Results with an error or
    without a known laterality are left out.

    Args:
        results: dicts from :func:`predict_files` for the images of one woman.

    Returns:
        DataFrame with columns ``breast`` ("L", "R", then "woman"), ``views`` (the views
        averaged, e.g. "CC+MLO"; for the woman row the breasts, e.g. "L+R"), ``probability``
        (mean of the breast's views; for the woman the maximum over breasts) and ``label``
        (1 when probability >= the results' threshold). Empty when no laterality is known.
    """
    usable = [r for r in results if "probability" in r and r.get("laterality") in ("L", "R")]
    if not usable:
        return pd.DataFrame(columns=list(BREAST_COLUMNS))
    cut = float(usable[0]["threshold"])
    rows = []
    for side in ("L", "R"):
        own = [r for r in usable if r["laterality"] == side]
        if own:
            views = sorted({r.get("view") or "?" for r in own})
            probability = float(np.mean([r["probability"] for r in own]))
            rows.append({"breast": side, "views": "+".join(views), "probability": probability})
    woman = max(rows, key=lambda row: row["probability"])["probability"]
    sides = "+".join(row["breast"] for row in rows)
    rows.append({"breast": "woman", "views": sides, "probability": woman})
    df = pd.DataFrame(rows, columns=list(BREAST_COLUMNS))
    df["label"] = (df["probability"] >= cut).astype(int)
    return df


RESULT_COLUMNS = ("file", "probability", "label", "threshold", "view", "laterality", "error")


def results_df(results: Iterable[dict]) -> pd.DataFrame:
    """Prediction results as a table (columns ``RESULT_COLUMNS``; missing values empty)."""
    df = pd.DataFrame(list(results)).reindex(columns=list(RESULT_COLUMNS))
    text = {"file": str, "view": object, "laterality": object, "error": object}
    return df.astype(text).fillna({"view": "", "laterality": "", "error": ""})
