"""Finding the files of a data root, and the sentence a user gets when something is missing."""

from __future__ import annotations

import pytest

from bcp_core.data.datasource import data_root_signature, read_data_root
from bcp_core.errors import UserError
from tests.conftest import write_jpeg, write_xlsx

HEADER = ["InputFileName", "StudyDate", "StudyTime", "PatientID.x"]


def workbooks(root, cancer_header=HEADER, sheets=("Cancer", "Non-Cancer")):
    write_xlsx(root / "datacombined.xlsx", {s: [cancer_header, ["F1", 1, 1, "P"]] for s in sheets})
    write_xlsx(root / "data_validation_x.xlsx", {"Sheet1": [HEADER + ["AbsolutePath"]]})
    (root / "Cancer").mkdir(parents=True, exist_ok=True)
    (root / "Non-Cancer").mkdir(parents=True, exist_ok=True)
    return root


def test_data_root_that_is_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(UserError, match="Data root is a file, not a folder"):
        read_data_root(f)


def test_empty_data_root_string():
    with pytest.raises(UserError, match="No data root given"):
        read_data_root("  ")


def test_folder_without_workbooks_lists_what_it_holds(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match=r"has neither datacombined.xlsx .* it holds: notes.txt"):
        read_data_root(tmp_path)


def test_missing_validation_workbook_says_what_to_do(tmp_path):
    write_xlsx(tmp_path / "DataCombined.xlsx", {"Cancer": [HEADER]})
    with pytest.raises(UserError, match=r"data_validation_x.xlsx is missing .* Put it beside"):
        read_data_root(tmp_path)


def test_missing_non_cancer_sheet_names_the_sheets(tmp_path):
    root = workbooks(tmp_path, sheets=("Cancer", "Normal"))
    with pytest.raises(
        UserError, match=r"no sheet 'Non-Cancer'; its sheets are: 'Cancer', 'Normal'"
    ):
        read_data_root(root)


def test_missing_key_column(tmp_path):
    root = workbooks(tmp_path, cancer_header=["InputFileName", "StudyDate", "PatientID.x", "X"])
    with pytest.raises(UserError, match=r"Sheet 'Cancer' has no column 'StudyTime'"):
        read_data_root(root)


def test_missing_image_folder(tmp_path):
    root = workbooks(tmp_path)
    (root / "Non-Cancer").rmdir()
    with pytest.raises(UserError, match=r"No non-cancer image folder under .*Non-Cancer"):
        read_data_root(root)


def test_unreadable_workbook(tmp_path):
    root = workbooks(tmp_path)
    (root / "datacombined.xlsx").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(UserError, match=r"Cannot read workbook datacombined.xlsx"):
        read_data_root(root)


def test_class_folders_one_level_down_are_found(tmp_path):
    root = workbooks(tmp_path)
    (root / "Cancer").rmdir()
    (root / "Non-Cancer").rmdir()
    write_jpeg(root / "images" / "CANCER" / "a" / "F9.jpg")
    write_jpeg(root / "images" / "NON_CANCER" / "b" / "F1.jpg")
    result = read_data_root(root)
    assert result.stats.non_cancer_images_found == 1
    assert result.manifest["relpath"].tolist() == ["images/NON_CANCER/b/F1.jpg"]


def test_signature_changes_when_a_workbook_changes(tmp_path):
    root = workbooks(tmp_path)
    before = data_root_signature(root)
    write_xlsx(
        root / "datacombined.xlsx", {"Cancer": [HEADER, ["F1", 1, 1, "P"], ["F2", 1, 1, "P"]]}
    )
    assert data_root_signature(root) != before
