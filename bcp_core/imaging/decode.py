"""Decode one image file (JPG, PNG, TIFF or DICOM) into a grey float array in [0, 1].

:func:`decode_image` is the one decoding entry, at training and at prediction alike: it returns
the grey image together with what the file says about itself (a DICOM header's view,
laterality and acquisition fields). :func:`read_gray` is the same, for callers that need only
the pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from bcp_core import config
from bcp_core.errors import UserError
from bcp_core.imaging.dicom import looks_like_dicom, read_dicom_gray
from bcp_core.imaging.limits import DEFAULT_MAX_UPLOAD_PIXELS, check_declared_pixels

#: Header fields of a DICOM file kept with its image (the patient ID deliberately is not).
DICOM_FIELDS = ("view", "laterality", "photometric", "bits_stored", "manufacturer", "frames")


@dataclass(frozen=True)
class Decoded:
    """A decoded image file.

    Attributes:
        gray: float32 (h, w) in [0, 1], bright = dense tissue.
        header: what the file says about itself. For DICOM, the header's ``view`` ("CC",
            "MLO", ...), ``laterality`` ("L", "R"), ``photometric``, ``bits_stored``,
            ``manufacturer`` and ``frames`` (unknown text values are ""); never the patient
            ID. Empty for the other formats.
        colour: how coloured the picture is, the mean of (max - min) over R, G, B in [0, 1];
            0 for grey files (a mammogram), about 0.2 and more for a colour photograph.
    """

    gray: np.ndarray
    header: dict = field(default_factory=dict)
    colour: float = 0.0


def _open(source: str | Path | bytes) -> Image.Image:
    """Open an image lazily (header only), as PIL does."""
    data = io.BytesIO(source) if isinstance(source, bytes) else source
    return Image.open(data)


def _describe(source: str | Path | bytes) -> str:
    return "the uploaded image" if isinstance(source, bytes) else Path(source).name


def decode_image(
    source: str | Path | bytes,
    min_size: tuple[int, int] | None = None,
    name: str = "",
    *,
    max_upload_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS,
) -> Decoded:
    """Decode an image file into float32 grey in [0, 1], with what its header says.

    JPEGs much larger than ``min_size`` (height, width) are decoded at a reduced scale (the
    JPEG decoder's DCT scaling: 1/2, 1/4 or 1/8), which is several times faster and never goes
    below ``min_size``. Other pictures (PNG, TIFF) at least twice ``min_size`` are decoded, then
    at once shrunk by a whole factor (the mean of each block) that keeps ``min_size``, so only the
    small copy is kept. The pixel count a header declares is checked before decoding: at most
    ``config.MAX_PIXELS`` for a file, and at most ``max_upload_pixels`` (a mammogram's size)
    for bytes, which are uploads (DICOM too; see
    :func:`bcp_core.imaging.limits.check_declared_pixels`). Orientation tags (EXIF) are applied;
    colour, CMYK, palette and alpha images become grey; 16-bit images are scaled by their bit
    depth (12-bit data, the usual mammography depth, by 4095).

    DICOM files (the "DICM" magic at offset 128, or a .dcm/.dicom suffix on the path or on
    ``name``) go to :func:`bcp_core.imaging.dicom.read_dicom_gray`: modality LUT, window / VOI
    LUT, MONOCHROME1 inverted, full bit depth; ``min_size`` does not apply to them.

    Args:
        source: a path or the file's bytes.
        min_size: the smallest (height, width) a JPEG may be decoded at; None: full size.
        name: the original file name of uploaded bytes (for messages and the DICOM suffix).
        max_upload_pixels: the most pixels uploaded bytes may declare (the dashboard passes the
            server's ``BCP_MAX_UPLOAD_PIXELS``); not used for a path.

    Raises:
        UserError: one sentence naming the file, for anything that is not a readable image.
    """
    if looks_like_dicom(source, name):
        gray, header = read_dicom_gray(source, max_upload_pixels=max_upload_pixels)
        colour = float(header.get("colour", 0.0))  # a colour DICOM (ultrasound, photo) is none
        return Decoded(gray, {key: header[key] for key in DICOM_FIELDS}, colour=colour)
    upload_limit = max_upload_pixels if isinstance(source, bytes) else None
    gray, colour = _read_picture(source, min_size, name or _describe(source), upload_limit)
    return Decoded(gray, colour=colour)


def read_gray(
    source: str | Path | bytes,
    min_size: tuple[int, int] | None = None,
    name: str = "",
    *,
    max_upload_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS,
) -> np.ndarray:
    """The pixels of :func:`decode_image`: float32 (h, w) grey in [0, 1].

    Raises:
        UserError: one sentence naming the file, for anything that is not a readable image.
    """
    return decode_image(source, min_size, name, max_upload_pixels=max_upload_pixels).gray


def _read_picture(
    source: str | Path | bytes,
    min_size: tuple[int, int] | None,
    name: str,
    upload_limit: int | None,
) -> tuple[np.ndarray, float]:
    """A JPG, PNG or TIFF (anything PIL reads) as grey, and its colour; see decode_image
    (``upload_limit``: the most pixels an upload may declare, None for a file)."""
    try:
        img = _open(source)
        check_declared_pixels(img.width, img.height, name, upload_limit=upload_limit)
        # A JPEG's colour is read from a separate 1/8-scale decode: its grey one has none left.
        colour = _colourfulness(_open(source)) if img.format == "JPEG" else None
        if min_size is not None and img.format == "JPEG":
            img.draft("L", (min_size[1], min_size[0]))
        elif min_size is not None:
            img = _shrunk(img, min_size)
        img = ImageOps.exif_transpose(img)
        return _to_gray_array(img), _colourfulness(img) if colour is None else colour
    except UserError:
        raise
    except Image.DecompressionBombError as exc:
        raise UserError(
            f"{name} declares more pixels than the limit of {config.MAX_PIXELS:,}; it is refused "
            "as a possible decompression bomb."
        ) from exc
    except FileNotFoundError as exc:
        raise UserError(f"Cannot read {name}: the file does not exist.") from exc
    except Image.UnidentifiedImageError as exc:
        raise UserError(f"Cannot read {name} as an image: {_what_is_it(source)}.") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"Cannot read {name} as an image ({_reason(exc)}).") from exc


def _shrunk(img: Image.Image, min_size: tuple[int, int]) -> Image.Image:
    """``img`` decoded and shrunk by the largest whole factor that keeps ``min_size`` (either
    way round, so that an EXIF rotation applied later cannot take it below); else ``img``."""
    low, high = sorted(min_size)
    factor = min(min(img.size) // max(low, 1), max(img.size) // max(high, 1))
    if factor < 2:
        return img
    if img.mode in ("I;16", "I;16B", "I;16L"):
        img = img.convert("I")  # 16-bit data cannot be reduced in place; "I" keeps the values
    elif img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode == "1":
        img = img.convert("L")
    exif = img.getexif()
    small = img.reduce(factor)
    if exif:
        small.info["exif"] = exif.tobytes()  # keep the orientation tag for exif_transpose
    return small


def _colourfulness(img: Image.Image) -> float:
    """Mean of (max - min) over R, G, B, in [0, 1], on at most about 256 x 256 pixels."""
    if img.mode in ("L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "1"):
        return 0.0
    if img.format == "JPEG":
        img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
    step = max(1, max(img.size) // 256)
    if step > 1:
        size = (max(1, img.width // step), max(1, img.height // step))
        img = img.resize(size, Image.Resampling.NEAREST)
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return float((rgb.max(axis=2) - rgb.min(axis=2)).mean()) / 255.0


#: First bytes of the picture formats a user may have, to tell a damaged file from a foreign one.
_MAGIC_NUMBERS = (
    (b"\x89PNG", "PNG"),
    (b"\xff\xd8\xff", "JPG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"GIF8", "GIF"),
)


def _what_is_it(source: str | Path | bytes) -> str:
    """Why a file is no image, in words: empty, text, or an unknown format."""
    try:
        head = source[:512] if isinstance(source, bytes) else Path(source).read_bytes()[:512]
    except OSError:
        return "it cannot be opened"
    if not head:
        return "the file is empty (0 bytes)"
    for magic, kind in _MAGIC_NUMBERS:
        if head.startswith(magic):
            return f"it starts like a {kind} file but is damaged or incomplete"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "it is a text file, not a picture"
    return "it is not a JPG, PNG, TIFF or DICOM file"


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[0].lower() + text[1:] if text else text


def _to_gray_array(img: Image.Image) -> np.ndarray:
    """Pixels of any PIL mode as float32 grey in [0, 1]."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        peak = float(arr.max()) if arr.size else 0.0
        bits = max(12, int(np.ceil(np.log2(peak + 1)))) if peak > 255 else 8
        return np.clip(arr / (2**bits - 1), 0.0, 1.0)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        span = float(arr.max() - arr.min()) or 1.0
        return (arr - arr.min()) / span
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels become black, the colour of a mammogram's background.
        img = img.convert("RGBA")
        black = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, img)
    if img.mode != "L":
        img = img.convert("RGB").convert("L")
    return np.asarray(img, dtype=np.float32) / 255.0
