"""The UniqueKey join of the Cancer sheet to the validation workbook, and its statistics.

Pure functions over DataFrames and an in-memory :class:`~bcp_core.data.index.ImageIndex`: no file is
read here. A cancer row and a validation row belong together when their
``UniqueKey = InputFileName-StudyDate-StudyTime-PatientID.x`` agree after normalising each part.
Every row that does not end up as a usable image is reported with its sheet, Excel row and reason.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import pandas as pd

from bcp_core import config
from bcp_core.data.index import ImageIndex
from bcp_core.data.keys import key_parts_df, text_column
from bcp_core.data.workbooks import excel_row

_LATERALITY = {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R"}
#: Columns of :attr:`MatchResult.fixes`: which table and key column needed a fix, in how many rows.
FIXES_COLUMNS = ("table", "column", "fix", "rows")


@dataclass(frozen=True)
class MatchStats:
    """The counts of the data-matching step (the numbers of the ``match --json`` object).

    Attributes:
        cancer_rows: rows of the Cancer sheet (or of the cancer export).
        cancer_key_matched: cancer rows whose normalised UniqueKey has a validation row.
        cancer_key_matched_raw: of those, rows whose key as written (not normalised) matches a
            validation row's key as written: what a join without the fixes would have found.
        cancer_images_found: key-matched cancer rows whose image file was found.
        cancer_rows_without_path: key-matched cancer rows whose validation row has no
            AbsolutePath, looked up by their InputFileName instead.
        validation_rows: rows of the validation workbook (0 when the exports were read).
        validation_matched: validation rows that a cancer row matched (0 for the exports).
        non_cancer_rows: rows of the Non-Cancer sheet (or export).
        non_cancer_names_usable: Non-Cancer rows whose file name is neither empty nor a repeat.
        non_cancer_images_found: Non-Cancer rows whose image file was found.
        images_in_manifest: usable images (rows of the manifest).
        patients: distinct patient IDs among the usable images.
        image_files_on_disk: image files in the cancer and non-cancer folders.
        unreferenced_image_files: image files on disk that no usable row refers to.
    """

    cancer_rows: int
    cancer_key_matched: int
    cancer_key_matched_raw: int
    cancer_images_found: int
    cancer_rows_without_path: int
    validation_rows: int
    validation_matched: int
    non_cancer_rows: int
    non_cancer_names_usable: int
    non_cancer_images_found: int
    images_in_manifest: int
    patients: int
    image_files_on_disk: int
    unreferenced_image_files: int

    def to_json(self) -> dict[str, int]:
        """The counts under their ``match --json`` keys (the attribute names), in this order."""
        return asdict(self)


class ClassMatch(NamedTuple):
    """What matching one class (cancer or non-cancer) found; :func:`combine` joins two of them.

    Attributes:
        manifest: its usable images (columns ``config.MANIFEST_COLUMNS``).
        unmatched: its unusable rows (columns ``config.UNMATCHED_COLUMNS``).
        counts: its share of the :class:`MatchStats` counts, under their attribute names.
        fixes: the normalisations its key columns needed (columns :data:`FIXES_COLUMNS`).
    """

    manifest: pd.DataFrame
    unmatched: pd.DataFrame
    counts: dict[str, int]
    fixes: pd.DataFrame


@dataclass
class MatchResult:
    """Everything the data-matching step found.

    Attributes:
        manifest: one row per usable image (columns ``config.MANIFEST_COLUMNS``).
        unmatched: one row per unusable sheet row (columns ``config.UNMATCHED_COLUMNS``).
        stats: the counts.
        fixes: normalisations the key columns needed (columns :data:`FIXES_COLUMNS`).
        source: "workbooks" or "exports" (the user's CANCER.csv / NON CANCER.csv).
        notes: sentences about anything else worth knowing.
    """

    manifest: pd.DataFrame
    unmatched: pd.DataFrame
    stats: MatchStats
    fixes: pd.DataFrame
    source: str = "workbooks"
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """The ``match --json`` object of the CLI contract."""
        out: dict = self.stats.to_json()
        out["source"] = self.source
        out["unmatched"] = self.unmatched.to_dict(orient="records")
        out["fixes"] = self.fixes.to_dict(orient="records")
        out["notes"] = list(self.notes)
        return out


def _reason_rows(
    table: str, rows: pd.DataFrame, keys: pd.Series, reasons: pd.Series
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sheet": table,
            "row": [excel_row(i) for i in rows.index],
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
            first_row[key] = excel_row(idx)
    return reasons


def count_fixes(parts: pd.DataFrame, table: str) -> pd.DataFrame:
    """How many rows of ``table`` needed each (column, fix) normalisation."""
    counts = Counter(f for fixes in parts["fixes"] for f in fixes)
    rows = [(table, column, fix, n) for (column, fix), n in sorted(counts.items())]
    return pd.DataFrame(rows, columns=list(FIXES_COLUMNS))


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
            "row": [excel_row(i) for i in rows],
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


def _located_manifest(
    frame: pd.DataFrame,
    parts: pd.DataFrame,
    label: int,
    table: str,
    lookups: tuple[pd.Series, pd.Series],
    keys: pd.Series,
    reason: pd.Series,
    index: ImageIndex | None,
) -> tuple[pd.DataFrame, pd.Series]:
    """Find each row's image: manifest rows of the found ones, reasons for the rest.

    Args:
        lookups: (file names, path hints) per row to locate, as :func:`locate` takes them.
        keys: the manifest's ``key`` of each row.
        reason: per-row reasons; rows whose image is missing or ambiguous get theirs here.

    Returns:
        The manifest rows and the found relative paths.
    """
    relpaths, loc_reason = locate(*lookups, index)
    reason.loc[loc_reason.index] = loc_reason
    found = relpaths.dropna()
    if index is None:
        return _empty_manifest(), found
    return _manifest_rows(frame, parts, label, table, found, index, keys), found


def match_cancer(
    cancer: pd.DataFrame,
    validation: pd.DataFrame | None,
    index: ImageIndex | None,
    cancer_table: str = config.SHEET_CANCER,
) -> ClassMatch:
    """Join the Cancer sheet to the validation rows on the UniqueKey and locate the images.

    Args:
        cancer: the cancer rows.
        validation: the validation workbook's rows; None for the user's cancer export, whose rows
            were matched before and carry their AbsolutePath: each row is then its own validation
            row (so the join still reports duplicates, empty keys and missing files) and the
            validation counts are 0.
        index: the cancer image folder's index (None: no image is located).
        cancer_table: the cancer rows' name in reports.
    """
    joined = validation is not None
    if validation is None:
        validation = cancer
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
    manifest, found = _located_manifest(
        cancer, cparts, config.LABEL_CANCER, cancer_table, (names, hints), cparts["key"],
        creason, index,
    )  # fmt: skip
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
    counts = {
        "cancer_rows": len(cancer),
        "cancer_key_matched": int(key_matched.sum()),
        "cancer_key_matched_raw": raw_matched,
        "cancer_images_found": len(found),
        "cancer_rows_without_path": int(no_path.sum()),
        "validation_rows": len(validation) if joined else 0,
        "validation_matched": len(used) if joined else 0,
    }
    fixes = pd.concat(
        [count_fixes(cparts, cancer_table), count_fixes(vparts, config.SHEET_VALIDATION)],
        ignore_index=True,
    )
    return ClassMatch(manifest, unmatched, counts, fixes)


def _path_name_full(value: object) -> str:
    return (
        "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value).strip()
    )


def match_non_cancer(
    non_cancer: pd.DataFrame, index: ImageIndex | None, table: str = config.SHEET_NON_CANCER
) -> ClassMatch:
    """Locate each Non-Cancer row's image by its InputFileName (unique for this sheet)."""
    parts = key_parts_df_lenient(non_cancer, table)
    reason = pd.Series("", index=parts.index, dtype=object)
    empty = parts["file"] == ""
    reason[empty] = config.REASON_EMPTY_PART + ": " + config.COL_FILE
    dup = parts["file"].duplicated() & ~empty
    first: dict[str, int] = {}
    for idx, name in parts.loc[~empty, "file"].items():
        first.setdefault(name, excel_row(idx))
    reason[dup] = parts.loc[dup, "file"].map(
        lambda n: f"{config.REASON_DUPLICATE}: same as {table} row {first[n]}"
    )
    todo = reason == ""
    hints = pd.Series("", index=parts.index[todo], dtype=object)
    manifest, found = _located_manifest(
        non_cancer, parts, config.LABEL_NON_CANCER, table, (parts.loc[todo, "file"], hints),
        parts["file"], reason, index,
    )  # fmt: skip
    unmatched = _reason_rows(
        table, parts[reason != ""], parts.loc[reason != "", "file"], reason[reason != ""]
    )
    counts = {
        "non_cancer_rows": len(non_cancer),
        "non_cancer_names_usable": int(todo.sum()),
        "non_cancer_images_found": len(found),
    }
    return ClassMatch(manifest, unmatched, counts, count_fixes(parts, table))


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
    parts: list[ClassMatch], source: str, notes: list[str], on_disk: set[str]
) -> MatchResult:
    """Put the per-class results together into one :class:`MatchResult`.

    Args:
        parts: the cancer and the non-cancer results.
        source: "workbooks" or "exports".
        notes: sentences for the user.
        on_disk: every image file of both class folders, relative to the data root.
    """
    manifest = pd.concat([p.manifest for p in parts], ignore_index=True)
    manifest["label"] = manifest["label"].astype(int)
    manifest["row"] = manifest["row"].astype(int)
    unmatched = pd.concat([p.unmatched for p in parts], ignore_index=True)
    unmatched["row"] = unmatched["row"].astype(int)
    counts = {name: n for p in parts for name, n in p.counts.items()}
    stats = MatchStats(
        **counts,
        images_in_manifest=len(manifest),
        patients=int(manifest["patient_id"].nunique()),
        image_files_on_disk=len(on_disk),
        unreferenced_image_files=len(on_disk - set(manifest["relpath"])),
    )
    fixes = pd.concat([p.fixes for p in parts], ignore_index=True)
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
