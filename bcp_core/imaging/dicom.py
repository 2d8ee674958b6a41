"""Decode a DICOM mammogram into the grey [0, 1] array every other module works with.

The pixel pipeline follows the DICOM standard (PS3.4 N.2) and what users of mammography models
ask for: stored values -> modality LUT / rescale -> VOI LUT or window -> MONOCHROME1 inverted
-> scaled to [0, 1] by the output range. It stays in floating point from the 12/16-bit stored
values to the end (no 8-bit quantisation) and never equalises the histogram, so the network
sees the film as the reading radiologist's workstation shows it.

pydicom is imported inside the functions: it is only needed when a DICOM file turns up, and
``bcp_core.data.index`` asks :func:`looks_like_dicom` about every image it decodes.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from bcp_core.errors import UserError
from bcp_core.imaging.limits import DEFAULT_MAX_UPLOAD_PIXELS, check_declared_pixels, pixel_limit

#: File-name suffixes taken as DICOM even without the "DICM" magic (headerless exports).
DICOM_SUFFIXES = (".dcm", ".dicom")
#: A DICOM Part 10 file: a 128-byte preamble, then these four bytes.
_MAGIC = b"DICM"
_MAGIC_OFFSET = 128
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
#: ITU-R BT.601 luma weights, the ones PIL's convert("L") uses for JPEGs as well.
_LUMA = np.array([0.299, 0.587, 0.114])
_INSTALL_HINT = (
    "run `pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg`, "
    "or export the image uncompressed"
)

Source = str | Path | bytes

#: Deflated Explicit VR Little Endian: the whole dataset after the file meta is one zlib stream.
_DEFLATED = "1.2.840.10008.1.2.1.99"
#: Header bytes a deflated dataset may hold besides its pixels (tags, overlays, private data).
_HEADER_SLACK_BYTES = 16 * 2**20
_INFLATE_CHUNK = 2**20


def looks_like_dicom(source: Source, name: str = "") -> bool:
    """True for bytes or a file with the "DICM" magic at offset 128, or a .dcm/.dicom name.

    Args:
        source: a path or the file's bytes.
        name: the original file name of uploaded bytes (its suffix counts as for a path).

    Never raises: an unreadable path is "not DICOM", and its reader reports the problem.
    """
    names = [name] if name else []
    if not isinstance(source, bytes):
        names.append(str(source))
    if any(Path(n).suffix.lower() in DICOM_SUFFIXES for n in names):
        return True
    if isinstance(source, bytes):
        head = source[: _MAGIC_OFFSET + len(_MAGIC)]
    else:
        try:
            with open(source, "rb") as fh:
                head = fh.read(_MAGIC_OFFSET + len(_MAGIC))
        except OSError:
            return False
    return head[_MAGIC_OFFSET:] == _MAGIC


def read_dicom_gray(
    source: Source, *, max_upload_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS
) -> tuple[np.ndarray, dict]:
    """Decode a DICOM image into float32 grey in [0, 1] and its metadata.

    Args:
        source: a path or the file's bytes.
        max_upload_pixels: the most pixels bytes (an upload) may declare; not used for a path.

    Returns:
        ``(gray, meta)``: gray is float32 (rows, columns) in [0, 1], bright = dense tissue
        whatever the photometric interpretation. meta (see :func:`dicom_metadata`) also says
        ``frames`` (the first of several is used), ``converted_from_colour`` and, for a colour
        image, ``colour`` (how coloured it is, as :attr:`bcp_core.imaging.decode.Decoded.colour`).

    Raises:
        UserError: one sentence naming the file, for a file that is not DICOM, holds no image,
            is too large, or whose compressed pixel data cannot be decoded here.
    """

    name = "the uploaded DICOM file" if isinstance(source, bytes) else Path(source).name
    upload_limit = max_upload_pixels if isinstance(source, bytes) else None
    inflated = _check_deflated(source, name, upload_limit)
    ds = _read_dataset(source, name)
    rows, columns = _image_size(ds, name)
    check_declared_pixels(columns, rows, name, upload_limit=upload_limit)
    if inflated is not None:
        _check_inflated_fits(ds, inflated, name)
    meta = dicom_metadata(ds)
    arr = _decode_first_frame(ds, name)
    if meta["photometric"] in _MONOCHROME:
        gray = _monochrome_to_unit(arr, ds)
    else:
        gray, meta["colour"] = _colour_to_unit(arr, ds, meta["photometric"])
        meta["converted_from_colour"] = True
    return np.clip(np.nan_to_num(gray), 0.0, 1.0).astype(np.float32), meta


def dicom_metadata(ds) -> dict:
    """What the rest of the product may use from a DICOM header.

    Returns:
        dict with ``view`` (ViewPosition, e.g. "CC", "MLO"), ``laterality`` ("L"/"R" from
        ImageLaterality or Laterality), ``photometric``, ``bits_stored``, ``manufacturer``,
        ``frames``, ``converted_from_colour`` and ``patient_id``; unknown text values are "".
        The patient ID is for grouping a woman's views only: never log or print it.
    """
    laterality = _text(ds, "ImageLaterality") or _text(ds, "Laterality")
    frames = _int(ds, "NumberOfFrames", 1)
    return {
        "view": _text(ds, "ViewPosition"),
        "laterality": laterality if laterality in ("L", "R") else "",
        "photometric": _text(ds, "PhotometricInterpretation") or "MONOCHROME2",
        "bits_stored": _int(ds, "BitsStored", 0),
        "manufacturer": str(ds.get("Manufacturer", "") or "").strip(),
        "frames": frames,
        "converted_from_colour": False,
        "patient_id": str(ds.get("PatientID", "") or "").strip(),
    }


def _text(ds, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip().upper()


def _int(ds, keyword: str, default: int) -> int:
    try:
        return int(ds.get(keyword, default) or default)
    except (TypeError, ValueError):
        return default


# --- Reading and decoding -----------------------------------------------------------------


def _check_deflated(source: Source, name: str, upload_limit: int | None) -> int | None:
    """Inflate a deflated dataset once, bounded, before pydicom inflates it without a bound.

    A few MB of deflate can inflate a thousandfold; pydicom would hold all of it in memory. The
    stream may inflate to at most what the largest image allowed here needs (``upload_limit``
    pixels for an upload, None for a file; 2 bytes a pixel, plus header slack); past that the
    file is refused without inflating further.

    Returns:
        The inflated size, or None for a dataset that is not deflated.
    """
    import zlib

    from pydicom.filereader import read_preamble

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    stream = io.BytesIO(data)
    try:
        from pydicom.filereader import _read_file_meta_info

        read_preamble(stream, force=False)
        meta = _read_file_meta_info(stream)
        syntax = str(meta.get("TransferSyntaxUID", "") and meta.TransferSyntaxUID)
    except Exception:  # noqa: BLE001 - no readable file meta: not deflated as far as we know
        return None
    if syntax != _DEFLATED:
        return None
    limit = 2 * pixel_limit(upload_limit) + _HEADER_SLACK_BYTES
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, total = data[stream.tell() :], 0
    try:
        while pending and not inflater.eof:
            total += len(inflater.decompress(pending, _INFLATE_CHUNK))
            pending = inflater.unconsumed_tail
            if total > limit:
                raise UserError(
                    f"{name} is a deflated DICOM file that inflates to more than "
                    f"{limit / 1e6:,.0f} MB, more than any mammogram here; it is refused as a "
                    "possible decompression bomb."
                )
    except zlib.error as exc:
        raise UserError(f"{name} is a deflated DICOM file whose data is corrupt ({exc}).") from exc
    return total


def _check_inflated_fits(ds, inflated: int, name: str) -> None:
    """A deflated dataset holds no more than its declared frames need (plus header slack)."""
    frames = max(_int(ds, "NumberOfFrames", 1), 1)
    bits = max(_int(ds, "BitsAllocated", 16), 1)
    samples = max(_int(ds, "SamplesPerPixel", 1), 1)
    need = _int(ds, "Rows", 0) * _int(ds, "Columns", 0) * frames * samples * -(-bits // 8)
    if inflated > need + _HEADER_SLACK_BYTES:
        raise UserError(
            f"{name} inflates to {inflated / 1e6:,.0f} MB though its image needs "
            f"{need / 1e6:,.1f} MB; it is refused as a possible decompression bomb."
        )


def _read_dataset(source: Source, name: str):
    """Parse the file; headerless datasets (no preamble) are accepted when they hold an image."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    not_dicom = f"{name} is not a DICOM file (no readable DICOM header was found)."
    try:
        return _dcmread(pydicom, source, force=False)
    except InvalidDicomError:
        pass  # no "DICM" preamble: maybe a raw dataset, as some exporters write
    except Exception as exc:  # pydicom raises many types for corrupt headers
        raise UserError(not_dicom) from exc
    try:
        ds = _dcmread(pydicom, source, force=True)
    except Exception as exc:
        raise UserError(not_dicom) from exc
    if not any(k in ds for k in ("PixelData", "Rows", "SOPClassUID", "Modality")):
        raise UserError(not_dicom)
    _guess_transfer_syntax(ds)
    return ds


def _dcmread(pydicom, source: Source, *, force: bool):
    data = io.BytesIO(source) if isinstance(source, bytes) else source
    return pydicom.dcmread(data, force=force)


def _guess_transfer_syntax(ds) -> None:
    """A dataset without file meta still needs a transfer syntax for its pixel data."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if "TransferSyntaxUID" in getattr(ds, "file_meta", {}):
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit:
        uid = ImplicitVRLittleEndian
    else:
        uid = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid


def _image_size(ds, name: str) -> tuple[int, int]:
    """(Rows, Columns), checked before anything is decoded."""
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise UserError(f"{name} is a DICOM file without an image (it has no pixel data).")
    rows, columns = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    if rows < 1 or columns < 1:
        raise UserError(f"{name} has pixel data but no valid Rows and Columns in its header.")
    return rows, columns


def _decode_first_frame(ds, name: str) -> np.ndarray:
    """Stored values of the first frame only (a multi-frame file is never decoded whole)."""
    from pydicom.pixels import get_decoder, pixel_array

    syntax = ds.file_meta.TransferSyntaxUID
    try:
        return pixel_array(ds, index=0)
    except Exception as exc:  # decoders raise RuntimeError, ValueError, NotImplementedError...
        if not syntax.is_compressed:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"Cannot decode the pixel data of {name} ({reason}).") from exc
        try:
            missing = not get_decoder(syntax).is_available
        except NotImplementedError:  # a syntax pydicom has no decoder for at all
            missing = True
        why = "no decoder for it is installed" if missing else "the installed decoder failed"
        raise UserError(
            f"{name} is compressed with {syntax.name} ({syntax}), which cannot be decoded here "
            f"({why}): {_INSTALL_HINT}."
        ) from exc


# --- Grey levels ------------------------------------------------------------------------------


def _monochrome_to_unit(arr: np.ndarray, ds) -> np.ndarray:
    """Modality LUT, VOI LUT or window, scaled by the output range; MONOCHROME1 inverted."""
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_voi_lut

    values = apply_modality_lut(arr, ds)
    low, high = _modality_range(ds)
    if _has_voi_lut(ds):
        # A VOI LUT indexes by integer value; pydicom warns (rightly) about float input.
        values = np.rint(values).astype(np.int64)
        first = int(ds.VOILUTSequence[0].LUTDescriptor[1])
        entries = int(ds.VOILUTSequence[0].LUTDescriptor[0]) or 2**16
        table = apply_voi(np.arange(first, first + entries), ds)
        values = apply_voi(values, ds)
        low, high = float(table.min()), float(table.max())
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            # The window maps onto [low, high], the modality output range, as pydicom does.
            values = apply_voi_lut(values, ds)
        except ValueError:
            pass  # an unusable window (width < 1, unknown function): use the full range
    span = high - low
    gray = (np.asarray(values, dtype=np.float64) - low) / (span if span else 1.0)
    gray = np.clip(gray, 0.0, 1.0)
    inverted = _text(ds, "PhotometricInterpretation") == "MONOCHROME1"
    if _text(ds, "PresentationLUTShape") == "INVERSE":
        inverted = not inverted
    return 1.0 - gray if inverted else gray


def _has_voi_lut(ds) -> bool:
    seq = ds.get("VOILUTSequence")
    return bool(seq) and all(seq[0].get(k) is not None for k in ("LUTDescriptor", "LUTData"))


def _modality_range(ds) -> tuple[float, float]:
    """Output values of the stored range after the modality LUT / rescale (pydicom's rule).

    Not sorted: a negative rescale slope maps the lowest stored value to ``low``, so scaling
    by ``(x - low) / (high - low)`` keeps the order of the stored values.
    """
    bits = _int(ds, "BitsStored", 0) or _int(ds, "BitsAllocated", 16)
    if ds.get("ModalityLUTSequence"):
        low, high = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif _int(ds, "PixelRepresentation", 0) == 0:
        low, high = 0.0, float(2**bits - 1)
    else:
        low, high = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None and not ds.get("ModalityLUTSequence"):
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return low, high


def _colour_to_unit(arr: np.ndarray, ds, photometric: str) -> tuple[np.ndarray, float]:
    """Luma of a colour image (RGB, YBR converted by pydicom, or palette colour) in [0, 1], and
    how coloured it is: the mean of (max - min) over R, G, B in [0, 1], as for a picture file
    (:attr:`bcp_core.imaging.decode.Decoded.colour`; 0 for grey stored as colour)."""
    from pydicom.pixels import apply_color_lut

    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise UserError(
            f"Cannot read a {photometric} DICOM image of shape {arr.shape} as grey; export it "
            "as MONOCHROME2."
        )
    peak: float
    if np.issubdtype(arr.dtype, np.integer):
        peak = np.iinfo(arr.dtype).max
        if photometric != "PALETTE COLOR":
            peak = 2 ** (_int(ds, "BitsStored", 0) or arr.dtype.itemsize * 8) - 1
    else:
        peak = float(arr.max()) or 1.0
    values = arr.astype(np.float64)
    colour = float(np.mean(values.max(axis=-1) - values.min(axis=-1))) / peak
    return (values @ _LUMA) / peak, colour
