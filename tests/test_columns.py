"""A model on the image plus workbook columns: the leakage guard, the encoding, training on a real
demo data root, prediction with the values (CLI and page 5), and what refuses such a model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from bcp_core import config
from bcp_core.cli import main
from bcp_core.config import TrainConfig
from bcp_core.data.attributes import metadata_frame
from bcp_core.data.datasource import read_data_root
from bcp_core.errors import UserError
from bcp_core.inference.inputs import read_metadata_csv
from bcp_core.inference.predict import predict_files, predict_one
from bcp_core.model.bundle import load_bundle
from bcp_core.model.columns import (
    LEAK_AUC,
    MetadataEncoder,
    check_leakage,
    fit_encoder,
)
from bcp_core.model.meta import METADATA_BUNDLE_FORMAT, BundleMeta
from bcp_core.model.training import train_model
from tests.conftest import demo_copy, tiny_train_argv

COLUMNS = ("PatientAge", "Manufacturer")


# --- The guard and the encoding -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["BIRADS", "BI-RADS assessment", "Pathology result", "Biopsy", "Malignancy", "Lesion"]
)
def test_a_column_named_like_a_finding_is_refused_by_name(name):
    values = pd.DataFrame({name: ["1", "2", "3", "4"]})
    with pytest.raises(UserError, match=f"Column '{name}' is refused: its name says"):
        check_leakage(values, [0, 1, 0, 1])


def test_a_column_that_alone_separates_the_classes_is_refused_with_its_auc():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    numeric = pd.DataFrame({"Score": labels * 10 + rng.normal(0, 1, 200)})
    with pytest.raises(UserError, match=r"Column 'Score' is refused: .* \(ROC-AUC 1\.00"):
        check_leakage(numeric, labels)
    text = pd.DataFrame({"Remark": np.where(labels == 1, "seen", "clear")})
    with pytest.raises(UserError, match="Column 'Remark' is refused"):
        check_leakage(text, labels)  # text: scored by each value's share of cancer images
    inverted = pd.DataFrame({"Score": -labels * 10.0})
    with pytest.raises(UserError, match="ROC-AUC 1.00"):
        check_leakage(inverted, labels)  # either direction


def test_a_weak_risk_factor_passes_the_guard():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    age = 50 + 8 * labels + rng.normal(0, 12, 400)  # older women a little more often positive
    values = pd.DataFrame({"PatientAge": [f"{int(a):03d}Y" for a in age], "Site": "A"})
    check_leakage(values, labels)  # no error: AUC well below LEAK_AUC
    assert LEAK_AUC == 0.95


def test_the_encoder_learns_numbers_ages_and_text_and_marks_the_missing():
    train = pd.DataFrame(
        {
            "PatientAge": ["040Y", "050Y", "060Y", None, "070Y"] * 3,
            "Manufacturer": ["GE", "GE", "Hologic", "Hologic", "GE"] * 3,
            "KVP": [None] * 15,
        }
    )
    encoder = fit_encoder(train)
    kinds = {c.name: c.kind for c in encoder.columns}
    assert kinds == {"PatientAge": "numeric", "Manufacturer": "text", "KVP": "text"}
    age = encoder.columns[0]
    assert age.mean == pytest.approx(55.0) and age.std > 0
    assert encoder.columns[1].categories == ("ge", "hologic")
    row = encoder.encode_row({"PatientAge": "055Y", "Manufacturer": " hologic "})
    assert row.dtype == np.float32 and row.shape == (encoder.width,) == (2 + 4 + 2,)
    np.testing.assert_allclose(row[:2], [0.0, 0.0], atol=1e-6)  # the mean age, not missing
    assert row[2:6].tolist() == [0.0, 1.0, 0.0, 0.0]  # hologic
    unknown = encoder.encode_row({"Manufacturer": "Siemens"})
    assert unknown[:2].tolist() == [0.0, 1.0] and unknown[2:6].tolist() == [0.0, 0.0, 1.0, 0.0]
    again = MetadataEncoder.from_json(json.loads(json.dumps(encoder.to_json())))
    assert again == encoder
    with pytest.raises(UserError, match="damaged 'metadata'"):
        MetadataEncoder.from_json({"columns": [{"name": "x", "kind": "picture"}]})


# --- Reading the columns ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_sheet_root(small_demo, tmp_path_factory):
    """A copy of the small demo whose Cancer sheet alone has a column ``Recalled``."""

    def add_recalled(book) -> None:
        ws = book[config.SHEET_CANCER]
        ws.cell(1, ws.max_column + 1, "Recalled")

    return demo_copy(small_demo, tmp_path_factory.mktemp("one-sheet") / "root", add_recalled)


def test_a_column_of_one_sheet_only_is_refused(one_sheet_root):
    match = read_data_root(one_sheet_root)
    files = match.manifest["path"].astype(str).tolist()[:3]
    with pytest.raises(UserError, match="'Recalled' is refused: it is not on both"):
        metadata_frame(one_sheet_root, match, files, ["Recalled"])
    found = metadata_frame(one_sheet_root, match, files, list(COLUMNS))
    assert list(found.columns) == list(COLUMNS) and len(found) == 3


# --- Training and prediction --------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_values(small_demo):
    root, _ = small_demo
    match = read_data_root(root)
    files = match.manifest["path"].astype(str).tolist()
    return match.manifest, metadata_frame(root, match, files, list(COLUMNS))


@pytest.fixture(scope="module")
def metadata_bundle(demo_values, tmp_path_factory):
    manifest, values = demo_values
    out = tmp_path_factory.mktemp("metadata") / "with-columns"
    cfg = TrainConfig(
        model="seed_cnn", epochs=1, image_size=(64, 48), batch_size=16, seed=3,
        metadata_columns=COLUMNS,
    )  # fmt: skip
    train_model(manifest, cfg, out, metadata=values)
    return out


def rows_of(demo_values, files) -> dict[str, dict]:
    manifest, values = demo_values
    index = {p: i for i, p in enumerate(manifest["path"].astype(str))}
    return {f: values.iloc[index[f]].to_dict() for f in files}


def test_training_records_the_columns_and_their_encoding(metadata_bundle):
    bundle = load_bundle(metadata_bundle)
    assert bundle.meta.format_version == METADATA_BUNDLE_FORMAT
    assert bundle.meta.training["metadata_columns"] == list(COLUMNS)
    encoder = bundle.metadata_encoder
    assert encoder is not None and encoder.names == list(COLUMNS)
    assert [c.kind for c in encoder.columns] == ["numeric", "text"]
    assert [i.name for i in bundle.model.inputs] == ["image", "metadata"]
    assert bundle.model.inputs[1].shape[-1] == encoder.width


def test_prediction_with_the_values_repeats_the_validation_scores(metadata_bundle, demo_values):
    bundle = load_bundle(metadata_bundle)
    val = bundle.val_predictions
    files = val["file"].astype(str).tolist()[:8]
    results = predict_files(bundle, files, metadata=rows_of(demo_values, files), batch_size=3)
    np.testing.assert_allclose([r.probability for r in results], val["probability"][:8], atol=1e-5)
    missing = predict_files(bundle, files[:2], metadata=rows_of(demo_values, files[:1]))
    assert missing[0].ok and not missing[1].ok
    assert "also takes workbook values (PatientAge, Manufacturer)" in missing[1].error
    with pytest.raises(UserError, match="none were given for this image"):
        predict_one(bundle, files[0])
    one = predict_one(bundle, files[0], metadata=rows_of(demo_values, files[:1])[files[0]])
    assert one.prediction.probability == pytest.approx(val["probability"][0], abs=1e-5)
    assert one.heatmap is not None and one.heatmap.shape == one.gray.shape
    spread = predict_files(bundle, files[:2], metadata=rows_of(demo_values, files), passes=4)
    assert all(r.passes == 4 and r.probability_low <= r.probability_high for r in spread)


def test_a_leaking_column_stops_training_before_it_starts(small_demo, tmp_path):
    root, _ = small_demo
    manifest = read_data_root(root).manifest
    leak = pd.DataFrame({"Score": manifest["label"].to_numpy() * 5.0})
    cfg = TrainConfig(model="seed_cnn", epochs=1, image_size=(64, 48), metadata_columns=("Score",))
    with pytest.raises(UserError, match="Column 'Score' is refused"):
        train_model(manifest, cfg, tmp_path / "leak", metadata=leak)
    assert not (tmp_path / "leak").exists()
    with pytest.raises(UserError, match="needs their values for every image"):
        train_model(manifest, cfg, tmp_path / "none")


def test_cli_trains_on_columns_and_predicts_with_a_csv(small_demo, demo_values, tmp_path, capsys):
    root, _ = small_demo
    out = tmp_path / "cli"
    argv = tiny_train_argv(root, out, "--epochs", "1", "--metadata-columns", *COLUMNS, "--json")
    capsys.readouterr()
    assert main(argv) == 0
    val = load_bundle(out).val_predictions
    files = val["file"].astype(str).tolist()[:3]
    table = pd.DataFrame([{"file": f, **row} for f, row in rows_of(demo_values, files).items()])
    csv = tmp_path / "values.csv"
    table.to_csv(csv, index=False)
    assert set(read_metadata_csv(csv)) == set(files)
    capsys.readouterr()
    assert main(["predict", "--bundle", str(out), *files, "--metadata", str(csv), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose([r["probability"] for r in found], val["probability"][:3], atol=1e-5)
    assert main(["predict", "--bundle", str(out), files[0], "--json"]) == 2  # no values given
    assert (
        main(["export", "--bundle", str(out), "--format", "litert", "--out", str(tmp_path / "x")])
        == 2
    )
    assert "image-only models so far" in capsys.readouterr().err
    refused = [*argv[:-4], "--metadata-columns", "Nope", "--json"]
    assert main(refused) == 2
    assert "'Nope' is refused: it is not on both" in capsys.readouterr().err


def test_a_format_1_reader_is_told_to_update():
    data = {"format_version": METADATA_BUNDLE_FORMAT + 1, "preprocessing": {}, "threshold": {},
            "model_name": "seed_cnn"}  # fmt: skip
    with pytest.raises(UserError, match="written by a newer version"):
        BundleMeta.from_json(data)


def test_page_5_asks_for_the_values_and_predicts_with_them(small_demo, metadata_bundle, tmp_path,
                                                           monkeypatch, demo_values):  # fmt: skip
    from tests.conftest import open_app

    folder = tmp_path / "bundles"
    shutil.copytree(metadata_bundle, folder / "demo")
    monkeypatch.setenv("BCP_BUNDLES_DIR", str(folder))
    root, _ = small_demo
    at = open_app(root, "pages/predict.py")
    assert "also takes workbook values" in " ".join(m.value for m in at.markdown)
    val = load_bundle(metadata_bundle).val_predictions
    file = str(val["file"][0])
    row = rows_of(demo_values, [file])[file]
    at.number_input(key="pred_meta_0").set_value(float(str(row["PatientAge"]).rstrip("Y")))
    at.selectbox(key="pred_meta_1").set_value(str(row["Manufacturer"]).strip().casefold())
    with open(file, "rb") as fh:
        at.file_uploader(key="pred_upload").upload("one.jpg", fh.read(), "image/jpeg").run()
    assert not at.exception, at.exception
    text = " ".join(m.value for m in at.markdown)
    assert f"(probability {val['probability'][0]:.4f})" in text


def test_page_3_offers_the_columns_and_starts_a_run_with_their_values(
    small_demo, tmp_path, monkeypatch, idle_jobs
):
    from tests.conftest import fill_tiny_training_form, open_app

    monkeypatch.setenv("BCP_BUNDLES_DIR", str(tmp_path / "bundles"))
    root, _ = small_demo
    at = open_app(root, "pages/training.py")
    offered = at.multiselect(key="tr_metadata").options
    assert "PatientAge" in offered and "Manufacturer" in offered
    assert not any(c in offered for c in ("InputFileName", "StudyDate", "AbsolutePath"))
    fill_tiny_training_form(at)
    at.multiselect(key="tr_metadata").set_value(["ViewPosition"])
    at.button(key="tr_start").click().run()
    assert not at.exception, at.exception
    job = idle_jobs.current  # stopped after the test
    assert job is not None and job.cfg.metadata_columns == ("ViewPosition",)
    assert job.metadata is not None and list(job.metadata.columns) == ["ViewPosition"]


def test_the_model_card_names_the_columns(metadata_bundle):
    card = (metadata_bundle / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Also takes the workbook column PatientAge: a number, standardised" in card
    assert "Also takes the workbook column Manufacturer: one of" in card
