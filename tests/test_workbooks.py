"""Reading workbooks and exports, and finding their sheets and columns by name."""

from __future__ import annotations

import pytest

from bcp_core.data import workbooks
from bcp_core.errors import UserError
from tests.conftest import write_xlsx


def test_pick_sheet_lists_existing_sheets(tmp_path):
    path = write_xlsx(
        tmp_path / "datacombined.xlsx", {"Kanser": [["a"], [1]], "Normal": [["a"], [2]]}
    )
    sheets = workbooks.read_excel_sheets(path)
    with pytest.raises(UserError, match=r"no sheet 'Cancer'; its sheets are: 'Kanser', 'Normal'"):
        workbooks.pick_sheet(sheets, "Cancer", path.name)


def test_pick_sheet_tolerates_case_and_punctuation(tmp_path):
    path = write_xlsx(tmp_path / "w.xlsx", {"non cancer": [["a"], [1]]})
    sheets = workbooks.read_excel_sheets(path)
    assert workbooks.pick_sheet(sheets, "Non-Cancer", "w").shape == (1, 1)


def test_read_table_reads_excel_saved_under_csv_name(tmp_path):
    path = write_xlsx(tmp_path / "NON CANCER.csv", {"Sheet1": [["InputFileName"], ["FILE0001"]]})
    assert workbooks.read_table(path)["InputFileName"].tolist() == ["FILE0001"]


def test_read_table_csv_keeps_leading_zeros_and_reads_turkish_encoding(tmp_path):
    path = tmp_path / "CANCER.csv"
    path.write_bytes("InputFileName;StudyTime;Site\nFILE0001;092603;Şişli\n".encode("cp1254"))
    df = workbooks.read_table(path)
    assert df.loc[0, "StudyTime"] == "092603"
    assert df.loc[0, "Site"] == "Şişli"


def test_corrupt_workbook_gives_a_sentence(tmp_path):
    path = tmp_path / "datacombined.xlsx"
    path.write_bytes(b"PK\x03\x04 this is not really a zip file")
    with pytest.raises(UserError, match=r"Cannot read workbook datacombined.xlsx: .*save it again"):
        workbooks.read_excel_sheets(path)


def test_text_file_named_xlsx_is_refused(tmp_path):
    path = tmp_path / "datacombined.xlsx"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match=r"not an Excel workbook"):
        workbooks.read_excel_sheets(path)


@pytest.mark.parametrize(
    ("a", "b"),
    [("Non-Cancer", "non cancer"), ("NON_CANCER", "noncancer"), ("Verilerı", "VERILERI")],
)
def test_canonical_name_folds_spelling(a, b):
    assert workbooks.canonical_name(a) == workbooks.canonical_name(b)


def test_only_the_wanted_columns_are_read_and_numbers_come_back_as_int(tmp_path):
    path = write_xlsx(
        tmp_path / "w.xlsx",
        {"S": [["InputFileName", "Noise", "StudyTime"], ["F1", "x", 92603], ["F2", "", None]]},
    )
    wanted = {workbooks.canonical_name("StudyTime"), workbooks.canonical_name("inputfilename")}
    df = workbooks.read_excel_sheets(path, wanted)["S"]
    assert list(df.columns) == ["InputFileName", "StudyTime"]
    assert df["StudyTime"].tolist()[0] == 92603 and isinstance(df["StudyTime"][0], int)
    assert df["StudyTime"][1] is None


def test_openpyxl_fallback_reads_the_same_columns(tmp_path):
    path = write_xlsx(tmp_path / "w.xlsx", {"S": [["InputFileName", "Noise"], ["F1", "x"]]})
    df = workbooks._read_excel_openpyxl(path, {"inputfilename"})["S"]
    assert list(df.columns) == ["InputFileName"] and df.iloc[0, 0] == "F1"


# --- Workbooks that declare more than they should (security row 5) ---------------------------


def _xlsx_with_sheet(path, sheet_xml_chunks) -> None:
    """A real workbook (openpyxl) whose first sheet's XML is replaced by ``sheet_xml_chunks``."""
    import zipfile

    from openpyxl import Workbook

    book = Workbook()
    book.active.append(["InputFileName", "StudyDate"])
    plain = path.with_suffix(".plain.xlsx")
    book.save(plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if item.filename == "xl/worksheets/sheet1.xml":
                with dst.open(item.filename, "w") as fh:
                    for chunk in sheet_xml_chunks:
                        fh.write(chunk)
            else:
                dst.writestr(item, src.read(item))


HEAD = (
    b'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/'
    b'spreadsheetml/2006/main"><dimension ref="A1:{cols}{rows}"/><sheetData>'
)
TAIL = b"</sheetData></worksheet>"


def test_a_workbook_zip_bomb_is_refused_before_parsing(tmp_path):
    """1.9 MB of zip holding 483 MB of identical rows aborted the server."""
    import resource

    row = b'<row><c t="inlineStr"><is><t>FILE0001</t></is></c></row>'
    path = tmp_path / "datacombined.xlsx"
    head = HEAD.replace(b"{cols}", b"A").replace(b"{rows}", b"2")  # a lying dimension
    _xlsx_with_sheet(path, [head, *(row * 20_000 for _ in range(60)), TAIL])  # ~70 MB of XML
    assert path.stat().st_size < 2 * 10**6
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UserError, match=r"sheet1\.xml inflates [\d,]+ times \(a zip bomb\)"):
        workbooks.read_excel_sheets(path)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 50  # MB


@pytest.mark.parametrize(
    ("cols", "rows", "what"),
    [(b"C", b"3000000", "3,000,000 rows x 3 columns"), (b"XFD", b"5000", "5,000 rows x 16,384")],
)
def test_a_workbook_declaring_too_many_cells_is_refused(tmp_path, cols, rows, what):
    path = tmp_path / "datacombined.xlsx"
    _xlsx_with_sheet(path, [HEAD.replace(b"{cols}", cols).replace(b"{rows}", rows), TAIL])
    with pytest.raises(UserError, match=f"is refused before reading it: a sheet declares {what}"):
        workbooks.read_excel_sheets(path)
    with pytest.raises(UserError, match="a sheet declares"):
        workbooks.read_excel_headers(path)


def test_a_hospital_sized_workbook_passes_the_size_check(tmp_path):
    path = tmp_path / "datacombined.xlsx"
    _xlsx_with_sheet(path, [HEAD.replace(b"{cols}", b"UO").replace(b"{rows}", b"5000"), TAIL])
    workbooks.check_workbook_size(path)  # 561 columns x 5,000 rows: read as usual
    assert list(workbooks.read_excel_sheets(path)) == ["Sheet"]
