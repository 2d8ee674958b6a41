"""The UniqueKey join and image location, on tiny hand-written workbooks and JPEGs."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields
from pathlib import Path

import pytest

from bcp_core import config
from bcp_core.data.datasource import read_data_root
from bcp_core.data.matching import MatchStats
from tests.conftest import NON_ASCII_ROOT, write_data_root, write_jpeg, write_xlsx

KEY_HEADER = [
    "InputFileName",
    "StudyDate",
    "StudyTime",
    "PatientID.x",
    "ViewPosition",
    "ImageLaterality",
]
VAL_HEADER = ["InputFileName", "StudyDate", "StudyTime", "PatientID.x", "AbsolutePath"]
WIN = "C:\\Users\\Aylın\\Desktop\\meme kanseri\\cancer"


def make_root(
    base: Path,
    cancer_rows,
    validation_rows,
    non_cancer_rows,
    files,
    cancer_dir="Cancer",
    non_cancer_dir="Non-Cancer",
) -> Path:
    """A data root with the two workbooks and the listed image files (relative to class dirs)."""
    return write_data_root(
        base / NON_ASCII_ROOT,
        [KEY_HEADER, *cancer_rows],
        [KEY_HEADER, *non_cancer_rows],
        [VAL_HEADER, *validation_rows],
        files,
        cancer_dir,
        non_cancer_dir,
    )


@pytest.fixture
def messy_root(tmp_path):
    """Every pitfall of the hospital's workbooks in a handful of rows (one per comment)."""
    cancer = [
        ["FILE0004", 20141225, 92603, "DIT439120108", "CC", "L"],  # 2: time lost its zero
        ["FILE0005", 20141225.0, 112603.0, "DIT439120108", "MLO", "L"],  # 3: floats
        ["FILE0001", 20150101, 101010, "dit000000002", "CC", "R"],  # 4: case; dup name in sub 2
        ["FILE0006", 20150101, None, "DIT000000002", "MLO", "R"],  # 5: empty StudyTime
        ["FILE0004", 20141225, 92603, "DIT439120108", "CC", "L"],  # 6: duplicate of row 2
        ["FILE0007", 20160101, 123000, "DIT000000003", "CC", "L"],  # 7: no validation row
        ["FILE0008", 20160101, 123000, "DIT000000003", "MLO", "L"],  # 8: file absent on disk
    ]
    validation = [
        ["FILE0004.jpg", "20141225", "092603", "DIT439120108", f"{WIN}\\sub_a\\FILE0004.jpg"],
        ["FILE0005 ", 20141225, "112603", "DIT439120108", f"{WIN}\\sub_a\\FILE0005.jpg"],
        ["file0001.JPG", 20150101, "101010", "DIT000000002", f"{WIN}\\Sub B\\FILE0001.jpg"],
        ["FILE0006", 20150101, "101010", "DIT000000002", f"{WIN}\\Sub B\\FILE0006.jpg"],
        ["FILE0008", 20160101, "123000", "DIT000000003", f"{WIN}\\sub_a\\FILE0008.jpg"],
        ["FILE0999", 20170101, "090000", "DIT000000009", f"{WIN}\\sub_a\\FILE0999.jpg"],
    ]
    non_cancer = [
        ["FILE0001", 20141225, 92603, "DIT439120108", "CC", "R"],
        ["FILE0002.jpg", 20141225, 92603, "DIT439120108", "MLO", "R"],
        ["FILE0003", 20141225, 92603, "DIT439120108", "MLO", "R"],  # absent on disk
        ["FILE0001", 20141225, 92603, "DIT439120108", "CC", "R"],  # duplicate name
    ]
    files = [
        "C/sub_a/FILE0004.jpg",
        "C/sub_a/FILE0005.JPG",
        "C/sub_a/FILE0001.jpg",
        "C/Sub B/FILE0001.jpg",
        "C/Sub B/FILE0006.jpg",
        "N/batch_1/FILE0001.jpg",
        "N/batch_2/FILE0002.jpg",
    ]
    return make_root(tmp_path, cancer, validation, non_cancer, files, "cancer", "non cancer")


def reasons(result, sheet):
    df = result.unmatched[result.unmatched["sheet"] == sheet]
    return dict(zip(df["row"], df["reason"]))


def test_counts_on_messy_root(messy_root):
    r = read_data_root(messy_root)
    s = r.stats
    assert (s.cancer_rows, s.cancer_key_matched, s.cancer_images_found) == (7, 4, 3)
    assert (s.non_cancer_rows, s.non_cancer_images_found) == (4, 2)
    assert (s.validation_rows, s.validation_matched) == (6, 4)
    # Without the normalisations the Excel numbers and extensions break all keys but FILE0008's.
    assert s.cancer_key_matched_raw == 1


def test_each_unmatched_cancer_row_has_its_reason(messy_root):
    got = reasons(read_data_root(messy_root), "Cancer")
    assert got[5].startswith(config.REASON_EMPTY_PART) and "StudyTime" in got[5]
    assert got[6] == f"{config.REASON_DUPLICATE}: same as Cancer row 2"
    assert got[7] == config.REASON_NO_VALIDATION
    assert got[8] == f"{config.REASON_NOT_ON_DISK}: FILE0008.jpg"
    assert set(got) == {5, 6, 7, 8}


def test_validation_rows_that_match_nothing_are_reported(messy_root):
    got = reasons(read_data_root(messy_root), config.SHEET_VALIDATION)
    assert got == {5: config.REASON_NO_CANCER_ROW, 7: config.REASON_NO_CANCER_ROW}


def test_non_cancer_absent_and_duplicate_rows(messy_root):
    got = reasons(read_data_root(messy_root), "Non-Cancer")
    assert got == {
        4: f"{config.REASON_NOT_ON_DISK}: FILE0003",
        5: f"{config.REASON_DUPLICATE}: same as Non-Cancer row 2",
    }


def test_windows_path_picks_the_right_one_of_two_same_named_files(messy_root):
    m = read_data_root(messy_root).manifest
    row = m[(m["sheet"] == "Cancer") & (m["row"] == 4)].iloc[0]
    assert row["relpath"] == "cancer/Sub B/FILE0001.jpg"
    assert Path(row["path"]).is_file()
    # The non-cancer FILE0001 is looked up in its own tree, not among the cancer files.
    nc = m[(m["sheet"] == "Non-Cancer") & (m["row"] == 2)].iloc[0]
    assert nc["relpath"] == "non cancer/batch_1/FILE0001.jpg" and nc["label"] == 0


def test_manifest_columns_and_metadata(messy_root):
    m = read_data_root(messy_root).manifest
    assert list(m.columns) == list(config.MANIFEST_COLUMNS)
    first = m[(m["sheet"] == "Cancer") & (m["row"] == 2)].iloc[0]
    assert (first["label"], first["patient_id"], first["view"], first["laterality"]) == (
        1,
        "DIT439120108",
        "CC",
        "L",
    )
    assert first["key"] == "FILE0004-20141225-092603-DIT439120108"


def test_fixes_are_counted(messy_root):
    fixes = read_data_root(messy_root).fixes
    cancer_time = fixes[(fixes["table"] == "Cancer") & (fixes["column"] == "StudyTime")]
    assert "leading zero restored (Excel number)" in set(cancer_time["fix"])
    val_file = fixes[(fixes["table"] == "validation") & (fixes["column"] == "InputFileName")]
    assert {"file extension removed", "stray spaces removed"} <= set(val_file["fix"])


def test_ambiguous_file_is_reported_when_the_path_does_not_help(tmp_path):
    root = make_root(
        tmp_path,
        [["FILE0001", 20150101, 101010, "P1", "CC", "R"]],
        [["FILE0001", 20150101, "101010", "P1", "D:\\elsewhere\\FILE0001.jpg"]],
        [],
        ["C/a/FILE0001.jpg", "C/b/FILE0001.jpg"],
    )
    got = reasons(read_data_root(root), "Cancer")
    assert got == {2: f"{config.REASON_AMBIGUOUS}: 2 files named FILE0001.jpg"}


def test_empty_absolute_path_falls_back_to_the_file_name(tmp_path):
    root = make_root(
        tmp_path,
        [["FILE0001", 20150101, 101010, "P1", "CC", "R"]],
        [["FILE0001", 20150101, "101010", "P1", None]],
        [],
        ["C/a/FILE0001.jpg"],
    )
    r = read_data_root(root)
    assert r.stats.cancer_images_found == 1
    assert r.stats.cancer_rows_without_path == 1


def test_exports_are_accepted_instead_of_workbooks(tmp_path):
    root = tmp_path / "root"
    (root / "CANCER.csv").parent.mkdir(parents=True)
    (root / "CANCER.csv").write_text(
        "InputFileName,StudyDate,StudyTime,PatientID.x,AbsolutePath,ViewPosition,ImageLaterality\n"
        f"FILE0001,20150101,092603,P1,{WIN}\\a\\FILE0001.jpg,CC,L\n",
        encoding="utf-8",
    )
    write_xlsx(
        root / "NON CANCER.csv", {"Sheet1": [KEY_HEADER, ["FILE0002", 1, 1, "P2", "CC", "R"]]}
    )
    write_jpeg(root / "Cancer" / "a" / "FILE0001.jpg")
    write_jpeg(root / "Non-Cancer" / "batch_1" / "FILE0002.jpg")
    r = read_data_root(root)
    assert r.source == "exports"
    assert (r.stats.cancer_images_found, r.stats.non_cancer_images_found) == (1, 1)
    assert r.stats.validation_rows == 0 and r.notes


def test_stats_are_typed_and_give_their_json_in_field_order(messy_root):
    stats = read_data_root(messy_root).stats
    assert isinstance(stats, MatchStats)
    assert list(stats.to_json()) == [f.name for f in fields(MatchStats)]
    assert stats.to_json() == vars(stats)
    assert all(type(v) is int for v in stats.to_json().values())
    assert (stats.image_files_on_disk, stats.unreferenced_image_files) == (5 + 2, 2)
    assert (stats.images_in_manifest, stats.patients) == (5, 2)
    with pytest.raises(FrozenInstanceError):
        stats.cancer_rows = 0


def test_to_json_has_the_cli_contract_keys(messy_root):
    out = read_data_root(messy_root).to_json()
    for key in (
        "cancer_rows",
        "cancer_key_matched",
        "cancer_images_found",
        "non_cancer_rows",
        "non_cancer_images_found",
        "validation_rows",
        "unmatched",
    ):
        assert key in out
    assert set(out["unmatched"][0]) == {"sheet", "row", "key", "reason"}
