"""The files of a model bundle, and the check that a folder is one: no TensorFlow, no pandas.

The CLI asks this before it imports anything heavy, so a mistyped bundle path is answered at
once; :mod:`bcp_core.model.bundle` asks the same when it reads a bundle.
"""

from __future__ import annotations

from pathlib import Path

from bcp_core.errors import UserError

META_FILE = "bundle.json"
MODEL_FILE = "model.keras"
HISTORY_FILE = "history.csv"
#: The attribution of the pretrained weights a model started from (bundle and export).
NOTICE_FILE = "NOTICE"


def check_bundle_folder(path: str | Path) -> Path:
    """Return ``path`` as a Path, or raise when it is not a bundle folder.

    Raises:
        UserError: a missing folder, or one without ``bundle.json`` and ``model.keras``.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"Bundle not found: {folder} is not a folder.")
    if not (folder / META_FILE).is_file() or not (folder / MODEL_FILE).is_file():
        raise UserError(
            f"{folder} is not a model bundle: it needs {META_FILE} and {MODEL_FILE} "
            "(train a model, or pick the folder a training run wrote)."
        )
    return folder
