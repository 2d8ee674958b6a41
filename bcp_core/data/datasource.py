"""Read a data root (workbooks + image folders) into a :class:`~bcp_core.data.matching.MatchResult`.

This is the I/O edge of the matching step: it finds the files, reads them once, indexes each image
tree once, and hands everything to the pure functions of :mod:`bcp_core.data.matching`.
"""

from __future__ import annotations

import os
from pathlib import Path

from bcp_core import config
from bcp_core.data.index import build_index, find_class_folders
from bcp_core.data.matching import MatchResult, combine, match_cancer, match_non_cancer
from bcp_core.data.roots import refuse_nul
from bcp_core.data.workbooks import (
    canonical_name,
    find_entry,
    pick_sheet,
    read_excel_sheets,
    read_table,
)
from bcp_core.errors import UserError

_HINT = (
    "Choose the folder that holds datacombined.xlsx, data_validation_x.xlsx and the "
    "Cancer / Non-Cancer image folders."
)


def check_data_root(data_root: str | Path) -> Path:
    """Return ``data_root`` as a Path if it is an existing folder.

    Raises:
        UserError: if it is empty, holds a NUL character, is missing or a file.
    """
    if not str(data_root).strip():
        raise UserError(f"No data root given. {_HINT}")
    refuse_nul(str(data_root))
    root = Path(str(data_root).strip()).expanduser()
    if not root.exists():
        raise UserError(f"Data root not found: {root}. {_HINT}")
    if not root.is_dir():
        raise UserError(f"Data root is a file, not a folder: {root}. {_HINT}")
    return root


def _listing(root: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    return ", ".join(names[:15]) or "nothing"


def _locate_exports(root: Path) -> tuple[Path | None, Path | None]:
    cancer = find_entry(root, config.CANCER_EXPORT) or find_entry(root, "CANCER.xlsx")
    non_cancer = find_entry(root, config.NON_CANCER_EXPORT) or find_entry(root, "NON CANCER.xlsx")
    return cancer, non_cancer


def read_data_root(data_root: str | Path) -> MatchResult:
    """Match the workbooks (or the user's exports) of ``data_root`` to its image files.

    Args:
        data_root: folder with ``datacombined.xlsx``, ``data_validation_x.xlsx`` (or the exports
            ``CANCER.csv`` and ``NON CANCER.csv``) and the cancer / non-cancer image folders.

    Raises:
        UserError: with one sentence for a missing folder, workbook, sheet or key column.
    """
    root = check_data_root(data_root)
    combined = find_entry(root, config.COMBINED_WORKBOOK)
    validation = find_entry(root, config.VALIDATION_WORKBOOK)
    cancer_export, non_cancer_export = _locate_exports(root)
    if combined is not None and validation is None and cancer_export is None:
        raise UserError(
            f"{config.VALIDATION_WORKBOOK} is missing from {root}: the cancer rows cannot be "
            f"matched without it. Put it beside {combined.name}, or use the exports "
            f"{config.CANCER_EXPORT} and "
            f"{config.NON_CANCER_EXPORT} instead."
        )
    if not (combined and validation) and bool(cancer_export) != bool(non_cancer_export):
        found = next(p for p in (cancer_export, non_cancer_export) if p is not None).name
        missing = config.NON_CANCER_EXPORT if cancer_export else config.CANCER_EXPORT
        raise UserError(
            f"{root} has the export {found} but not {missing}; put {missing} beside it, or use "
            f"the workbooks {config.COMBINED_WORKBOOK} and {config.VALIDATION_WORKBOOK}."
        )
    if not (combined and validation) and not (cancer_export and non_cancer_export):
        raise UserError(
            f"{root} has neither {config.COMBINED_WORKBOOK} + {config.VALIDATION_WORKBOOK} nor "
            f"{config.CANCER_EXPORT} + {config.NON_CANCER_EXPORT}; it holds: {_listing(root)}. "
            f"{_HINT}"
        )
    cancer_dir, non_cancer_dir = find_class_folders(root)
    if cancer_dir is None or non_cancer_dir is None:
        missing = "cancer" if cancer_dir is None else "non-cancer"
        raise UserError(
            f"No {missing} image folder under {root} (looked for folders named like 'Cancer' and "
            f"'Non-Cancer'); it holds: {_listing(root)}."
        )
    cancer_index = build_index(cancer_dir, root)
    non_cancer_index = build_index(non_cancer_dir, root)

    notes: list[str] = []
    if combined and validation:
        wanted = {canonical_name(c) for c in config.MATCH_COLUMNS}
        sheets = read_excel_sheets(combined, wanted)
        cancer = pick_sheet(sheets, config.SHEET_CANCER, combined.name)
        non_cancer = pick_sheet(sheets, config.SHEET_NON_CANCER, combined.name)
        val = next(iter(read_excel_sheets(validation, wanted).values()))
        cancer_part = match_cancer(cancer, val, cancer_index)
        source = "workbooks"
    else:
        assert cancer_export is not None and non_cancer_export is not None  # checked above
        cancer = read_table(cancer_export)
        non_cancer = read_table(non_cancer_export)
        # The export holds rows matched earlier, with their AbsolutePath: no validation rows.
        source = "exports"
        cancer_part = match_cancer(cancer, None, cancer_index, cancer_table=cancer_export.name)
        notes.append(
            f"Read the exports {cancer_export.name} and {non_cancer_export.name}: their cancer "
            "rows were matched before, so no validation workbook was joined."
        )
    non_cancer_part = match_non_cancer(non_cancer, non_cancer_index)
    on_disk = {cancer_index.prefix + p for p in cancer_index.all_relpaths()}
    on_disk |= {non_cancer_index.prefix + p for p in non_cancer_index.all_relpaths()}
    return combine([cancer_part, non_cancer_part], source, notes, on_disk)


def data_root_signature(data_root: str | Path) -> tuple:
    """A cheap fingerprint of a data root (names, sizes and times of its top entries).

    Used as a cache key so that the dashboard re-reads the data after the user changes a file.
    """
    root = Path(str(data_root).strip()).expanduser()
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
        return tuple((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries)
    except (OSError, ValueError):  # ValueError: a NUL character in the name
        return ()
