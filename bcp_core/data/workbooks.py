"""Read the hospital's workbooks and exports, and find their sheets and columns by name.

Workbooks (``.xlsx``, checked for size before they are parsed) and CSV exports (UTF-8 or
Windows-1254, any common delimiter) are read with every cell as Excel stored it; sheets,
columns and folder entries are found by :func:`canonical_name`, whatever their case and
punctuation. What the key columns' cells become is :mod:`bcp_core.data.keys`.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from pathlib import Path

import pandas as pd

from bcp_core import config
from bcp_core.errors import UserError

_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0"


def canonical_name(name: str) -> str:
    """Return a folder or file name reduced to casefolded letters and digits.

    "Non-Cancer", "non cancer" and "NON_CANCER" all become "noncancer". Unicode is NFKC-normalised
    first so that a name typed on macOS (decomposed accents) equals the same name from Windows.
    """
    text = unicodedata.normalize("NFKC", name).casefold()
    # Turkish dotless i and dotted capital I casefold to forms that differ from "i".
    text = text.replace("ı", "i").replace("i̇", "i")
    return "".join(ch for ch in text if ch.isalnum())


def excel_row(index: object) -> int:
    """The Excel row number of the DataFrame row ``index`` of a sheet read with its header.

    Excel counts rows from 1 and the header is row 1, so DataFrame row ``i`` is Excel row ``i + 2``.
    """
    return int(index) + 2  # type: ignore[call-overload]


def find_entry(folder: Path, name: str) -> Path | None:
    """Find ``name`` in ``folder`` comparing names case- and spelling-insensitively."""
    wanted = canonical_name(name)
    if not folder.is_dir():
        return None
    exact = folder / name
    if exact.exists():
        return exact
    for entry in sorted(folder.iterdir()):
        if canonical_name(entry.name) == wanted:
            return entry
    return None


# --- Reading tables -----------------------------------------------------------------------


def sniff_format(path: Path) -> str:
    """Return "xlsx", "xls" or "csv" from a file's first bytes (exports lie about their suffix)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise UserError(f"Cannot open {path}: {exc.strerror or exc}.") from exc
    if head.startswith(_ZIP_MAGIC):
        return "xlsx"
    if head.startswith(_OLE_MAGIC):
        return "xls"
    return "csv"


def _keep(header: list, columns: set[str] | None) -> list[int]:
    """Indices of the header cells to keep (all, or those whose canonical name is wanted)."""
    return [i for i, h in enumerate(header) if columns is None or canonical_name(str(h)) in columns]


def _cell(value: object) -> object:
    """Excel stores every number as a double: give integral ones back as int, "" as None."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None if value == "" else value


def _read_excel_calamine(path: Path, columns: set[str] | None) -> dict[str, pd.DataFrame]:
    """Read sheets with python-calamine directly, keeping only the wanted columns.

    The hospital's workbook has 561 columns of which the join needs about ten; building
    DataFrames of only those is several times faster, and lighter, than reading them all.
    """
    from python_calamine import CalamineWorkbook

    book = CalamineWorkbook.from_path(str(path))
    out = {}
    for name in book.sheet_names:
        rows = book.get_sheet_by_name(name).iter_rows()  # streamed: no 2.9M-cell Python list
        header = [str(h).strip() for h in next(rows, [])]
        keep = _keep(header, columns)
        data = [[_cell(row[i]) for i in keep] for row in rows]
        out[name] = pd.DataFrame(data, columns=[header[i] for i in keep], dtype=object)
    return out


def _read_excel_openpyxl(path: Path, columns: set[str] | None) -> dict[str, pd.DataFrame]:
    """Fallback where python-calamine is not installed."""
    sheets = pd.read_excel(path, sheet_name=None, engine="openpyxl", dtype=object)
    out = {}
    for name, df in sheets.items():
        df = _clean_columns(df)
        out[str(name)] = df.iloc[:, _keep(list(df.columns), columns)]
    return out


_DIMENSION = re.compile(rb'<(?:\w+:)?dimension\s+ref="([A-Z]+)?(\d+)?:?([A-Z]+)?(\d+)?"')


def _column_number(letters: bytes) -> int:
    number = 0
    for letter in letters.decode():
        number = number * 26 + ord(letter) - 64
    return number


def check_workbook_size(path: Path) -> None:
    """Refuse an .xlsx whose parts declare more than this product reads, before parsing it.

    Checked from the zip directory and the first bytes of each sheet: the XML's total size
    (``config.MAX_WORKBOOK_XML_BYTES``), each large part's compression ratio (a zip bomb), and
    each sheet's declared dimension (rows, cells).

    Raises:
        UserError: one sentence naming the workbook and what it declares.
    """
    import zipfile

    refuse = f"Workbook {path.name} is refused before reading it: {{}}. Check the file, or save "
    refuse += "only the sheets and columns needed as a new .xlsx."
    try:
        with zipfile.ZipFile(path) as archive:
            parts = [i for i in archive.infolist() if i.filename.lower().endswith(".xml")]
            total = sum(i.file_size for i in parts)
            if total > config.MAX_WORKBOOK_XML_BYTES:
                raise UserError(refuse.format(f"its sheets hold {total / 1e6:,.0f} MB of XML, "
                    f"more than {config.MAX_WORKBOOK_XML_BYTES / 1e6:,.0f} MB"))  # fmt: skip
            for part in parts:
                ratio = part.file_size / max(part.compress_size, 1)
                if (
                    part.file_size > config.MIN_BOMB_PART_BYTES
                    and ratio > config.MAX_WORKBOOK_RATIO
                ):
                    raise UserError(refuse.format(f"{part.filename} inflates {ratio:,.0f} times "
                        "(a zip bomb)"))  # fmt: skip
                if part.filename.lower().startswith("xl/worksheets/"):
                    with archive.open(part) as fh:
                        _check_dimension(fh.read(4096), refuse)
    except zipfile.BadZipFile:
        return  # not a zip: the reader says what is wrong with it


def _check_dimension(head: bytes, refuse: str) -> None:
    found = _DIMENSION.search(head)
    if not found or not found.group(4):
        return
    rows = int(found.group(4))
    columns = _column_number(found.group(3)) if found.group(3) else 1
    if rows > config.MAX_WORKBOOK_ROWS or rows * columns > config.MAX_WORKBOOK_CELLS:
        raise UserError(refuse.format(f"a sheet declares {rows:,} rows x {columns:,} columns"))


def read_excel_sheets(path: Path, columns: set[str] | None = None) -> dict[str, pd.DataFrame]:
    """Read every sheet of a workbook, values as Excel stored them (dtype object).

    Args:
        path: the workbook.
        columns: canonical names (:func:`canonical_name`) of the columns to keep; all if None.

    Raises:
        UserError: if the file is missing, not a workbook, or cannot be parsed.
    """
    if not path.is_file():
        raise UserError(f"Workbook not found: {path}.")
    fmt = sniff_format(path)
    if fmt == "csv":
        raise UserError(
            f"{path.name} is not an Excel workbook (it looks like text); save it as .xlsx."
        )
    if fmt == "xlsx":
        check_workbook_size(path)
    try:
        try:
            sheets = _read_excel_calamine(path, columns)
        except ImportError:
            sheets = _read_excel_openpyxl(path, columns)
    except Exception as exc:  # calamine and openpyxl raise many types for broken files
        if fmt == "xls":  # an OLE container: the old .xls format, or an encrypted workbook
            raise UserError(
                f"Cannot read workbook {path.name}: it is password-protected (encrypted) or in "
                "the old .xls format. Open it in Excel, remove the password and save it as .xlsx."
            ) from exc
        raise UserError(
            f"Cannot read workbook {path.name}: the file is damaged or incomplete ({exc}). "
            "Open it in Excel and save it again as .xlsx."
        ) from exc
    return {str(name): _clean_columns(df) for name, df in sheets.items()}


def read_excel_headers(path: Path) -> dict[str, list[str]]:
    """The header row of every sheet of a workbook (names stripped), without its other rows.

    Raises:
        UserError: if the file is missing, not a workbook, or cannot be parsed.
    """
    try:
        from python_calamine import CalamineWorkbook
    except ImportError:  # the fallback reads the sheets whole
        return {n: list(map(str, df.columns)) for n, df in read_excel_sheets(path).items()}
    if not path.is_file():
        raise UserError(f"Workbook not found: {path}.")
    if sniff_format(path) == "xlsx":
        check_workbook_size(path)
    try:
        book = CalamineWorkbook.from_path(str(path))
        out = {}
        for name in book.sheet_names:
            rows = book.get_sheet_by_name(name).iter_rows()
            out[str(name)] = [str(h).strip() for h in next(rows, [])]
        return out
    except Exception as exc:  # calamine raises many types for broken files
        raise UserError(
            f"Cannot read workbook {path.name} ({exc}). Open it in Excel and save it as .xlsx."
        ) from exc


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV export or a workbook's first sheet, whatever its suffix says.

    CSV cells are read as text so that leading zeros survive; UTF-8 (with or without BOM) is
    tried first, then Windows-1254 (Turkish), which is what Excel writes on the user's machines.
    """
    if not path.is_file():
        raise UserError(f"File not found: {path}.")
    if sniff_format(path) != "csv":
        return next(iter(read_excel_sheets(path).values()))
    if path.stat().st_size == 0:
        raise UserError(f"{path.name} is empty (0 bytes); export the rows again.")
    for encoding in ("utf-8-sig", "cp1254"):
        try:
            df = pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                encoding=encoding,
                sep=_delimiter(path, encoding),
                engine="python",
            )
            return _clean_columns(df)
        except UnicodeDecodeError:
            continue
        except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error) as exc:
            raise UserError(
                f'Cannot read {path.name} as CSV ({exc}); look for an unclosed quote (") in it, '
                "or export it again from Excel."
            ) from exc
    raise UserError(f"{path.name} is neither UTF-8 nor Windows-1254 text; save it as UTF-8 CSV.")


def _delimiter(path: Path, encoding: str) -> str:
    """The CSV's delimiter among , ; tab and | (a one-column file has none: ",").

    pandas' own sniffing (``sep=None``) may pick any character, and splits a one-column
    export such as ``InputFileName`` at a letter.
    """
    with open(path, encoding=encoding, newline="") as fh:
        sample = fh.read(64 * 1024)
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _clean_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Strip spaces from column names; Excel users often leave them."""
    df = df.copy()
    df.columns = [str(c).strip() for c in df.columns]
    return df


def pick_sheet(sheets: dict[str, pd.DataFrame], wanted: str, workbook: str) -> pd.DataFrame:
    """Return the sheet called ``wanted``, compared case- and punctuation-insensitively.

    Raises:
        UserError: naming the sheets the workbook does have.
    """
    for name, df in sheets.items():
        if canonical_name(name) == canonical_name(wanted):
            return df
    have = ", ".join(repr(n) for n in sheets) or "none"
    raise UserError(f"{workbook} has no sheet {wanted!r}; its sheets are: {have}.")


def find_column(df: pd.DataFrame, candidates: tuple[str, ...] | str, table: str) -> str:
    """Return the first column of ``df`` matching one of ``candidates`` (case-insensitive).

    Raises:
        UserError: naming the missing column and the table it was looked for in.
    """
    if isinstance(candidates, str):
        candidates = (candidates,)
    if len(df.columns) == 0:
        raise UserError(
            f"{table} is empty: it has no header row with the column {candidates[0]!r}."
        )
    by_canon = {canonical_name(c): c for c in df.columns}
    for cand in candidates:
        if cand in df.columns:
            return cand
        if canonical_name(cand) in by_canon:
            return by_canon[canonical_name(cand)]
    shown = ", ".join(list(map(str, df.columns))[:12])
    raise UserError(
        f"{table} has no column {candidates[0]!r} (needed for the key); "
        f"its first columns are: {shown}."
    )
