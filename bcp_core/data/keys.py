"""The UniqueKey's parts, normalised from the cells as Excel leaves them (pure functions).

Excel mangles the key columns of the hospital's workbooks: StudyTime ``092603`` becomes the
number ``92603`` or ``92603.0``, StudyDate may become an Excel date, file names carry ``.jpg`` on
one side only, cells carry stray spaces and mixed letter case. Each normaliser returns the clean
value together with the names of the fixes it needed, so the data-matching page can say which
ones the join used. The sheets themselves are read by :mod:`bcp_core.data.workbooks`.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
import unicodedata
from collections.abc import Callable

import pandas as pd

from bcp_core import config
from bcp_core.data.workbooks import canonical_name, find_column
from bcp_core.errors import UserError
from bcp_core.values import is_blank

# Names of the fixes a normaliser can report (shown on the data-matching page).
FIX_STRIPPED = "stray spaces removed"
FIX_CASE = "letter case unified"
FIX_EXTENSION = "file extension removed"
FIX_FLOAT = "Excel number '.0' removed"
FIX_ZERO_PAD = "leading zero restored (Excel number)"
FIX_DATETIME = "Excel date converted"


def _number_text(value: object, fixes: set[str]) -> str | None:
    """Text of an Excel number without a spurious '.0'; None if ``value`` is not numeric."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer():
            fixes.add(FIX_FLOAT)
            return str(int(value))
        return repr(value)
    return None


def _text(value: object, fixes: set[str]) -> str:
    text = unicodedata.normalize("NFC", str(value))
    stripped = text.strip()
    if stripped != text:
        fixes.add(FIX_STRIPPED)
    return stripped


def _upper(text: str, fixes: set[str]) -> str:
    upper = text.upper()
    if upper != text:
        fixes.add(FIX_CASE)
    return upper


def file_name_key(name: object, fixes: set[str] | None = None) -> str:
    """The key of a file name: NFC-normalised, stripped, image extension dropped, upper case.

    ``" file0004.JPG"`` becomes ``"FILE0004"``. The one rule by which the join compares
    InputFileName values and the image index looks up file names (which also strips what is
    left, see :func:`bcp_core.data.index.stem_key`).

    Args:
        name: a file name as a sheet or a folder gives it.
        fixes: if given, the names of the fixes the name needed are added to it.
    """
    fixes = set() if fixes is None else fixes
    text = _text(name, fixes)
    stem, dot, ext = text.rpartition(".")
    if dot and "." + ext.lower() in config.IMAGE_EXTENSIONS:
        text = stem
        fixes.add(FIX_EXTENSION)
    return _upper(text, fixes)


#: A normaliser: a cell's clean text and the names of the fixes it needed.
Normaliser = Callable[[object], tuple[str, set[str]]]


def _cell_rule(rule: Callable[[object, set[str]], str]) -> Normaliser:
    """``rule`` as a :data:`Normaliser`: a blank cell is "" and needs no fix; any other is
    ``rule(value, fixes)``, which adds the names of the fixes it made to ``fixes``."""

    @functools.wraps(rule)
    def normalise(value: object) -> tuple[str, set[str]]:
        fixes: set[str] = set()
        return ("" if is_blank(value) else rule(value, fixes)), fixes

    return normalise


@_cell_rule
def normalise_file_name(value: object, fixes: set[str]) -> str:
    """Normalise an InputFileName cell with :func:`file_name_key` (numbers lose Excel's '.0')."""
    return file_name_key(_number_text(value, fixes) or value, fixes)


@_cell_rule
def normalise_date(value: object, fixes: set[str]) -> str:
    """Normalise a StudyDate to ``YYYYMMDD`` (from a number, text or an Excel date)."""
    if isinstance(value, (dt.date, dt.datetime, pd.Timestamp)):
        fixes.add(FIX_DATETIME)
        return value.strftime("%Y%m%d")
    text = _number_text(value, fixes)
    if text is None:
        text = _text(value, fixes)
        if re.fullmatch(r"\d{8}\.0+", text):
            fixes.add(FIX_FLOAT)
            text = text.split(".")[0]
        m = re.fullmatch(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T].*)?", text)
        if m:
            fixes.add(FIX_DATETIME)
            text = f"{m[1]}{int(m[2]):02d}{int(m[3]):02d}"
    return text


@_cell_rule
def normalise_time(value: object, fixes: set[str]) -> str:
    """Normalise a StudyTime to ``HHMMSS``: restore the zero Excel drops, cut fractions."""
    if isinstance(value, (dt.time, dt.datetime, pd.Timestamp)):
        fixes.add(FIX_DATETIME)
        return value.strftime("%H%M%S")
    if isinstance(value, float) and not value.is_integer():
        fixes.add(FIX_FLOAT)  # 112603.5 (fractions of a second)
        value = math.floor(value)
    text = _number_text(value, fixes)
    if text is None:
        text = _text(value, fixes)
        m = re.fullmatch(r"(\d{1,2}):(\d{2}):(\d{2})(?:\.\d*)?", text)
        if m:
            fixes.add(FIX_DATETIME)
            text = f"{int(m[1]):02d}{m[2]}{m[3]}"
        elif re.fullmatch(r"\d+\.\d*", text):
            fixes.add(FIX_FLOAT)
            text = text.split(".")[0]
    if text.isdigit() and len(text) < 6:
        fixes.add(FIX_ZERO_PAD)
        text = text.zfill(6)
    return text


@_cell_rule
def normalise_patient(value: object, fixes: set[str]) -> str:
    """Normalise a PatientID: no spaces, upper case, no Excel '.0' on numeric IDs."""
    return _upper(_number_text(value, fixes) or _text(value, fixes), fixes)


_NORMALISERS = {
    config.COL_FILE: normalise_file_name,
    config.COL_DATE: normalise_date,
    config.COL_TIME: normalise_time,
    config.COL_PATIENT: normalise_patient,
}


def _check_unique_columns(df: pd.DataFrame, table: str) -> None:
    """Refuse a table where a column the join reads appears twice (which one would be meant?)."""
    wanted = {canonical_name(c) for c in config.MATCH_COLUMNS}
    seen: dict[str, str] = {}
    for name in map(str, df.columns):
        canon = canonical_name(name)
        if canon in wanted and canon in seen:
            raise UserError(
                f"{table} has two columns named {seen[canon]!r}; delete or rename one of them."
            )
        seen[canon] = name


def key_parts_df(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """Normalise the four key columns of ``df``.

    Args:
        df: rows of a sheet or export, with the key columns under any accepted spelling.
        table: name used in error messages ("datacombined.xlsx sheet 'Cancer'").

    Returns:
        DataFrame with the same index and columns ``file``, ``date``, ``time``, ``patient``
        (normalised text), ``raw_key`` (the key built from the values as written),
        ``key`` (normalised UniqueKey), ``empty`` (comma-separated names of empty parts) and
        ``fixes`` (a frozenset of (column, fix) pairs).
    """
    _check_unique_columns(df, table)
    columns = {
        config.COL_FILE: find_column(df, config.COL_FILE, table),
        config.COL_DATE: find_column(df, config.COL_DATE, table),
        config.COL_TIME: find_column(df, config.COL_TIME, table),
        config.COL_PATIENT: find_column(df, config.PATIENT_COLUMNS, table),
    }
    out = pd.DataFrame(index=df.index)
    fixes: list[set[tuple[str, str]]] = [set() for _ in range(len(df))]
    raw_parts = []
    for short, (canon, actual) in zip(("file", "date", "time", "patient"), columns.items()):
        values = []
        for i, raw in enumerate(df[actual].tolist()):
            clean, used = _NORMALISERS[canon](raw)
            values.append(clean)
            fixes[i].update((canon, f) for f in used)
        out[short] = pd.Series(values, index=df.index, dtype=object)
        raw_parts.append(df[actual].map(lambda v: "" if is_blank(v) else str(v)))
    sep = config.KEY_SEPARATOR
    rows = list(zip(*(out[c].tolist() for c in ("file", "date", "time", "patient"))))
    names = config.KEY_COLUMNS

    def column(values: list) -> pd.Series:  # object dtype even when the sheet is empty
        return pd.Series(values, index=df.index, dtype=object)

    out["raw_key"] = column([sep.join(p) for p in zip(*[r.tolist() for r in raw_parts])])
    out["key"] = column([sep.join(r) for r in rows])
    out["empty"] = column([", ".join(n for n, v in zip(names, r) if v == "") for r in rows])
    out["fixes"] = column([frozenset(f) for f in fixes])
    return out


def text_column(df: pd.DataFrame, candidates: tuple[str, ...] | str) -> pd.Series:
    """Return a column as clean upper-case text, or empty strings if the column is absent."""
    try:
        col = find_column(df, candidates, "table")
    except UserError:
        return pd.Series([""] * len(df), index=df.index, dtype=object)
    return df[col].map(lambda v: "" if is_blank(v) else str(v).strip().upper()).astype(object)
