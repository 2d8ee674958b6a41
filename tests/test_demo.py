"""The synthetic dataset mirrors the hospital layout, and the matcher recovers its ground truth."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from bcp_core import config
from bcp_core.config import DemoConfig
from bcp_core.data.datasource import read_data_root
from bcp_core.data.workbooks import pick_sheet, read_excel_sheets
from bcp_core.errors import UserError
from bcp_demo.writer import PLANS, combined_columns, plan_dataset, write_demo_dataset


def test_layout_matches_the_hospital(small_demo):
    root, _ = small_demo
    names = {p.name for p in root.iterdir()}
    assert {"datacombined.xlsx", "data_validation_x.xlsx", "Cancer", "Non-Cancer"} <= names
    assert len([p for p in (root / "Cancer").iterdir() if p.is_dir()]) == 2
    assert all(p.name.startswith("batch_") for p in (root / "Non-Cancer").iterdir())
    sheets = read_excel_sheets(root / "datacombined.xlsx")
    assert set(sheets) == {"Cancer", "Non-Cancer"}
    assert sheets["Cancer"].shape[1] == 561
    val = next(iter(read_excel_sheets(root / "data_validation_x.xlsx").values()))
    assert val.shape[1] == 16
    assert val["AbsolutePath"].str.startswith("C:\\Users\\").all()


def test_key_columns_carry_the_excel_pitfalls(small_demo):
    root, _ = small_demo
    cancer = pick_sheet(read_excel_sheets(root / "datacombined.xlsx"), "Cancer", "w")
    times = [t for t in cancer["StudyTime"] if t == t and t is not None]
    assert any(isinstance(t, (int, float)) and t < 100000 for t in times)  # lost leading zero
    val = next(iter(read_excel_sheets(root / "data_validation_x.xlsx").values()))
    assert val["InputFileName"].astype(str).str.endswith(".jpg").any()
    assert not val["InputFileName"].astype(str).str.endswith(".jpg").all()


def test_matcher_counts_equal_the_ground_truth(small_demo):
    root, truth = small_demo
    stats = read_data_root(root).stats
    for key, expected in truth["counts"].items():
        assert getattr(stats, key) == expected, key


def test_matcher_reasons_equal_the_ground_truth(small_demo):
    root, truth = small_demo
    got = {
        (r["sheet"], r["row"], r["reason"].split(":")[0])
        for r in read_data_root(root).to_json()["unmatched"]
    }
    expected = {(r["sheet"], r["row"], r["reason"]) for r in truth["unmatched"]}
    assert got == expected


def test_manifest_labels_and_patients_equal_the_ground_truth(small_demo):
    root, truth = small_demo
    manifest = read_data_root(root).manifest
    by_path = {i["relpath"]: i for i in truth["images"]}
    for row in manifest.itertuples():
        image = by_path[row.relpath]
        assert (row.label, row.patient_id, row.view, row.laterality) == (
            image["label"],
            image["patient_id"],
            image["view"],
            image["laterality"],
        )


def test_four_views_per_woman_and_lesion_in_both_views_of_one_breast(small_demo):
    _, truth = small_demo
    by_patient: dict[str, list[dict]] = {}
    for image in truth["images"]:
        by_patient.setdefault(image["patient_id"], []).append(image)
    assert all(len(v) == 4 for v in by_patient.values())
    for images in by_patient.values():
        cancer = [i for i in images if i["label"] == 1]
        if cancer:
            assert len(cancer) == 2 and {i["view"] for i in cancer} == {"CC", "MLO"}
            assert len({i["laterality"] for i in cancer}) == 1
            assert len({i["lesion"] for i in cancer}) == 1


def test_images_are_portrait_jpegs(small_demo):
    root, truth = small_demo
    first = next(i for i in truth["images"] if i["on_disk"])
    with Image.open(root / first["relpath"]) as img:
        assert img.format == "JPEG"
        assert img.height > img.width and img.height == 96


def test_same_seed_same_dataset_other_seed_other_dataset():
    a = plan_dataset(DemoConfig(seed=3))
    b = plan_dataset(DemoConfig(seed=3))
    c = plan_dataset(DemoConfig(seed=4))
    assert a[1] == b[1] and a[2] == b[2]
    assert a[1] != c[1]


def test_hospital_plan_reproduces_the_real_row_counts():
    _, sheets, truth = plan_dataset(DemoConfig(scale="hospital"))
    assert len(sheets[config.SHEET_CANCER]) == 105
    assert len(sheets[config.SHEET_NON_CANCER]) == 4998
    assert len(sheets[config.SHEET_VALIDATION]) == 322
    cancer_bad = {r["row"] for r in truth if r["sheet"] == config.SHEET_CANCER}
    assert 105 - len(cancer_bad) == 87
    assert PLANS["hospital"].cancer_patients * 2 + PLANS["hospital"].duplicates == 105


def test_combined_workbook_has_561_unique_columns():
    cols = combined_columns()
    assert len(cols) == 561 and len(set(cols)) == 561


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (DemoConfig(scale="huge"), r"Unknown demo scale 'huge'"),
        (DemoConfig(subtlety=1.5), r"subtlety must be between 0 and 1, got 1.5"),
        (DemoConfig(image_height=10), r"at least 64 pixels, got 10"),
    ],
)
def test_bad_settings_are_refused(cfg, message, tmp_path):
    with pytest.raises(UserError, match=message):
        write_demo_dataset(tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists()


def test_existing_folder_is_not_overwritten(small_demo, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="already exists and is not empty"):
        write_demo_dataset(out, DemoConfig(image_height=64))
    assert (out / "keep.txt").read_text() == "mine"


def test_truth_file_is_written(small_demo):
    root, truth = small_demo
    assert json.loads((root / config.DEMO_TRUTH_FILE).read_text(encoding="utf-8")) == truth
