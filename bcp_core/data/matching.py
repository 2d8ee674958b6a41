"""The UniqueKey join of the Cancer sheet to the validation workbook, and its statistics.

Pure functions over DataFrames and an in-memory :class:`~bcp_core.data.index.ImageIndex`: no file is
read here. ``UniqueKey = InputFileName-StudyDate-StudyTime-PatientID.x`` (DATA_LAYOUT.md). Every
row that does not end up as a usable image is reported with its sheet, Excel row and reason.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from bcp_core import config
from bcp_core.data.index import ImageIndex
from bcp_core.data.workbooks import key_parts_df, text_column

_LATERALITY = {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R"}


@dataclass
class MatchResult:
    """Everything the data-matching step found.

    Attributes:
        manifest: one row per usable image (columns ``config.MANIFEST_COLUMNS``).
        unmatched: one row per unusable sheet row (columns ``config.UNMATCHED_COLUMNS``).
        stats: counts; the keys of the ``match --json`` contract and a few more.
        fixes: normalisations the key columns needed
            (columns ``table``, ``column``, ``fix``, ``rows``).
        source: "workbooks" or "exports" (the user's CANCER.csv / NON CANCER.csv).
        notes: sentences about anything else worth knowing.
    """

    manifest: pd.DataFrame
    unmatched: pd.DataFrame
    stats: dict[str, int]
    fixes: pd.DataFrame
    source: str = "workbooks"
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """The ``match --json`` object of the CLI contract."""
        out: dict = dict(self.stats)
        out["source"] = self.source
        out["unmatched"] = self.unmatched.to_dict(orient="records")
        out["fixes"] = self.fixes.to_dict(orient="records")
        out["notes"] = list(self.notes)
        return out


def excel_row(index: pd.Index) -> list[int]:
    """Excel row numbers of DataFrame rows read with a header (the header is row 1)."""
    return [int(i) + 2 for i in index]


def _reason_rows(
    table: str, rows: pd.DataFrame, keys: pd.Series, reasons: pd.Series
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sheet": table,
            "row": excel_row(rows.index),
            "key": keys.tolist(),
            "reason": reasons.tolist(),
        },
        columns=list(config.UNMATCHED_COLUMNS),
    )


def flag_key_problems(parts: pd.DataFrame, table: str) -> pd.Series:
    """Reason text for rows whose key is unusable (empty part, or a repeat), else "".

    The first row with a key wins; later rows with the same key are reported as duplicates of it.
    """
    reasons = pd.Series("", index=parts.index, dtype=object)
    empty = parts["empty"] != ""
    reasons[empty] = config.REASON_EMPTY_PART + ": " + parts.loc[empty, "empty"]
    first_row: dict[str, int] = {}
    for idx, key in parts.loc[~empty, "key"].items():
        if key in first_row:
            reasons[idx] = f"{config.REASON_DUPLICATE}: same as {table} row {first_row[key]}"
        else:
            first_row[key] = int(idx) + 2
    return reasons


def count_fixes(parts: pd.DataFrame, table: str) -> pd.DataFrame:
    """How many rows of ``table`` needed each (column, fix) normalisation."""
    counts = Counter(f for fixes in parts["fixes"] for f in fixes)
    rows = [
        {"table": table, "column": c, "fix": f, "rows": n} for (c, f), n in sorted(counts.items())
    ]
    return pd.DataFrame(rows, columns=["table", "column", "fix", "rows"])


def _manifest_rows(
    sheet_df: pd.DataFrame,
    parts: pd.DataFrame,
    label: int,
    sheet: str,
    relpaths: pd.Series,
    index: ImageIndex,
    keys: pd.Series,
) -> pd.DataFrame:
    """Manifest rows for the located images of one sheet."""
    lat = text_column(sheet_df, config.COL_LATERALITY).map(lambda v: _LATERALITY.get(v, v))
    view = text_column(sheet_df, config.COL_VIEW)
    rows = relpaths.index
    root = str(index.root)
    return pd.DataFrame(
        {
            "path": [os.path.join(root, r) for r in relpaths],
            "relpath": [index.prefix + r for r in relpaths],
            "label": label,
            "patient_id": parts.loc[rows, "patient"].tolist(),
            "view": view.loc[rows].tolist(),
            "laterality": lat.loc[rows].tolist(),
            "key": keys.loc[rows].tolist(),
            "sheet": sheet,
            "row": excel_row(rows),
        },
        columns=list(config.MANIFEST_COLUMNS),
    )


def locate(
    names: pd.Series, hints: pd.Series, index: ImageIndex | None
) -> tuple[pd.Series, pd.Series]:
    """Resolve file names (with path hints) in ``index``.

    Returns:
        ``(relpaths, reasons)``: for each row the relative path or None, and "" or the reason.
    """
    relpaths, reasons = [], []
    for name, hint in zip(names.tolist(), hints.tolist()):
        shown = name or "(no name)"
        if index is None:
            rel, n = None, 0
        else:
            rel, n = index.resolve(name, hint)
        relpaths.append(rel)
        if rel is not None:
            reasons.append("")
        elif n > 1:
            reasons.append(f"{config.REASON_AMBIGUOUS}: {n} files named {shown}")
        else:
            reasons.append(f"{config.REASON_NOT_ON_DISK}: {shown}")
    return pd.Series(relpaths, index=names.index, dtype=object), pd.Series(
        reasons, index=names.index
    )


def _path_name(path: object) -> str:
    text = "" if path is None or (isinstance(path, float) and pd.isna(path)) else str(path).strip()
    return text.replace("\\", "/").rsplit("/", 1)[-1]


def match_cancer(
    cancer: pd.DataFrame,
    validation: pd.DataFrame,
    index: ImageIndex | None,
    cancer_table: str = config.SHEET_CANCER,
) -> tuple[pd.DataFrame, pd.DataFrame, dict, pd.DataFrame]:
    """Join the Cancer sheet to the validation rows on the UniqueKey and locate the images.

    Returns:
        ``(manifest, unmatched, stats, fixes)`` for the cancer class.
    """
    cparts = key_parts_df(cancer, f"Sheet {cancer_table!r}")
    vparts = key_parts_df(validation, config.VALIDATION_WORKBOOK)
    creason = flag_key_problems(cparts, cancer_table)
    vreason = flag_key_problems(vparts, config.SHEET_VALIDATION)

    vkeys = dict(zip(vparts.loc[vreason == "", "key"], vparts.index[vreason == ""]))
    ok = creason == ""
    in_val = cparts["key"].map(lambda k: k in vkeys)
    creason[ok & ~in_val] = config.REASON_NO_VALIDATION
    key_matched = creason == ""
    used = set(cparts.loc[key_matched, "key"])
    vreason[(vreason == "") & ~vparts["key"].isin(used)] = config.REASON_NO_CANCER_ROW

    raw_val = set(vparts["raw_key"])
    raw_matched = int(cparts.loc[key_matched, "raw_key"].isin(raw_val).sum())

    # Locate each matched row's image from its validation row's AbsolutePath.
    vrow = cparts.loc[key_matched, "key"].map(vkeys)
    abs_col = validation.get(config.COL_ABSPATH)
    hints = vrow.map(lambda i: "" if abs_col is None else _path_name_full(abs_col.loc[i]))
    names = hints.map(_path_name)
    no_path = names == ""
    names[no_path] = cparts.loc[no_path[no_path].index, "file"]
    relpaths, loc_reason = locate(names, hints, index)
    creason.loc[loc_reason.index] = loc_reason
    found = relpaths.dropna()

    manifest = (
        _manifest_rows(
            cancer, cparts, config.LABEL_CANCER, cancer_table, found, index, cparts["key"]
        )
        if index is not None
        else _empty_manifest()
    )
    unmatched = pd.concat(
        [
            _reason_rows(
                cancer_table,
                cparts[creason != ""],
                cparts.loc[creason != "", "key"],
                creason[creason != ""],
            ),
            _reason_rows(
                config.SHEET_VALIDATION,
                vparts[vreason != ""],
                vparts.loc[vreason != "", "key"],
                vreason[vreason != ""],
            ),
        ],
        ignore_index=True,
    )
    stats = {
        "cancer_rows": len(cancer),
        "cancer_key_matched": int(key_matched.sum()),
        "cancer_key_matched_raw": raw_matched,
        "cancer_images_found": len(found),
        "cancer_rows_without_path": int(no_path.sum()),
        "validation_rows": len(validation),
        "validation_matched": len(used),
    }
    fixes = pd.concat(
        [count_fixes(cparts, cancer_table), count_fixes(vparts, config.SHEET_VALIDATION)],
        ignore_index=True,
    )
    return manifest, unmatched, stats, fixes


def _path_name_full(value: object) -> str:
    return (
        "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value).strip()
    )


def match_non_cancer(
    non_cancer: pd.DataFrame, index: ImageIndex | None, table: str = config.SHEET_NON_CANCER
) -> tuple[pd.DataFrame, pd.DataFrame, dict, pd.DataFrame]:
    """Locate each Non-Cancer row's image by its InputFileName (unique for this sheet).

    Returns:
        ``(manifest, unmatched, stats, fixes)`` for the non-cancer class.
    """
    parts = key_parts_df_lenient(non_cancer, table)
    reason = pd.Series("", index=parts.index, dtype=object)
    empty = parts["file"] == ""
    reason[empty] = config.REASON_EMPTY_PART + ": " + config.COL_FILE
    dup = parts["file"].duplicated() & ~empty
    first = {}
    for idx, name in parts.loc[~empty, "file"].items():
        first.setdefault(name, int(idx) + 2)
    reason[dup] = parts.loc[dup, "file"].map(
        lambda n: f"{config.REASON_DUPLICATE}: same as {table} row {first[n]}"
    )
    todo = reason == ""
    hints = pd.Series("", index=parts.index[todo], dtype=object)
    relpaths, loc_reason = locate(parts.loc[todo, "file"], hints, index)
    reason.loc[loc_reason.index] = loc_reason
    found = relpaths.dropna()
    manifest = (
        _manifest_rows(
            non_cancer, parts, config.LABEL_NON_CANCER, table, found, index, parts["file"]
        )
        if index is not None
        else _empty_manifest()
    )
    unmatched = _reason_rows(
        table, parts[reason != ""], parts.loc[reason != "", "file"], reason[reason != ""]
    )
    stats = {
        "non_cancer_rows": len(non_cancer),
        "non_cancer_names_usable": int(todo.sum()),
        "non_cancer_images_found": len(found),
    }
    return manifest, unmatched, stats, count_fixes(parts, table)


def key_parts_df_lenient(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """Key parts for a sheet where only InputFileName is required (Non-Cancer rows).

    The other key columns are optional there; when absent they are treated as empty, and the
    patient ID falls back to "" (the split then groups such images one per pseudo-patient).
    """
    present = [c for c in (config.COL_DATE, config.COL_TIME) if c in df.columns]
    has_patient = any(c in df.columns for c in config.PATIENT_COLUMNS)
    if len(present) == 2 and has_patient:
        return key_parts_df(df, table)
    filled = df.copy()
    for col in (config.COL_DATE, config.COL_TIME):
        if col not in filled.columns:
            filled[col] = ""
    if not has_patient:
        filled[config.COL_PATIENT] = ""
    return key_parts_df(filled, table)


def _empty_manifest() -> pd.DataFrame:
    return pd.DataFrame(columns=list(config.MANIFEST_COLUMNS))


def combine(
    parts: list[tuple[pd.DataFrame, pd.DataFrame, dict, pd.DataFrame]],
    source: str,
    notes: list[str],
) -> MatchResult:
    """Put the per-class results together into one :class:`MatchResult`.

    The counts of image files on disk are added by the caller, which walked the folders.
    """
    manifest = pd.concat([p[0] for p in parts], ignore_index=True)
    manifest["label"] = manifest["label"].astype(int)
    manifest["row"] = manifest["row"].astype(int)
    unmatched = pd.concat([p[1] for p in parts], ignore_index=True)
    unmatched["row"] = unmatched["row"].astype(int)
    stats: dict[str, int] = {}
    for p in parts:
        stats.update(p[2])
    stats["images_in_manifest"] = len(manifest)
    stats["patients"] = int(manifest["patient_id"].nunique())
    fixes = pd.concat([p[3] for p in parts], ignore_index=True)
    return MatchResult(
        manifest=manifest, unmatched=unmatched, stats=stats, fixes=fixes, source=source, notes=notes
    )


def reason_counts_df(unmatched: pd.DataFrame) -> pd.DataFrame:
    """Unmatched rows counted per sheet and reason (the text before any ':' detail).

    Returns:
        DataFrame with columns ``sheet``, ``reason``, ``rows``, largest first.
    """
    reason = unmatched["reason"].str.split(":").str[0]
    out = unmatched.assign(reason=reason).groupby(["sheet", "reason"]).size().rename("rows")
    return out.reset_index().sort_values("rows", ascending=False, ignore_index=True)
