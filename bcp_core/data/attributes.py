"""Any workbook column of the images the manifest holds (age, density, device model ...).

The join reads only the ~10 key columns of the workbooks (:mod:`bcp_core.data.datasource`);
this module reads one more column on demand, for the rows the join matched, without touching
the join. A manifest row names its image's table by its label (cancer rows come from the Cancer
sheet or the cancer export, non-cancer rows from the Non-Cancer sheet or export) and its Excel
row (:func:`bcp_core.data.workbooks.excel_row`); the column is read with the same reader as the
join, so the row numbers agree, and each row's key is recomputed and compared with the
manifest's, so a row that changed since the match is never used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from bcp_core import config
from bcp_core.data.datasource import check_data_root
from bcp_core.data.keys import key_parts_df
from bcp_core.data.matching import MatchResult, key_parts_df_lenient
from bcp_core.data.workbooks import (
    canonical_name,
    excel_row,
    find_entry,
    pick_sheet,
    read_excel_headers,
    read_excel_sheets,
    read_table,
)
from bcp_core.errors import UserError
from bcp_core.values import is_blank

#: Columns of :func:`image_values`' result.
VALUE_COLUMNS = ("file", "found", "value")
#: Canonical names never offered for grouping: the join keys and the path columns.
_EXCLUDED = {
    canonical_name(c) for c in (*config.KEY_COLUMNS, *config.PATIENT_COLUMNS, config.COL_UNIQUE_KEY)
}


def pickable_columns(cancer_columns: Iterable[str], non_cancer_columns: Iterable[str]) -> list[str]:
    """Workbook columns a subgroup can be formed on: those of both class tables (compared by
    :func:`~bcp_core.data.workbooks.canonical_name`), in the cancer table's order, without the
    join keys (file name, study date and time, patient IDs, UniqueKey), path columns (any name
    holding "path") and unnamed columns. A name repeated in a table is offered once.
    """
    other = {canonical_name(str(c)) for c in non_cancer_columns}
    out: list[str] = []
    seen: set[str] = set()
    for name in map(str, cancer_columns):
        canon = canonical_name(name)
        if not canon or canon in seen or canon not in other:
            continue
        seen.add(canon)
        if canon in _EXCLUDED or "path" in canon or canon.startswith("unnamed"):
            continue
        out.append(name.strip())
    return out


def _class_sources(root: Path, source: str) -> tuple[Path, Path | None]:
    """The files the match read: (datacombined.xlsx, None) or (cancer export, non-cancer export)."""
    if source == "workbooks":
        combined = find_entry(root, config.COMBINED_WORKBOOK)
        if combined is None:
            raise UserError(
                f"{config.COMBINED_WORKBOOK} is gone from the data root; reload the data."
            )
        return combined, None
    cancer = find_entry(root, config.CANCER_EXPORT) or find_entry(root, "CANCER.xlsx")
    non_cancer = find_entry(root, config.NON_CANCER_EXPORT) or find_entry(root, "NON CANCER.xlsx")
    if cancer is None or non_cancer is None:
        raise UserError("The exports are gone from the data root; reload the data.")
    return cancer, non_cancer


def _class_tables(root: Path, source: str, columns: set[str] | None) -> dict[int, pd.DataFrame]:
    """The cancer and non-cancer tables by label, read as the match read them."""
    first, second = _class_sources(root, source)
    if second is None:
        sheets = read_excel_sheets(first, columns)
        return {
            config.LABEL_CANCER: pick_sheet(sheets, config.SHEET_CANCER, first.name),
            config.LABEL_NON_CANCER: pick_sheet(sheets, config.SHEET_NON_CANCER, first.name),
        }
    return {config.LABEL_CANCER: read_table(first), config.LABEL_NON_CANCER: read_table(second)}


def workbook_columns(data_root: str | Path, source: str = "workbooks") -> list[str]:
    """The columns of ``data_root`` a subgroup can be formed on (:func:`pickable_columns`).

    Args:
        data_root: the data root the match read.
        source: the match's :attr:`~bcp_core.data.matching.MatchResult.source`.
    """
    root = check_data_root(data_root)
    first, second = _class_sources(root, source)
    if second is None:  # the header rows only: no cell below them is read
        heads = read_excel_headers(first)
        sheets = {name: pd.DataFrame(columns=cols) for name, cols in heads.items()}
        cancer = pick_sheet(sheets, config.SHEET_CANCER, first.name).columns
        non_cancer = pick_sheet(sheets, config.SHEET_NON_CANCER, first.name).columns
    else:
        cancer, non_cancer = read_table(first).columns, read_table(second).columns
    return pickable_columns(cancer, non_cancer)


def _column(df: pd.DataFrame, column: str, table: str) -> str:
    """The column of ``df`` called ``column`` (exactly, else by canonical name)."""
    if column in df.columns:
        return column
    for name in map(str, df.columns):
        if canonical_name(name) == canonical_name(column):
            return name
    raise UserError(f"The {table} has no column {column!r}; choose another column.")


def _row_keys(df: pd.DataFrame, label: int, table: str) -> pd.Series:
    """The manifest's ``key`` of each row of a class table (as :mod:`matching` builds it)."""
    if label == config.LABEL_CANCER:
        return key_parts_df(df, table)["key"]
    return key_parts_df_lenient(df, table)["file"]


def manifest_rows(files: Sequence[str], manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest row of each file: by its ``path``, else by its path relative to the data
    root (a bundle trained where the data root lay elsewhere).

    Returns:
        One row per file, in order, with ``file`` and the manifest's ``label``, ``row`` and
        ``key``; ``label`` is -1 where the file is not in the manifest.
    """
    by_path = {str(p): i for i, p in enumerate(manifest["path"])}
    by_rel = {str(r): i for i, r in enumerate(manifest["relpath"])}
    picked: list[int] = []
    for file in map(str, files):
        i = by_path.get(file)
        if i is None:
            parts = file.replace(os.sep, "/").replace("\\", "/").split("/")
            i = next(
                (by_rel[r] for n in range(len(parts)) if (r := "/".join(parts[n:])) in by_rel),
                None,
            )
        picked.append(-1 if i is None else i)
    out = pd.DataFrame({"file": list(map(str, files))})
    taken = manifest.reset_index(drop=True)
    for column, missing in (("label", -1), ("row", -1), ("key", "")):
        values = [taken[column].iat[i] if i >= 0 else missing for i in picked]
        out[column] = pd.Series(values, dtype=object if column == "key" else int)
    return out


def known_views(files: Sequence[tuple[str, bytes]], manifest: pd.DataFrame) -> list[dict]:
    """The workbook's ``view`` and ``laterality`` of uploaded files that are files of the data
    root: one with the same name *and* the same bytes (a name alone is not enough: two films
    of a hospital export can share one). ``{}`` for an upload that is no such file.
    """
    by_name: dict[str, list[int]] = {}
    for i, path in enumerate(manifest["path"]):
        by_name.setdefault(Path(str(path)).name, []).append(i)
    found: list[dict] = []
    for name, data in files:
        known: dict = {}
        for i in by_name.get(Path(name).name, []):
            path = Path(str(manifest["path"].iat[i]))
            try:
                same = path.stat().st_size == len(data) and path.read_bytes() == data
            except OSError:
                continue
            if same:
                cells = (manifest[k].iat[i] for k in ("view", "laterality"))
                known = dict(
                    zip(("view", "laterality"), (c if isinstance(c, str) else "" for c in cells))
                )
                break
        found.append(known)
    return found


def image_values(
    data_root: str | Path, match: MatchResult, files: Sequence[str], column: str
) -> pd.DataFrame:
    """The workbook cell of ``column`` for each image file (e.g. a bundle's validation images).

    Only the key columns and ``column`` are read; each file's row is found through the
    manifest (:func:`manifest_rows`) and used only when its key still equals the manifest's.

    Args:
        data_root: the data root ``match`` was read from.
        match: its match result (the manifest and which files it read).
        files: image paths, as the bundle's ``val_predictions.csv`` holds them.
        column: a column of both class tables (one of :func:`workbook_columns`).

    Returns:
        One row per file, in order: ``file``, ``found`` (whether its workbook row was found) and
        ``value`` (the cell as the reader gives it; None where empty or not found).

    Raises:
        UserError: if a class table has no such column, or the files it was read from are gone.
    """
    root = check_data_root(data_root)
    wanted = {canonical_name(c) for c in config.MATCH_COLUMNS} | {canonical_name(column)}
    tables = _class_tables(root, match.source, wanted)
    rows = manifest_rows(files, match.manifest)
    values: list[object] = [None] * len(rows)
    found = [False] * len(rows)
    for label, df in tables.items():
        table = config.CLASS_NAMES[label] + " table"
        actual = _column(df, column, table)
        keys = _row_keys(df, label, table)
        position = {excel_row(ix): k for k, ix in enumerate(df.index)}
        for i, (lab, row, key) in enumerate(zip(rows["label"], rows["row"], rows["key"])):
            index = position.get(row, -1) if lab == label else -1
            if index < 0 or keys.iat[index] != key:  # another table, or the row changed
                continue
            found[i] = True
            cell = df[actual].iat[index]
            values[i] = None if is_blank(cell) else cell
    out = rows[["file"]].copy()
    out["found"] = found
    out["value"] = pd.Series(values, dtype=object)
    return out


def metadata_frame(
    data_root: str | Path, match: MatchResult, files: Sequence[str], columns: Sequence[str]
) -> pd.DataFrame:
    """The cells of ``columns`` for each image file: the inputs of a model on image plus
    workbook columns (:mod:`bcp_core.model.columns`).

    Returns:
        One row per file, in order, one column per requested column (None where empty or not
        found).

    Raises:
        UserError: for a column that is not on both class tables ("only on one sheet": a model
            given it would learn which sheet, i.e. the label, an image came from) or not at all.
    """
    offered = {canonical_name(c) for c in workbook_columns(data_root, match.source)}
    out = pd.DataFrame(index=range(len(files)))
    for column in columns:
        if canonical_name(column) not in offered:
            raise UserError(
                f"Column {column!r} is refused: it is not on both the cancer and the non-cancer "
                "table (a column of one sheet only tells the model which sheet an image came "
                "from, that is its label), or it is a join key or a path."
            )
        out[column] = image_values(data_root, match, files, column)["value"].to_numpy()
    return out
