"""One file as prediction reads it: decoded, checked to look like a mammogram, prepared as the
bundle's input, with its view and laterality (from the DICOM header, else from the file name).

Every file goes through :func:`bcp_core.imaging.preparation.decode_and_prepare`, the path
training's inputs take, driven by the bundle's preprocessing spec; its recorded geometry (flip,
crop, placement) lets a Grad-CAM heatmap be drawn on the decoded image.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bcp_core.config import IMAGE_EXTENSIONS, PreprocessSpec
from bcp_core.errors import UserError
from bcp_core.imaging.limits import DEFAULT_MAX_UPLOAD_PIXELS
from bcp_core.imaging.preparation import Geometry, decode_and_prepare, mammogram_doubt
from bcp_core.inference.explain import heatmap_to_image
from bcp_core.inference.results import Prediction

# --- View and laterality from a file name -----------------------------------------------------

_SIDE = r"(?P<side>left|right|l|r)"
_VIEW = r"(?P<view>cc|mlo)"
_SEP = r"[-_. ]?"
# Letters may not touch the match ("access" is no "cc"); digits and separators may ("P01LCC").
# A view without a side may not sit between two digits: in "rf.2a2e092cc5092" it is a hash.
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
    side = _SIDE_ONLY.search(stem)
    return {"view": _lone_view(stem), "laterality": side["side"][0].upper() if side else ""}


def _lone_view(stem: str) -> str:
    """The first "CC" / "MLO" of ``stem`` that is not wedged between two digits (a hash)."""
    for match in _VIEW_ONLY.finditer(stem):
        before, after = stem[match.start() - 1 : match.start()], stem[match.end() : match.end() + 1]
        if not (before.isdigit() and after.isdigit()):
            return match["view"].upper()
    return ""


# --- The prepared image ------------------------------------------------------------------------


@dataclass
class PreparedImage:
    """A decoded image, its network input and how one maps onto the other.

    Attributes:
        name: the file name shown to the user.
        gray: the decoded image, float32 (h, w) in [0, 1] (large JPEGs are decoded at a
            reduced scale, exactly as at training).
        net_input: float32 (H, W, 1), identical to
            :func:`bcp_core.imaging.preparation.preprocess_image` (the training input).
        geometry: flip, crop box and placement
            (see :class:`bcp_core.imaging.preparation.Geometry`).
        header: ``view`` and ``laterality`` (from the DICOM header, else from the file name, ""
            when unknown) and, for DICOM, ``photometric``, ``bits_stored``, ``manufacturer``,
            ``frames``; never the patient ID.
    """

    name: str
    gray: np.ndarray
    net_input: np.ndarray
    geometry: Geometry
    header: dict = field(default_factory=dict)

    def heatmap_on_image(self, heatmap: np.ndarray) -> np.ndarray:
        """A network-size heatmap mapped onto :attr:`gray` (see :func:`heatmap_to_image`)."""
        return heatmap_to_image(heatmap, self.geometry)

    def pending(self, file: str, seen_in: str = "") -> Prediction:
        """A :class:`~bcp_core.inference.results.Prediction` for ``file`` with this image's
        view and laterality, unscored."""
        view, laterality = self.header["view"], self.header["laterality"]
        return Prediction(file, view=view, laterality=laterality, seen_in=seen_in)


def prepare_image(
    source: str | os.PathLike | bytes,
    spec: PreprocessSpec,
    name: str = "",
    *,
    max_upload_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS,
) -> PreparedImage:
    """Decode one file (path or bytes, DICOM or not) and prepare it as the bundle's input.

    Args:
        source: a path or the file's bytes.
        spec: the bundle's preprocessing.
        name: the file name of uploaded bytes (its suffix can mark DICOM; its words can name
            the view and laterality).
        max_upload_pixels: the most pixels uploaded bytes may declare in their header (the
            dashboard passes the server's ``BCP_MAX_UPLOAD_PIXELS``); not used for a path.

    Raises:
        UserError: one sentence, for a missing file, a folder, an unreadable image or one that
            does not look like a mammogram (see
            :func:`bcp_core.imaging.preparation.mammogram_doubt`).
    """
    if not isinstance(source, bytes):
        source = Path(source)
        _check_file(source)
    label = name or (source.name if isinstance(source, Path) else "the uploaded image")
    decoded, prepared = decode_and_prepare(source, spec, name, max_upload_pixels=max_upload_pixels)
    photometric = str(decoded.header.get("photometric", ""))
    doubt = mammogram_doubt(decoded.gray, decoded.colour, photometric)
    if doubt:
        raise UserError(f"{label}: this does not look like a mammogram: {doubt}.")
    header = dict(decoded.header)
    from_name = parse_view_from_name(label)
    for key in ("view", "laterality"):
        header[key] = header.get(key) or from_name[key]
    return PreparedImage(label, decoded.gray, prepared.net_input, prepared.geometry, header)


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise UserError(f"{path} is a folder without image files ({', '.join(IMAGE_EXTENSIONS)}).")
    if not path.exists():
        raise UserError(f"File not found: {path}.")
