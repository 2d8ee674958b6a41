"""Performance per subgroup: grouping rules, figures and intervals, the workbook join, page 4."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from openpyxl import load_workbook
from sklearn import metrics as skm

from bcp_core import config
from bcp_core.data.attributes import (
    image_values,
    manifest_rows,
    pickable_columns,
    workbook_columns,
)
from bcp_core.data.datasource import read_data_root
from bcp_core.data.keys import file_name_key
from bcp_core.errors import UserError
from bcp_core.evaluation.intervals import bootstrap_auc_intervals, wilson_interval
from bcp_core.evaluation.subgroups import (
    MISSING,
    OTHER,
    group_labels,
    subgroup_performance,
    too_small_reason,
)
from bcp_core.model.bundle import load_bundle
from bcp_core.model.files import META_FILE
from tests.conftest import demo_copy, edit_workbook, open_app, write_jpeg, write_xlsx

# --- Grouping rules (made-up values) --------------------------------------------------------


def test_an_age_column_is_binned_by_decade_with_dicom_age_strings_and_a_missing_group():
    cells = [43, "065Y", 59.9, None, "  ", 70.0, "006M", "049Y"]
    g = group_labels("PatientAge", cells, list("abcdefgh"))
    assert g.rule == "age by decade"
    assert g.labels == ["40-49", "60-69", "50-59", MISSING, MISSING, "70-79", "0-9", "40-49"]
    assert g.order == ["0-9", "40-49", "50-59", "60-69", "70-79", MISSING]


def test_dicom_age_strings_make_an_age_whatever_the_column_is_called():
    g = group_labels("Alter", ["041Y", "052Y", "063Y", "074Y", "085Y", "096Y"], list("abcdef"))
    assert g.rule == "age by decade"
    assert g.order == ["40-49", "50-59", "60-69", "70-79", "80-89", "90-99"]


def test_an_age_named_column_outside_0_to_120_is_not_an_age():
    values = [10.0, 50.0, 90.0, 130.0, 170.0, 210.0, 250.0]
    g = group_labels("PatientAge", values, list("abcdefg"))
    assert g.rule.startswith("at most 5 bins")
    assert "age" not in g.rule


def test_few_distinct_numbers_keep_one_group_each_numbers_written_as_text_too():
    g = group_labels("Rows", [4096, "3328", 4096.0, 3328, None], list("abcde"))
    assert g.labels == ["4096", "3328", "4096", "3328", MISSING]
    assert g.order == ["3328", "4096", MISSING]


def _bounds(label: str) -> tuple[float, float]:
    low, high = label[1:-1].split(", ")
    return float(low), float(high)


@pytest.mark.parametrize(
    "values",
    [
        list(np.arange(100.0)),  # 5 bins of 20
        [1.0] * 60 + [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],  # ties: equal edges merged
        list(np.random.default_rng(0).lognormal(3, 1, 57)),
    ],
)
def test_many_numbers_get_at_most_5_quantile_bins_that_hold_their_values(values):
    g = group_labels("KVP", values, [str(i) for i in range(len(values))])
    assert g.rule == "at most 5 bins of about equal counts"
    assert 2 <= len(g.order) <= 5 and MISSING not in g.order and set(g.labels) == set(g.order)
    for value, label in zip(values, g.labels):
        low, high = _bounds(label)
        assert low - 1e-4 * abs(low) <= value <= high + 1e-4 * abs(high), (value, label)
    # Bins follow each other: every value of a bin lies below every value of the next.
    frame = pd.DataFrame({"v": values, "bin": g.labels}).groupby("bin", sort=False)["v"]
    lows, highs = frame.min()[g.order].to_numpy(), frame.max()[g.order].to_numpy()
    assert (highs[:-1] < lows[1:]).all()
    sizes = pd.Series(g.labels).value_counts()[g.order].tolist()
    if len(set(values)) == 100:
        assert sizes == [20] * 5
    elif len(set(values)) == 8:
        assert sizes[0] == 60  # the tie is one bin, the other 7 values are not lost in it
    else:
        assert max(sizes) - min(sizes) <= 2


def test_text_is_grouped_by_normalised_value_and_rare_values_pooled_into_other():
    cells = ["HOLOGIC, Inc."] * 4 + ["hologic,  inc. ", " Hologic, Inc."] + ["GE"] * 5
    cells += ["Siemens"] * 2 + [None]
    patients = [f"P{i}" for i in range(len(cells))]
    g = group_labels("Manufacturer", cells, patients)
    assert g.labels[:6] == ["HOLOGIC, Inc."] * 6  # the most frequent spelling is shown
    assert g.labels[6:11] == ["GE"] * 5
    assert g.labels[11:] == [OTHER, OTHER, MISSING]  # 2 images < 5
    assert g.order == ["HOLOGIC, Inc.", "GE", OTHER, MISSING]  # largest first
    assert "pooled into 'other'" in g.rule


def test_a_value_of_too_few_patients_is_never_a_group_of_its_own():
    # Ten images of one woman carry her name: pooled, so no group names her.
    cells = ["Ayşe Yılmaz"] * 10 + ["B"] * 6
    patients = ["P1"] * 10 + ["P2", "P3", "P4", "P5", "P6", "P7"]
    g = group_labels("PatientName", cells, patients)
    assert "Ayşe Yılmaz" not in g.order and g.order == ["B", OTHER]
    assert group_labels("PatientName", cells, patients, min_patients=1).order[0] == "Ayşe Yılmaz"


def test_a_cell_reading_other_or_missing_is_not_taken_for_the_pooled_groups():
    cells = ["Other"] * 5 + ["missing"] * 5 + ["rare", None]
    g = group_labels("Finding", cells, [f"P{i}" for i in range(12)])
    assert g.order == ["missing (as written)", "Other (as written)", OTHER, MISSING]


def test_an_empty_column_is_one_missing_group():
    g = group_labels("PixelSpacing", [None, "", float("nan")], ["a", "b", "c"])
    assert g.order == [MISSING] and g.labels == [MISSING] * 3


def test_the_small_group_reason_says_which_class_is_short_and_how_many():
    assert too_small_reason(2, 3) == (
        "too few cancer images (2) and non-cancer images (3) for a figure"
    )
    assert too_small_reason(2, 40) == "too few cancer images (2) for sensitivity or ROC-AUC"
    assert too_small_reason(9, 4) == "too few non-cancer images (4) for specificity or ROC-AUC"
    assert too_small_reason(5, 5) == ""


# --- Figures and intervals (made-up predictions) ---------------------------------------------


def _frame() -> tuple[pd.DataFrame, list[object]]:
    """Group A: 12 patients, 8 cancer and 16 non-cancer images; group B: 2 cancer images."""
    rng = np.random.default_rng(1)
    rows, cells = [], []
    for i in range(12):
        for _view in ("CC", "MLO"):
            label = int(i < 4)
            rows.append((f"A{i}", label, float(np.clip(rng.normal(0.35 + 0.3 * label, 0.2), 0, 1))))
            cells.append("A")
    for i in range(2):
        rows.append((f"B{i}", 1, 0.9))
        cells.append("B")
    df = pd.DataFrame(rows, columns=["patient_id", "label", "probability"])
    return df, cells


def test_figures_and_intervals_per_group_equal_the_reference_computations():
    df, cells = _frame()
    table = subgroup_performance(df, cells, "Site", 0.5, min_images=2, min_patients=2, n_boot=300)
    g = table.groups.set_index("group")
    assert g.loc["A", "images"] == 24 and g.loc["A", "patients"] == 12
    assert (g.loc["A", "cancer_images"], g.loc["A", "non_cancer_images"]) == (8, 16)
    a = df[np.array(cells) == "A"]
    y, p = a["label"].to_numpy(), a["probability"].to_numpy()
    tp, tn = int(((p >= 0.5) & (y == 1)).sum()), int(((p < 0.5) & (y == 0)).sum())
    assert g.loc["A", "sensitivity"] == pytest.approx(tp / 8)
    assert (g.loc["A", "sensitivity_low"], g.loc["A", "sensitivity_high"]) == pytest.approx(
        wilson_interval(tp, 8)
    )
    assert g.loc["A", "specificity"] == pytest.approx(tn / 16)
    assert (g.loc["A", "specificity_low"], g.loc["A", "specificity_high"]) == pytest.approx(
        wilson_interval(tn, 16)
    )
    assert g.loc["A", "roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    ci = bootstrap_auc_intervals(y, p, a["patient_id"], n_boot=300)["roc_auc"]
    assert (g.loc["A", "roc_auc_low"], g.loc["A", "roc_auc_high"]) == pytest.approx(ci)
    assert g.loc["A", "roc_auc_low"] < g.loc["A", "roc_auc_high"]
    assert g.loc["A", "reason"] == ""
    # Group B: two cancer images, no non-cancer: no figure, and why.
    assert all(math.isnan(g.loc["B", c]) for c in ("sensitivity", "specificity", "roc_auc"))
    assert (
        g.loc["B", "reason"] == "too few cancer images (2) and non-cancer images (0) for a figure"
    )
    shown = table.display_df().set_index("Site")
    assert (
        shown.loc["B", "sensitivity (95% CI)"] == "" and "(" in shown.loc["A", "ROC-AUC (95% CI)"]
    )
    assert "Wilson" in table.describe() and "bootstrap over patients" in table.describe()
    out = json.loads(json.dumps(table.to_json(), allow_nan=False))
    assert [g["group"] for g in out["groups"]] == ["A", "B"] and out["groups"][1]["roc_auc"] is None
    assert out["groups"][0]["images"] == 24 and out["rule"] == table.rule


def test_a_group_with_enough_cancers_but_few_non_cancers_keeps_its_sensitivity():
    df = pd.DataFrame({
        "patient_id": [f"P{i}" for i in range(8)],
        "label": [1, 1, 1, 1, 1, 1, 0, 0],
        "probability": [0.9, 0.8, 0.7, 0.2, 0.6, 0.9, 0.1, 0.7],
    })  # fmt: skip
    g = subgroup_performance(df, ["x"] * 8, "Site", 0.5, min_patients=1).groups.iloc[0]
    assert g["sensitivity"] == pytest.approx(5 / 6) and not math.isnan(g["sensitivity_low"])
    assert math.isnan(g["specificity"]) and math.isnan(g["roc_auc"])
    assert g["reason"] == "too few non-cancer images (2) for specificity or ROC-AUC"


def test_predictions_of_which_no_workbook_row_was_found_are_refused_in_one_sentence():
    df, cells = _frame()
    with pytest.raises(UserError, match="choose the data root the bundle was trained on"):
        subgroup_performance(df, [None] * len(cells), "Site", 0.5, found=[False] * len(cells))
    table = subgroup_performance(df, cells, "Site", 0.5, found=[True] * 25 + [False])
    assert table.not_found == 1 and table.images == 26


# --- Columns offered ---------------------------------------------------------------------


def test_the_columns_offered_are_those_of_both_tables_without_keys_or_paths():
    cancer = ["InputFileName", "StudyDate", "StudyTime", "PatientID.x", "PatientID.y", "UniqueKey"]
    cancer += ["AbsolutePath", "FilePath", "ViewPosition", "Density", "PatientAge", "Only here"]
    cancer += ["density", "Unnamed: 3", ""]
    non_cancer = ["inputfilename", "ViewPosition", "PatientAge", "DENSITY", "FilePath", "Extra"]
    assert pickable_columns(cancer, non_cancer) == ["ViewPosition", "Density", "PatientAge"]


# --- The join on a real data root ----------------------------------------------------------


def _sheet(path, name) -> pd.DataFrame:
    """A sheet read with openpyxl, independently of the product's reader."""
    ws = load_workbook(path, read_only=True)[name]
    rows = list(ws.iter_rows(values_only=True))
    head = [str(h) for h in rows[0]]
    body = [list(r) + [None] * (len(head) - len(r)) for r in rows[1:]]  # short rows: empty cells
    return pd.DataFrame(body, columns=head)


@pytest.fixture(scope="module")
def tagged_root(small_demo, tmp_path_factory):
    """A copy of the small demo whose sheets carry a column ``RowTag``, distinct in every row."""

    def tag_rows(book) -> None:
        for k, name in enumerate((config.SHEET_CANCER, config.SHEET_NON_CANCER)):
            ws = book[name]
            col = ws.max_column + 1
            ws.cell(1, col, "RowTag")
            for r in range(2, ws.max_row + 1):
                ws.cell(r, col, f"T{k}-{(r * 7919) % 10007}")

    return demo_copy(small_demo, tmp_path_factory.mktemp("tagged") / "root", tag_rows)


def _expected(book: dict[int, pd.DataFrame], file: str, label: int, patient: str, column: str):
    """The cell of the first row (sheet order) of the image's sheet with its file name and
    patient: a lookup that does not use the manifest's row numbers."""
    df = book[label]
    names = df[config.COL_FILE].map(lambda v: file_name_key(str(v)) if v is not None else "")
    pids = df[config.COL_PATIENT].map(lambda v: str(v).strip().upper())
    stem = file_name_key(file.replace("\\", "/").rsplit("/", 1)[-1])
    hits = df[(names == stem) & (pids == patient)]
    assert len(hits) >= 1, (file, patient)
    return hits.iloc[0][column]


@pytest.mark.parametrize("column", ["RowTag", "ViewPosition", "PatientAge", "Manufacturer"])
def test_the_join_picks_each_validation_image_s_own_workbook_row(tagged_root, demo_bundle, column):
    match = read_data_root(tagged_root)
    preds = load_bundle(demo_bundle, with_model=False).val_predictions
    # The bundle was trained on the original folder: its paths are found by their relative path.
    assert not set(preds["file"]) & set(match.manifest["path"])
    got = image_values(tagged_root, match, preds["file"].tolist(), column)
    assert got["found"].all() and len(got) == len(preds)
    path = tagged_root / config.COMBINED_WORKBOOK
    book = {
        config.LABEL_CANCER: _sheet(path, config.SHEET_CANCER),
        config.LABEL_NON_CANCER: _sheet(path, config.SHEET_NON_CANCER),
    }
    for row, value in zip(preds.itertuples(), got["value"]):
        expected = _expected(book, row.file, row.label, str(row.patient_id), column)
        assert value == expected, (row.file, value, expected)
    if column == "RowTag":
        assert got["value"].nunique() == len(preds)  # every image its own row


def test_a_row_changed_after_the_match_is_not_used(small_demo, tmp_path):
    root = demo_copy(small_demo, tmp_path / "root")
    match = read_data_root(root)
    files = match.manifest["path"].tolist()
    victim = match.manifest.iloc[-1]  # a non-cancer row
    assert victim["label"] == config.LABEL_NON_CANCER

    def rename_victim(book) -> None:
        ws = book[victim["sheet"]]
        col = [c.value for c in ws[1]].index(config.COL_FILE) + 1
        ws.cell(int(victim["row"]), col, "RENAMED")

    edit_workbook(root / config.COMBINED_WORKBOOK, rename_victim)
    got = image_values(root, match, files, "Manufacturer")
    assert not got["found"].iat[-1] and got["value"].iat[-1] is None
    assert got["found"].iloc[:-1].all()


def _exports_root(tmp_path):
    """A data root of the user's exports: 1 cancer and 2 non-cancer images, column Density."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "CANCER.csv").write_text(
        "InputFileName,StudyDate,StudyTime,PatientID.x,AbsolutePath,Density,Only\n"
        "FILE0009,20150101,092603,P1,C:\\x\\a\\FILE0009.jpg,B,1\n"
        "FILE0001,20150101,092603,P1,C:\\x\\a\\FILE0001.jpg,C,2\n",
        encoding="utf-8",
    )
    head = ["InputFileName", "StudyDate", "StudyTime", "PatientID.x", "Density"]
    write_xlsx(
        root / "NON CANCER.csv",
        {"Sheet1": [head, ["FILE0002", 1, 1, "P2", "A"], ["FILE0003", 1, 1, "P3", None]]},
    )
    for rel in ("Cancer/a/FILE0001.jpg", "Non-Cancer/b/FILE0002.jpg", "Non-Cancer/b/FILE0003.jpg"):
        write_jpeg(root / rel)
    return root


def test_the_exports_are_read_for_the_column_when_the_match_read_them(tmp_path):
    root = _exports_root(tmp_path)
    match = read_data_root(root)
    assert match.source == "exports"
    assert workbook_columns(root, match.source) == ["Density"]
    files = [str(root / "Non-Cancer/b/FILE0003.jpg"), str(root / "Cancer/a/FILE0001.jpg")]
    files.append(str(root / "Non-Cancer/b/FILE0002.jpg"))
    got = image_values(root, match, files, "density")
    assert got["found"].all() and got["value"].tolist() == [None, "C", "A"]


def test_the_manifest_rows_of_files_by_path_then_relative_path():
    manifest = pd.DataFrame({
        "path": ["/data/Cancer/a/F1.jpg", "/data/Non-Cancer/b/F1.jpg"],
        "relpath": ["Cancer/a/F1.jpg", "Non-Cancer/b/F1.jpg"],
        "label": [1, 0],
        "key": ["F1-2020-1-P", "F1"],
        "row": [2, 7],
    })  # fmt: skip
    files = ["/data/Non-Cancer/b/F1.jpg", "/old/place/Cancer/a/F1.jpg", "/x/Cancer/z/F1.jpg"]
    rows = manifest_rows(files, manifest)
    assert rows["label"].tolist() == [0, 1, -1] and rows["row"].tolist() == [7, 2, -1]


def test_the_demo_workbook_offers_its_columns_but_not_its_keys(small_demo):
    root = small_demo[0]
    offered = workbook_columns(root)
    for wanted in ("PatientAge", "Manufacturer", "ViewPosition", "ImageLaterality", "KVP"):
        assert wanted in offered
    for key in ("InputFileName", "StudyDate", "StudyTime", "PatientID.x", "PatientID.y"):
        assert key not in offered
    path = root / config.COMBINED_WORKBOOK
    heads = [list(_sheet(path, s).columns) for s in (config.SHEET_CANCER, config.SHEET_NON_CANCER)]
    assert offered == pickable_columns(*heads)


def test_an_unknown_column_is_refused_in_one_sentence(small_demo):
    root = small_demo[0]
    match = read_data_root(root)
    with pytest.raises(UserError, match="no column 'Nope'"):
        image_values(root, match, match.manifest["path"].tolist()[:3], "Nope")


# --- Page 4 ---------------------------------------------------------------------------------


def _subgroup_frame(at):
    return next(d.value for d in at.dataframe if "PatientAge" in d.value.columns)


def test_page_4_shows_the_table_for_the_chosen_column_at_the_chosen_threshold(
    small_demo, bundles_dir
):
    root, _ = small_demo
    at = open_app(root, "pages/threshold.py")
    box = at.selectbox(key="thr_subgroup_col")
    assert "PatientAge" in box.options and "InputFileName" not in box.options
    assert not [d for d in at.dataframe if "PatientAge" in d.value.columns]  # nothing chosen yet
    box.set_value("PatientAge").run()
    assert not at.exception and not at.error, (at.exception, at.error)
    shown = _subgroup_frame(at)
    threshold = at.slider(key="thr_value").value
    match = read_data_root(root)
    preds = load_bundle(bundles_dir / "demo", with_model=False).val_predictions
    cells = image_values(root, match, preds["file"].tolist(), "PatientAge")
    table = subgroup_performance(preds, cells["value"].tolist(), "PatientAge", threshold)
    pd.testing.assert_frame_equal(
        shown.reset_index(drop=True), table.display_df(), check_dtype=False
    )
    assert set(shown["PatientAge"]) <= {"40-49", "50-59", "60-69", "70-79"}
    captions = " ".join(c.value for c in at.caption)
    assert "age by decade" in captions and "Wilson" in captions
    assert any("too few" in n for n in shown["note"]) or all(shown["note"] == "")
    # The table follows the threshold.
    at.slider(key="thr_value").set_value(0.0).run()
    after = _subgroup_frame(at)
    sens = [s for s in after["sensitivity (95% CI)"] if s]
    assert sens and all(s.startswith("100.0%") for s in sens)


def test_a_viewer_sees_the_subgroup_table(monkeypatch, small_demo, bundles_dir):
    monkeypatch.setenv("BCP_MODE", "demo")
    monkeypatch.setenv("BCP_DATA_ROOT", str(small_demo[0]))
    at = open_app(small_demo[0], "pages/threshold.py")
    at.selectbox(key="thr_subgroup_col").set_value("Manufacturer").run()
    assert not at.exception and not at.error
    shown = next(d.value for d in at.dataframe if "Manufacturer" in d.value.columns)
    assert shown["images"].sum() == len(
        load_bundle(bundles_dir / "demo", with_model=False).val_predictions
    )
    assert "patient_id" not in shown.columns


def test_page_4_on_a_data_root_without_the_bundle_s_images_says_so_and_keeps_the_rest(
    tmp_path, bundles_dir
):
    root = _exports_root(tmp_path)
    at = open_app(root, "pages/threshold.py")
    at.selectbox(key="thr_subgroup_col").set_value("Density").run()
    assert not at.exception
    assert "choose the data root the bundle was trained on" in at.error[0].value
    assert str(tmp_path) not in at.error[0].value
    assert at.slider(key="thr_value").value is not None  # the page above is drawn as before
    assert not [d for d in at.dataframe if "Density" in d.value.columns]


def test_an_analyst_adds_the_table_to_the_model_card_and_it_survives_a_threshold_save(
    small_demo, bundles_dir
):
    import json

    from bcp_core.model.bundle import update_threshold
    from bcp_core.model.card import CARD_FILE
    from bcp_core.output_safety import plain_markdown

    root, _ = small_demo
    run = bundles_dir / "run-7"
    shutil.copytree(bundles_dir / "demo", run)
    at = open_app(root, "pages/threshold.py", bundle=str(run))
    at.selectbox(key="thr_subgroup_col").set_value("PatientAge").run()
    shown = _subgroup_frame(at)
    at.button(key="thr_sub_card").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert any("Added to the model card" in s.value for s in at.success)
    stored = json.loads((run / META_FILE).read_text(encoding="utf-8"))["subgroups"]
    assert list(stored) == ["PatientAge"]
    assert [g["group"] for g in stored["PatientAge"]["groups"]] == shown["PatientAge"].tolist()
    card = (run / CARD_FILE).read_text(encoding="utf-8")
    assert "## Performance per subgroup" in card and "### PatientAge" in card
    for group in shown["PatientAge"]:
        assert f"| {plain_markdown(group)} |" in card  # escaped as every card value is
    update_threshold(run, 0.5, "manual")  # a later save keeps the table in bundle.json and card
    assert "### PatientAge" in (run / CARD_FILE).read_text(encoding="utf-8")
    # The demo bundle cannot be changed from the dashboard: no button there.
    demo = open_app(root, "pages/threshold.py")
    demo.selectbox(key="thr_subgroup_col").set_value("PatientAge").run()
    assert not [b for b in demo.button if b.key == "thr_sub_card"]
