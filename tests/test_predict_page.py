"""Page 5 (prediction) through AppTest: single upload, batch with broken files, DICOM, examples."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from bcp_core.data.datasource import read_data_root
from bcp_core.model.provenance import file_sha256
from tests.conftest import open_app


def open_predict_page(data_root) -> AppTest:
    return open_app(data_root, "pages/predict.py")


def demo_jpeg(root: Path, truth: dict, label: int) -> tuple[str, bytes]:
    image = next(i for i in truth["images"] if i["on_disk"] and i["label"] == label)
    path = root / image["relpath"]
    return path.name, path.read_bytes()


def test_upload_one_image_gives_probability_decision_and_heatmap(small_demo, bundles_dir):
    root, truth = small_demo
    at = open_predict_page(root)
    assert "not a medical device" in at.warning[0].value
    name, data = demo_jpeg(root, truth, 1)
    at.file_uploader(key="pred_upload").upload(name, data, "image/jpeg").run()
    assert not at.exception, at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "at threshold" in text and ("Cancer suspected" in text or "No cancer flagged" in text)
    assert len(at.get("image")) == 2  # the image and its Grad-CAM overlay
    assert any(
        c.proto.spec and "probability of cancer" in c.proto.spec for c in at.get("plotly_chart")
    )


def test_batch_upload_predicts_the_readable_and_names_the_broken(small_demo, bundles_dir):
    root, truth = small_demo
    good = demo_jpeg(root, truth, 0)
    from tests.conftest import blob_image

    breast = blob_image(False, np.random.default_rng(4), (40, 30))
    rgba = np.dstack([breast, breast, breast, np.full_like(breast, 200)])
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    files = [
        (good[0], good[1], "image/jpeg"),
        ("empty.jpg", b"", "image/jpeg"),
        ("notes.jpg", b"this is text, not a picture", "image/jpeg"),
        ("cut.jpg", good[1][:200], "image/jpeg"),
        ("alpha.png", buf.getvalue(), "image/png"),
        ("black.png", black_png(), "image/png"),
    ]
    at = open_predict_page(root)
    at.file_uploader(key="pred_upload").set_value(files).run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "probability" in d.value.columns)
    by_file = table.set_index("file")
    assert by_file.loc[good[0], "error"] == "" and 0 <= by_file.loc[good[0], "probability"] <= 1
    assert by_file.loc["alpha.png", "error"] == ""
    assert "empty (0 bytes)" in by_file.loc["empty.jpg", "error"]
    assert "text file" in by_file.loc["notes.jpg", "error"]
    assert "Cannot read cut.jpg" in by_file.loc["cut.jpg", "error"]
    assert "does not look like a mammogram: it is blank" in by_file.loc["black.png", "error"]
    assert np.isnan(by_file.loc["black.png", "probability"])


def black_png(shape=(120, 100)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros(shape, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_an_all_black_upload_is_no_mammogram_and_gets_no_decision(small_demo, bundles_dir):
    """Threat row 15: an all-black image got "Cancer suspected" (p = 0.56)."""
    at = open_predict_page(small_demo[0])
    at.file_uploader(key="pred_upload").upload("black.png", black_png(), "image/png").run()
    assert not at.exception, at.exception
    assert len(at.error) == 1  # shown as text: show_error escapes markdown's "." and ")"
    assert "this does not look like a mammogram: it is blank" in at.error[0].value
    text = " ".join(m.value for m in at.markdown)
    assert "Cancer suspected" not in text and "No cancer flagged" not in text


def test_more_files_than_a_batch_may_hold_are_refused_with_a_message(
    small_demo, bundles_dir, monkeypatch
):
    """Threat row 6: the files of one batch are limited (BCP_MAX_UPLOAD_FILES, default 32)."""
    root, truth = small_demo
    good = demo_jpeg(root, truth, 0)
    monkeypatch.setenv("BCP_MAX_UPLOAD_FILES", "2")
    at = open_predict_page(root)
    files = [(f"{i}_{good[0]}", good[1], "image/jpeg") for i in range(3)]
    at.file_uploader(key="pred_upload").set_value(files).run()
    assert not at.exception, at.exception
    assert "3 files chosen: at most 2 are predicted at once" in at.error[0].value
    assert not at.dataframe and not at.get("image")
    at.file_uploader(key="pred_upload").set_value(files[:2]).run()
    assert not at.error and at.dataframe


def test_the_page_caches_only_what_it_shows_within_its_byte_limit(
    small_demo, bundles_dir, monkeypatch
):
    """Threat row 6: 64 full-resolution entries held 3.2 GB; now uint8 images within a limit."""
    from bcp_core.inference.shown import ShownCache

    kept: list[ShownCache] = []
    original = ShownCache.get_or_make

    def spy(self, key, make):
        kept.append(self)
        return original(self, key, make)

    monkeypatch.setattr(ShownCache, "get_or_make", spy)
    monkeypatch.setenv("BCP_PREDICTION_CACHE_MB", "1")
    root, truth = small_demo
    at = open_predict_page(root)
    for label in (0, 1):
        name, data = demo_jpeg(root, truth, label)
        at.file_uploader(key="pred_upload").upload(name, data, "image/jpeg").run()
        assert not at.exception, at.exception
    cache = kept[-1]
    assert cache.max_bytes == 10**6 and 0 < cache.nbytes <= 10**6
    assert all(item.image.dtype == item.heatmap.dtype == np.uint8 for item in cache._items.values())


def dicom_breast() -> np.ndarray:
    """12-bit pixels of a right breast: a half-disc at the right edge with tissue-like texture
    (a flat one is refused as no mammogram)."""
    yy, xx = np.mgrid[0:200, 0:160]
    inside = ((xx - 159) / 130.0) ** 2 + ((yy - 100) / 90.0) ** 2 < 1
    texture = np.random.default_rng(5).normal(0, 300, inside.shape)
    return np.clip((3000 + texture) * inside, 0, 4095).astype(np.uint16)


def test_dicom_upload_shows_view_and_laterality(small_demo, bundles_dir):
    from tests.dicom_files import make_dicom  # the DICOM fixture builder

    root, _ = small_demo
    breast = dicom_breast()
    data = make_dicom(breast, bits_stored=12, ViewPosition="MLO", ImageLaterality="R")
    at = open_predict_page(root)
    at.file_uploader(key="pred_upload").upload("scan.dcm", data, "application/dicom").run()
    assert not at.exception, at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "view: MLO" in captions and "laterality: R" in captions


def test_example_button_predicts_a_validation_image(small_demo, bundles_dir):
    root, _ = small_demo
    at = open_predict_page(root)
    buttons = {b.key: b for b in at.button if str(b.key).startswith("pred_example")}
    # one button per class, told apart by the label (the demo's two files share a name)
    assert {k: b.label for k, b in buttons.items()} == {
        "pred_example_0": "Example: no cancer",
        "pred_example_1": "Example: cancer",
    }
    for key, truth in (("pred_example_0", "no cancer"), ("pred_example_1", "cancer")):
        help_text = buttons[key].help  # the file name, escaped for markdown
        pattern = rf"FILE\d+\\\.jpg, a validation image labelled {truth} in .*"
        assert re.fullmatch(pattern, help_text)
    at.button(key="pred_example_1").click().run()
    assert not at.exception, at.exception
    assert any("at threshold" in m.value for m in at.markdown)


BEACON = "![b](http://host/beacon.png).png"


def png_bytes() -> bytes:
    from tests.conftest import blob_image

    buf = io.BytesIO()
    Image.fromarray(blob_image(True, np.random.default_rng(1))).save(buf, format="PNG")
    return buf.getvalue()


def assert_markdown_fetches_nothing(at: AppTest) -> list[str]:
    from tests.test_output_safety import markdown_makes_a_request, markdown_sources

    sources = markdown_sources(at)
    for source in sources:
        assert not markdown_makes_a_request(source), source
    return sources


def test_an_upload_named_like_a_markdown_image_is_shown_as_its_name(small_demo, bundles_dir):
    """Threat row 13: the file name reaches a caption literally; the browser fetches nothing."""
    from tests.test_output_safety import render_markdown

    root, _ = small_demo
    at = open_predict_page(root)
    at.file_uploader(key="pred_upload").upload(BEACON, png_bytes(), "image/png").run()
    assert not at.exception, at.exception
    sources = assert_markdown_fetches_nothing(at)
    shown = [render_markdown(s) for s in sources]
    assert f"<p>{BEACON}</p>" in shown, "the name is still shown, as written"


def test_an_unreadable_upload_named_like_markdown_gives_a_literal_error(small_demo, bundles_dir):
    """Threat row 13: a user error naming the file is shown as text."""
    root, _ = small_demo
    at = open_predict_page(root)
    at.file_uploader(key="pred_upload").upload(BEACON, b"not a picture", "image/png").run()
    assert not at.exception, at.exception
    assert len(at.error) == 1
    assert_markdown_fetches_nothing(at)


def test_a_dicom_view_position_holding_markdown_is_shown_as_text(small_demo, bundles_dir):
    """Threat row 13: a DICOM header value reaches the caption literally."""
    from tests.dicom_files import new_dataset, to_bytes

    root, _ = small_demo
    breast = dicom_breast()
    ds = new_dataset()
    ds.set_pixel_data(breast, "MONOCHROME2", bits_stored=12)
    # ViewPosition as free text (LO): pydicom refuses such a value as a code string (CS).
    ds.add_new(0x00185101, "LO", "![v](http://host/v.png)")
    at = open_predict_page(root)
    at.file_uploader(key="pred_upload").upload("scan.dcm", to_bytes(ds), "application/dicom").run()
    assert not at.exception, at.exception
    assert any("view: " in c.value for c in at.caption)
    assert_markdown_fetches_nothing(at)


def test_the_results_csv_quotes_a_file_name_that_is_a_formula(small_demo, bundles_dir, monkeypatch):
    """Threat row 11: an upload named like a DDE formula leaves the CSV as text."""
    import csv

    from tests.test_output_safety import (
        assert_no_formula_cells,
        download_text,
        keep_media_storages,
    )

    kept = keep_media_storages(monkeypatch)
    root, _ = small_demo
    formula = "+cmd|' /C calc'!A0.png"
    files = [(formula, png_bytes(), "image/png"), (BEACON, png_bytes(), "image/png")]
    at = open_predict_page(root)
    at.file_uploader(key="pred_upload").set_value(files).run()
    assert not at.exception, at.exception
    text = download_text(at, kept, "Download results (CSV)")
    names = [row["file"] for row in csv.DictReader(io.StringIO(text))]
    assert names == ["'" + formula, BEACON]
    assert_no_formula_cells(text)
    assert_markdown_fetches_nothing(at)


def test_test_time_passes_show_the_range_and_the_uncertain_column(small_demo, bundles_dir):
    root, truth = small_demo
    at = open_predict_page(root)
    assert at.select_slider(key="pred_passes").value == 1
    name, data = demo_jpeg(root, truth, 1)
    at.select_slider(key="pred_passes").set_value(4).run()
    at.file_uploader(key="pred_upload").upload(name, data, "image/jpeg").run()
    assert not at.exception, at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "Mean of 4 passes; they ranged from" in captions
    other = demo_jpeg(root, truth, 0)
    files = [(name, data, "image/jpeg"), (other[0], other[1], "image/jpeg")]
    at.file_uploader(key="pred_upload").set_value(files).run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "probability" in d.value.columns)
    assert {"probability_low", "probability_high", "uncertain"} <= set(table.columns)
    assert (table["probability_low"] <= table["probability"]).all()
    assert (table["probability"] <= table["probability_high"]).all()
    assert (table["passes"] == 4).all()


def test_the_passes_start_at_each_chosen_bundles_own(small_demo, bundles_dir):
    """A choice made for one model does not carry over to another: a bundle scored with 4
    passes (its threshold chosen on them) starts at 4 after one with 1 pass was set to 2."""
    import json
    import shutil

    from dashboard.shared import KEY_BUNDLE

    root, _ = small_demo
    four = bundles_dir / "four-passes"
    shutil.copytree(bundles_dir / "demo", four)
    meta = json.loads((four / "bundle.json").read_text(encoding="utf-8"))
    (four / "bundle.json").write_text(json.dumps({**meta, "passes": 4}), encoding="utf-8")
    at = open_predict_page(root)
    at.session_state[KEY_BUNDLE] = str(bundles_dir / "demo")
    at.run()
    assert at.select_slider(key="pred_passes").value == 1
    at.select_slider(key="pred_passes").set_value(2).run()
    assert at.select_slider(key="pred_passes").value == 2  # kept while the bundle stays
    at.session_state[KEY_BUNDLE] = str(four)
    at.run()
    assert not at.exception, at.exception
    assert at.select_slider(key="pred_passes").value == 4


def test_a_file_that_is_not_an_image_gets_a_sentence_in_the_results(small_demo, bundles_dir):
    """The uploader takes any file, so the server (not a MIME-type chip) says what is wrong."""
    root, truth = small_demo
    image = next(i for i in truth["images"] if i["on_disk"])
    at = open_app(root, "pages/predict.py")
    files = [
        ("notes.txt", b"not a picture", "text/plain"),
        ("scan.jpg", (root / image["relpath"]).read_bytes(), "image/jpeg"),
    ]
    at.file_uploader(key="pred_upload").set_value(files).run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "probability" in d.value.columns)
    error = table.loc[table["file"] == "notes.txt", "error"].iloc[0]
    assert error == "Cannot read notes.txt as an image: it is a text file, not a picture."
    assert table.loc[table["file"] == "scan.jpg", "error"].iloc[0] == ""  # no None
    assert str(table["label"].dtype) == "Int64"


def test_a_film_the_model_trained_on_is_named_so_and_the_workbook_gives_its_view(
    small_demo, bundles_dir
):
    from tests.test_provenance import expected_splits

    root, _ = small_demo
    expected = expected_splits(root, bundles_dir / "demo")
    manifest = read_data_root(root).manifest
    split = [expected[file_sha256(p)] for p in manifest["path"]]
    trained = manifest[[s == "train" for s in split]].iloc[0]
    validated = manifest[[s == "val" for s in split]].iloc[0]
    data = Path(trained["path"]).read_bytes()

    at = open_predict_page(root)
    at.file_uploader(key="pred_upload").upload(Path(trained["path"]).name, data, "image/jpeg")
    at.run()
    assert not at.exception, at.exception
    assert any("one the model trained on" in w.value for w in at.warning)
    captions = " ".join(c.value for c in at.caption)  # from the workbook: the name does not say
    assert f"view: {trained['view']}" in captions
    assert f"laterality: {trained['laterality']}" in captions

    files = [
        (Path(p).name, Path(p).read_bytes(), "image/jpeg")
        for p in (trained["path"], validated["path"])
    ]
    at = open_predict_page(root)
    at.file_uploader(key="pred_upload").set_value(files).run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "probability" in d.value.columns)
    assert list(table["seen_in"]) == ["training split", "validation split"]
    assert list(table["view"]) == [trained["view"], validated["view"]]
    assert list(table["laterality"]) == [trained["laterality"], validated["laterality"]]


def test_the_page_reads_the_upload_pixel_setting_and_names_an_unusable_one(
    small_demo, bundles_dir, monkeypatch
):
    """Settings at the edge: the page reads BCP_MAX_UPLOAD_PIXELS once there are files and
    passes it down; an unusable value is named in one sentence, and nothing is predicted."""
    import re

    root, truth = small_demo
    name, data = demo_jpeg(root, truth, 1)
    width, height = Image.open(io.BytesIO(data)).size
    monkeypatch.setenv("BCP_MAX_UPLOAD_PIXELS", str(width * height - 1))
    at = open_predict_page(root)
    at.file_uploader(key="pred_upload").upload(name, data, "image/jpeg").run()
    assert not at.exception, at.exception
    shown = [re.sub(r"\\(.)", r"\1", e.value) for e in at.error]
    assert shown == [
        f"{name} declares {width} x {height} pixels, more than the {width * height - 1:,} an "
        "uploaded mammogram may have (BCP_MAX_UPLOAD_PIXELS); it is refused before decoding. "
        "Upload it at a smaller size."
    ]
    monkeypatch.setenv("BCP_MAX_UPLOAD_PIXELS", "abc")
    at = open_predict_page(root)
    assert not at.error  # no file yet: the setting is not read
    files = [(name, data, "image/jpeg"), (f"2_{name}", data, "image/jpeg")]
    for chosen in (files[:1], files):  # one file, then a batch
        at.file_uploader(key="pred_upload").set_value(chosen).run()
        assert not at.exception, at.exception
        shown = [re.sub(r"\\(.)", r"\1", e.value) for e in at.error]
        assert shown == ["BCP_MAX_UPLOAD_PIXELS must be a whole number of at least 1, got 'abc'."]
        assert not at.dataframe and not at.get("image")
