"""Find image files once, resolve the workbooks' paths against that index, decode one image.

The user's notebook searched the whole folder tree once per image (``os.walk`` inside the loop
over file names), which grows with images x files. Here each tree is walked once into a
dictionary from file stem to relative paths; every lookup after that is a dictionary access.
"""

from __future__ import annotations

import io
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps

from bcp_core import config
from bcp_core.dicom import looks_like_dicom, read_dicom_gray
from bcp_core.errors import UserError
from bcp_core.ingest import canonical_name


def stem_key(name: str) -> str:
    """The lookup key of a file name: its stem, NFC-normalised, upper case, no spaces around."""
    stem = name.strip()
    base, dot, ext = stem.rpartition(".")
    if dot and "." + ext.lower() in config.IMAGE_EXTENSIONS:
        stem = base
    return unicodedata.normalize("NFC", stem.strip()).upper()


def split_any_path(path: str) -> list[str]:
    """Split a Windows or POSIX path into parts: ``C:\\a\\b.jpg`` -> ``["C:", "a", "b.jpg"]``."""
    return [p for p in path.replace("\\", "/").split("/") if p]


@dataclass
class ImageIndex:
    """Every image file below one folder, keyed by :func:`stem_key` of its name.

    Attributes:
        root: the folder that was indexed (absolute).
        by_stem: stem key -> relative POSIX paths of the files with that stem.
        prefix: path of ``root`` relative to the data root, with a trailing slash, so that
            ``prefix + relpath`` names a file relative to the data root.
    """

    root: Path
    prefix: str = ""
    by_stem: dict[str, list[str]] = field(default_factory=dict)

    @property
    def n_files(self) -> int:
        return sum(len(v) for v in self.by_stem.values())

    def all_relpaths(self) -> set[str]:
        return {p for paths in self.by_stem.values() for p in paths}

    def resolve(self, name: str, hint: str = "") -> tuple[str | None, int]:
        """Find the file for ``name``, using the folders of ``hint`` to break ties.

        Args:
            name: a file name or stem (``FILE0004`` or ``FILE0004.jpg``).
            hint: a path from another machine (``C:\\Users\\...\\cancer\\sub\\FILE0004.jpg``)
                whose trailing folders say which of several same-named files is meant.

        Returns:
            ``(relpath, n_candidates)``: the relative path, or None when no file or more than one
            equally good file carries that name; ``n_candidates`` tells which of the two.
        """
        candidates = self.by_stem.get(stem_key(name), [])
        if len(candidates) <= 1:
            return (candidates[0] if candidates else None), len(candidates)
        hint_dirs = [canonical_name(p) for p in split_any_path(hint)[:-1]]
        scores = [_trailing_match(PurePosixPath(c).parts[:-1], hint_dirs) for c in candidates]
        best = max(scores)
        winners = [c for c, s in zip(candidates, scores) if s == best]
        if best > 0 and len(winners) == 1:
            return winners[0], len(candidates)
        return None, len(candidates)


def _trailing_match(folders: tuple[str, ...], hint_dirs: list[str]) -> int:
    """How many folders, counted from the file upward, agree between a candidate and a hint."""
    n = 0
    for mine, theirs in zip(reversed(folders), reversed(hint_dirs)):
        if canonical_name(mine) != theirs:
            break
        n += 1
    return n


def build_index(root: Path, data_root: Path | None = None) -> ImageIndex:
    """Walk ``root`` once and index every image file below it (hidden folders skipped).

    Args:
        root: the folder to index.
        data_root: the folder that relative paths in reports start from (default: ``root``).

    Raises:
        UserError: if ``root`` is not a readable folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"Image folder not found: {root}.")
    index = ImageIndex(root=root.resolve())
    if data_root is not None:
        rel = os.path.relpath(index.root, Path(data_root).resolve())
        index.prefix = "" if rel == "." else Path(rel).as_posix() + "/"
    # Plain strings rather than Path objects: at 20,000 files pathlib dominates the walk.
    stack = [("", str(index.root))]
    while stack:
        rel_folder, folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise UserError(f"Cannot read folder {folder}: {exc.strerror or exc}.") from exc
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append((rel_folder + entry.name + "/", entry.path))
            elif os.path.splitext(entry.name)[1].lower() in config.IMAGE_EXTENSIONS:
                rel = rel_folder + entry.name
                index.by_stem.setdefault(stem_key(entry.name), []).append(rel)
    for paths in index.by_stem.values():
        paths.sort()
    return index


def find_class_folders(root: Path) -> tuple[Path | None, Path | None]:
    """Find the cancer and non-cancer image folders directly below ``root`` (or one level down).

    Spellings vary ("Cancer", "cancer", "Non-Cancer", "non cancer"); names are compared after
    :func:`canonical_name`.
    """
    found: dict[str, Path] = {}
    for depth_dirs in (_subdirs(root), [d for s in _subdirs(root) for d in _subdirs(s)]):
        for d in depth_dirs:
            canon = canonical_name(d.name)
            if canon in config.CANCER_FOLDER_NAMES:
                found.setdefault("cancer", d)
            elif canon in config.NON_CANCER_FOLDER_NAMES:
                found.setdefault("non_cancer", d)
        if len(found) == 2:
            break
    return found.get("cancer"), found.get("non_cancer")


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


# --- Decoding one image -------------------------------------------------------------------

#: Largest image (in pixels) that is decoded: a guard against decompression bombs. Real
#: mammograms are at most about 4096 x 3328 = 13.6 Mpx.
MAX_PIXELS = 100_000_000


def _open(source: str | Path | bytes) -> Image.Image:
    """Open an image lazily (header only), as PIL does."""
    data = io.BytesIO(source) if isinstance(source, bytes) else source
    return Image.open(data)


def _describe(source: str | Path | bytes) -> str:
    return "the uploaded image" if isinstance(source, bytes) else Path(source).name


def read_gray(
    source: str | Path | bytes, min_size: tuple[int, int] | None = None, name: str = ""
) -> np.ndarray:
    """Decode an image file into a float32 grayscale array in [0, 1].

    JPEGs much larger than ``min_size`` (height, width) are decoded at a reduced scale (the
    JPEG decoder's DCT scaling: 1/2, 1/4 or 1/8), which is several times faster and never goes
    below ``min_size``. Orientation tags (EXIF) are applied; colour, CMYK, palette and alpha
    images become grey; 16-bit images are scaled by their bit depth (12-bit data, the usual
    mammography depth, by 4095).

    DICOM files (the "DICM" magic at offset 128, or a .dcm name) go to
    :func:`bcp_core.dicom.read_dicom_gray`: modality LUT, window / VOI LUT, MONOCHROME1
    inverted, full bit depth; ``min_size`` does not apply to them.

    Raises:
        UserError: one sentence naming the file, for anything that is not a readable image.
    """
    if looks_like_dicom(source):
        return read_dicom_gray(source)[0]
    name = name or _describe(source)
    try:
        img = _open(source)
        if img.width * img.height > MAX_PIXELS:
            raise UserError(
                f"{name} declares {img.width} x {img.height} pixels, more than the limit of "
                f"{MAX_PIXELS:,}; it is refused as a possible decompression bomb."
            )
        if min_size is not None and img.format == "JPEG":
            img.draft("L", (min_size[1], min_size[0]))
        img = ImageOps.exif_transpose(img)
        return _to_gray_array(img)
    except UserError:
        raise
    except Image.DecompressionBombError as exc:
        raise UserError(
            f"{name} declares more pixels than the limit of {MAX_PIXELS:,}; it is refused as a "
            "possible decompression bomb."
        ) from exc
    except FileNotFoundError as exc:
        raise UserError(f"Cannot read {name}: the file does not exist.") from exc
    except Image.UnidentifiedImageError as exc:
        raise UserError(f"Cannot read {name} as an image: {_what_is_it(source)}.") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"Cannot read {name} as an image ({_reason(exc)}).") from exc


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
