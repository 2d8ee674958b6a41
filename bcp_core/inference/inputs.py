"""What batch prediction is given: files and folders, a list of files, and workbook values.

:func:`expand_inputs` walks folders for their image files, :func:`read_file_list` reads a text
file of paths, :func:`read_metadata_csv` the workbook values of a model that takes them beside
the image (``predict --metadata``, and the prediction page's CSV upload).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from bcp_core.config import IMAGE_EXTENSIONS
from bcp_core.errors import UserError

#: A file to predict: a path, or (name, bytes) for an upload.
Source = str | os.PathLike | tuple[str, bytes]


def expand_inputs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders replaced by their image files (recursively, sorted).

    Hidden files and folders are skipped; only suffixes of ``config.IMAGE_EXTENSIONS`` are
    taken from folders. A missing path, or a folder without images, stays in the list as it is,
    so that :func:`bcp_core.inference.predict.predict_files` reports it as an error entry
    instead of the run failing.
    """
    out: list[Path] = []
    for given in paths:
        path = Path(given)
        found = _image_files(path) if path.is_dir() else []
        out.extend(found or [path])
    return out


def read_file_list(path: str | os.PathLike) -> list[str]:
    """The paths of a text file, one a line (blank lines and lines starting with # skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UserError(f"File list not found: {path}.") from exc
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _image_files(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(root) / name)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def read_metadata_csv(path) -> dict[str, dict[str, object]]:
    """Workbook values for batch prediction from a CSV (a path or a file object): a ``file``
    column (a path or a file name) and one column per workbook column the model takes; empty
    cells count as missing.

    Raises:
        UserError: for a file that cannot be read or has no ``file`` column.
    """
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"Cannot read the metadata CSV: {exc}.") from exc
    if "file" not in table.columns:
        raise UserError("The metadata CSV needs a 'file' column naming each image.")
    rows = table.to_dict("records")
    return {str(r.pop("file")): {k: (v if v != "" else None) for k, v in r.items()} for r in rows}
