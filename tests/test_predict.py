"""Prediction: preprocessing parity, batch prediction over odd files, views, per-breast results."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bcp_core.config import PreprocessSpec, TrainConfig
from bcp_core.errors import UserError
from bcp_core.imaging.preparation import preprocess_image
from bcp_core.inference import predict
from bcp_core.inference.inputs import expand_inputs
from bcp_core.inference.predict import predict_files, predict_one
from bcp_core.inference.prepared import parse_view_from_name, prepare_image
from bcp_core.inference.results import (
    RESULT_COLUMNS,
    Prediction,
    breast_results_df,
    results_df,
)
from bcp_core.model.bundle import load_bundle
from bcp_core.model.training import train_model
from tests.conftest import blob_image, on_padded_canvas
from tests.dicom_files import make_dicom

SPEC = PreprocessSpec(64, 48)


@pytest.fixture(scope="module")
def bundle_dir(tiny_manifest, tmp_path_factory) -> Path:
    """A seed-CNN bundle trained for one epoch on the 40 tiny JPEGs."""
    out = tmp_path_factory.mktemp("predict") / "tiny"
    cfg = TrainConfig(
        model="seed_cnn", epochs=1, image_size=(64, 48), batch_size=8, val_fraction=0.3, seed=1
    )
    train_model(tiny_manifest, cfg, out)
    return out


@pytest.fixture(scope="module")
def bundle(bundle_dir):
    return load_bundle(bundle_dir)


def right_breast(size=(90, 70)) -> np.ndarray:
    """A uint8 breast touching the right edge, so orientation flips it."""
    return blob_image(True, np.random.default_rng(1), size)[:, ::-1].copy()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


# --- Parity with the training preprocessing -------------------------------------------------


def parity_sources(tmp_path: Path, tiny_manifest) -> list[Path]:
    rng = np.random.default_rng(0)
    big = tmp_path / "big.jpg"  # large enough for reduced-scale (draft) JPEG decoding
    Image.fromarray(blob_image(True, rng, (600, 480))).save(big, quality=90)
    right = tmp_path / "right.png"
    Image.fromarray(right_breast()).save(right)
    deep = tmp_path / "deep.png"  # 16-bit PNG
    Image.fromarray(right_breast().astype(np.uint16) * 16).save(deep)
    dcm = tmp_path / "scan.dcm"
    dcm.write_bytes(make_dicom(right_breast().astype(np.uint16) * 16, bits_stored=12))
    return [Path(tiny_manifest["path"][0]), big, right, deep, dcm]


@pytest.mark.parametrize(
    "spec",
    [
        SPEC,
        PreprocessSpec(48, 64, crop=False),
        PreprocessSpec(64, 48, orient=False),
        PreprocessSpec(64, 48, contrast="clahe"),
    ],
)
def test_prepared_input_is_byte_identical_to_preprocess_image(tmp_path, tiny_manifest, spec):
    for path in parity_sources(tmp_path, tiny_manifest):
        expected = preprocess_image(path, spec)
        prepared = prepare_image(path, spec)
        assert prepared.net_input.dtype == expected.dtype == np.float32
        assert prepared.net_input.tobytes() == expected.tobytes(), path.name
        from_bytes = prepare_image(path.read_bytes(), spec, name=path.name)
        assert from_bytes.net_input.tobytes() == expected.tobytes(), path.name


def demo_sources(small_demo, tmp_path: Path) -> list[Path]:
    """Demo mammograms as JPG (left and right breasts), 8- and 16-bit PNG, and DICOM."""
    root, truth = small_demo
    on_disk = [i for i in truth["images"] if i["on_disk"]]
    jpegs = [
        root / next(i["relpath"] for i in on_disk if i["laterality"] == side and i["label"] == y)
        for side in ("L", "R")
        for y in (0, 1)
    ]
    pixels = np.asarray(Image.open(jpegs[1]).convert("L"), np.uint16) * 16
    png8, png16, dcm = tmp_path / "film.png", tmp_path / "film16.png", tmp_path / "film.dcm"
    Image.open(jpegs[0]).convert("L").save(png8)
    Image.fromarray(pixels).save(png16)
    dcm.write_bytes(make_dicom(pixels, bits_stored=12, ImageLaterality="R"))
    return [*jpegs, png8, png16, dcm]


def test_training_and_prediction_inputs_of_demo_films_are_equal_arrays(small_demo, tmp_path):
    """The tf.data loader, preprocess_image and the prediction path give the same input."""
    from bcp_core.model.dataset import image_dataset

    sources = demo_sources(small_demo, tmp_path)
    loaded = next(iter(image_dataset(sources, None, SPEC, batch_size=len(sources)))).numpy()
    for path, from_loader in zip(sources, loaded):
        expected = preprocess_image(path, SPEC)
        assert expected.shape == (64, 48, 1) and expected.max() > 0.1, path.name
        np.testing.assert_array_equal(prepare_image(path, SPEC).net_input, expected)
        from_bytes = prepare_image(path.read_bytes(), SPEC, name=path.name).net_input
        np.testing.assert_array_equal(from_bytes, expected)
        np.testing.assert_array_equal(from_loader, expected)


def test_geometry_records_flip_and_crop(tmp_path):
    path = tmp_path / "right.png"
    Image.fromarray(right_breast()).save(path)
    prepared = prepare_image(path, SPEC)
    geo = prepared.geometry
    assert geo.flipped and geo.original_shape == prepared.gray.shape
    top, bottom, left, right = geo.crop_box
    assert right == prepared.gray.shape[1]  # the breast touches the right edge
    assert 0 < left < right and 0 <= top < bottom <= prepared.gray.shape[0]
    assert prepared.heatmap_on_image(np.ones((64, 48), np.float32)).shape == prepared.gray.shape


def test_prediction_json_is_the_command_line_object():
    scored = Prediction("a.jpg", 0.25, 0, 0.5, view="CC", laterality="L")
    assert list(scored.to_json()) == ["file", "probability", "label", "threshold", "view",
                                      "laterality"]  # fmt: skip
    assert scored.ok and scored.probability == 0.25
    assert Prediction("b.jpg", 0.75, 1, 0.5, laterality="R").to_json() == {
        "file": "b.jpg", "probability": 0.75, "label": 1, "threshold": 0.5, "laterality": "R"
    }  # fmt: skip
    failed = Prediction("c.jpg", error="Cannot read c.jpg.")
    assert not failed.ok and failed.to_json() == {"file": "c.jpg", "error": "Cannot read c.jpg."}
    assert failed.probability is None and "probability" not in failed.to_json()
    table = results_df([scored, failed])
    assert list(table.columns) == list(RESULT_COLUMNS)
    assert table["view"].tolist() == ["CC", ""] and table["error"].tolist() == ["", failed.error]


# --- Batch prediction ---------------------------------------------------------------------------


@pytest.fixture()
def odd_folder(tmp_path, tiny_manifest) -> Path:
    """Good images beside broken ones, in a folder with a subfolder and a hidden file."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(tiny_manifest["path"][0], folder / "a_good_L-CC.jpg")
    shutil.copy(tiny_manifest["path"][1], folder / "sub" / "b_good.jpg")
    (folder / "c_empty.jpg").write_bytes(b"")
    data = Path(tiny_manifest["path"][2]).read_bytes()
    (folder / "d_truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "e_text.jpg").write_text("not an image\n", encoding="utf-8")
    (folder / "f_huge.png").write_bytes(png_declaring(100_000, 100_000))
    gray = blob_image(False, np.random.default_rng(2), (64, 52))
    Image.fromarray(gray).convert("CMYK").save(folder / "g_cmyk.jpg")
    Image.fromarray(gray).convert("LA").save(folder / "h_alpha.png")
    (folder / "i_scan.dcm").write_bytes(
        make_dicom(gray.astype(np.uint16) * 16, bits_stored=12, ViewPosition="MLO",
                   ImageLaterality="R", PatientID="never-shown")
    )  # fmt: skip
    (folder / ".hidden.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("skipped: not an image suffix", encoding="utf-8")
    return folder


def test_predict_files_reports_bad_files_and_predicts_the_rest(bundle, odd_folder):
    paths = expand_inputs([odd_folder, odd_folder / "missing.jpg"])
    names = [p.name for p in paths]
    relpaths = [p.relative_to(odd_folder).as_posix() for p in paths[:-1]]
    assert relpaths == sorted(relpaths) and "sub/b_good.jpg" in relpaths
    assert ".hidden.jpg" not in names
    assert "notes.txt" not in names and names[-1] == "missing.jpg"
    results = predict_files(bundle, paths, batch_size=3)
    by_name = {Path(r.file).name: r for r in results}
    assert [Path(r.file).name for r in results] == names  # one result per input, in order
    errors = {
        "c_empty.jpg": "Cannot read c_empty.jpg",
        "d_truncated.jpg": "Cannot read d_truncated.jpg",
        "e_text.jpg": "Cannot read e_text.jpg",
        "f_huge.png": "decompression bomb",
        "missing.jpg": "File not found",
    }
    for name, sentence in errors.items():
        bad = by_name[name]
        assert set(bad.to_json()) == {"file", "error"} and sentence in bad.error
        assert not bad.ok and bad.probability is None
    for name in ("a_good_L-CC.jpg", "b_good.jpg", "g_cmyk.jpg", "h_alpha.png", "i_scan.dcm"):
        result = by_name[name]
        assert result.ok and 0.0 <= result.probability <= 1.0
        assert result.threshold == bundle.threshold
        assert result.label == int(result.probability >= bundle.threshold)
    assert (by_name["a_good_L-CC.jpg"].view, by_name["a_good_L-CC.jpg"].laterality) == ("CC", "L")
    assert (by_name["i_scan.dcm"].view, by_name["i_scan.dcm"].laterality) == ("MLO", "R")
    assert "never-shown" not in repr(results)
    assert "view" not in by_name["b_good.jpg"].to_json()


def test_threshold_uses_the_greater_or_equal_convention(bundle, tiny_manifest):
    path = tiny_manifest["path"][0]
    probability = predict_files(bundle, [path])[0].probability
    at = predict_files(bundle, [path], threshold=probability)[0]
    above = predict_files(bundle, [path], threshold=min(1.0, probability + 1e-6))[0]
    assert (at.label, at.threshold) == (1, probability)
    assert above.label == 0
    with pytest.raises(UserError, match="between 0 and 1"):
        predict_files(bundle, [path], threshold=1.5)


def test_uploads_stream_in_batches_with_progress(bundle, tiny_manifest, monkeypatch):
    paths = list(tiny_manifest["path"][:7])
    uploads = [(f"up{i}_RMLO.jpg", Path(p).read_bytes()) for i, p in enumerate(paths)]
    seen_batches, progress = [], []
    original = predict._probabilities

    def spy(model, inputs, passes=1, values=None):
        seen_batches.append(len(inputs))
        return original(model, inputs, passes, values)

    monkeypatch.setattr(predict, "_probabilities", spy)
    results = predict_files(
        bundle, uploads, batch_size=3, on_progress=lambda d, t: progress.append((d, t))
    )
    assert [r.file for r in results] == [name for name, _ in uploads]
    assert seen_batches == [3, 3, 1] and progress == [(3, 7), (6, 7), (7, 7)]
    assert all((r.view, r.laterality) == ("MLO", "R") for r in results)
    from_paths = predict_files(bundle, paths)
    np.testing.assert_allclose(
        [r.probability for r in results], [r.probability for r in from_paths], atol=1e-6
    )


def test_model_is_loaded_on_demand(bundle_dir, tiny_manifest):
    lazy = load_bundle(bundle_dir, with_model=False)
    assert predict_files(lazy, [tiny_manifest["path"][0]])[0].probability is not None


def test_predict_one_gives_a_heatmap_on_the_decoded_image(bundle, tmp_path):
    path = tmp_path / "left_mlo.png"
    Image.fromarray(right_breast()).save(path)
    result = predict_one(bundle, path)
    batch = predict_files(bundle, [path])[0]
    p = result.prediction
    assert p.probability == pytest.approx(batch.probability, abs=1e-6)
    assert p.label == int(p.probability >= p.threshold)
    assert result.header == {"view": "MLO", "laterality": "L"}
    assert result.heatmap.shape == result.gray.shape == (90, 70)
    assert result.input_heatmap.shape == (64, 48)
    assert np.isfinite(result.heatmap).all() and 0 <= result.heatmap.min()
    assert result.heatmap.max() <= 1
    quick = predict_one(bundle, path.read_bytes(), "x.png", with_heatmap=False, threshold=0.0)
    assert quick.heatmap is None and quick.prediction.label == 1
    assert quick.prediction.file == "x.png"
    with pytest.raises(UserError, match="Cannot read"):
        predict_one(bundle, b"junk", "junk.jpg")


# --- Views from file names and per-breast results ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "view", "side"),
    [
        ("P01_L-CC.jpg", "CC", "L"),
        ("p01_r-cc.png", "CC", "R"),
        ("scan L-MLO 3.dcm", "MLO", "L"),
        ("R-MLO.jpg", "MLO", "R"),
        ("0042LCC.jpg", "CC", "L"),
        ("RMLO_2019.jpg", "MLO", "R"),
        ("left_cc.jpg", "CC", "L"),
        ("Right MLO.jpeg", "MLO", "R"),
        ("img_CC_R.jpg", "CC", "R"),
        ("mlo-left.png", "MLO", "L"),
        ("study_mlo.jpg", "MLO", ""),
        ("right breast.jpg", "", "R"),
        ("FILE0004.jpg", "", ""),
        ("access_log.jpg", "", ""),
        ("rccx.jpg", "", ""),
        ("10130_136033_png.rf.2a2e24224e092cc5092.jpg", "", ""),  # "cc" inside a hash
        ("P01_CC2.jpg", "CC", ""),
    ],
)
def test_parse_view_from_name(name, view, side):
    assert parse_view_from_name(name) == {"view": view, "laterality": side}


def result(side: str, view: str, probability: float, threshold: float = 0.5) -> Prediction:
    return Prediction(
        file=f"{side}{view}.jpg",
        probability=probability,
        label=int(probability >= threshold),
        threshold=threshold,
        view=view,
        laterality=side,
    )


def test_breast_results_average_views_and_take_the_max_over_breasts():
    results = [
        result("L", "CC", 0.2),
        result("L", "MLO", 0.4),
        result("R", "CC", 0.6),
        result("R", "MLO", 0.4),
        Prediction("bad.jpg", error="Cannot read bad.jpg."),
        Prediction("x.jpg", probability=0.99, label=1, threshold=0.5),  # no laterality
    ]
    df = breast_results_df(results)
    assert list(df.columns) == ["breast", "views", "probability", "label"]
    assert df["breast"].tolist() == ["L", "R", "woman"]
    assert df["views"].tolist() == ["CC+MLO", "CC+MLO", "L+R"]
    np.testing.assert_allclose(df["probability"], [0.3, 0.5, 0.5])
    assert df["label"].tolist() == [0, 1, 1]  # 0.5 >= 0.5


def test_breast_results_with_nothing_known_is_empty():
    assert breast_results_df([Prediction("a.jpg", error="x")]).empty
    one_side = breast_results_df([result("R", "CC", 0.1)])
    assert one_side["breast"].tolist() == ["R", "woman"]


# --- Threat row 15: an image that is no mammogram gets a reason, not a probability ---------------


def _photo_like() -> np.ndarray:
    """A colour scene: blue sky over green grass with a yellow sun."""
    yy, xx = np.mgrid[0:120, 0:160]
    rgb = np.zeros((120, 160, 3), np.uint8)
    rgb[..., 2] = np.where(yy < 70, 230, 40)
    rgb[..., 1] = np.where(yy < 70, 150 + yy, 170)
    rgb[..., 0] = np.where(yy < 70, 90, 50)
    rgb[(yy - 30) ** 2 + (xx - 120) ** 2 < 150] = (250, 220, 40)
    return rgb


def _dot_on_black() -> np.ndarray:
    img = np.zeros((120, 100), np.uint8)
    img[55:65, 45:55] = 255  # under 1% of the image
    return img


def _ellipse(size, centre, radii, level: float, blur: float = 0.0) -> np.ndarray:
    """A featureless grey ellipse on black (uint8), its edge blurred by ``blur`` pixels."""
    from scipy import ndimage

    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    inside = ((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2 < 1
    img = ndimage.gaussian_filter(inside * float(level), blur) if blur else inside * float(level)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _text_page() -> np.ndarray:
    """Black text on a white page, 120 x 100 (read inverted: white letters on black)."""
    from PIL import ImageDraw, ImageFont

    page = Image.new("L", (100, 120), 255)
    draw = ImageDraw.Draw(page)
    draw.text((10, 12), "REPORT", fill=0, font=ImageFont.load_default(size=28))
    for i, y in enumerate(range(54, 108, 22)):
        draw.text((10, y), f"Mammography {i}", fill=0, font=ImageFont.load_default(size=14))
    return np.asarray(page)


def _grey_photo() -> np.ndarray:
    """scikit-learn's sample photograph of a temple among trees, in grey at 160 x 120."""
    from sklearn.datasets import load_sample_image

    photo = Image.fromarray(load_sample_image("china.jpg")).convert("L")
    return np.asarray(photo.resize((160, 120), Image.Resampling.BILINEAR))


#: Issue 21: a featureless grey blob on black got "Cancer suspected" (0.32).
GREY_BLOB = _ellipse((120, 100), (60, 50), (35, 28), 150)
NO_SIDE = "nothing bright meets its left or right edge, where a breast meets the chest wall"
FLAT = "the bright shape is flat, without the fine texture of breast tissue"
NO_AIR = "no even black background around the breast"


NOT_MAMMOGRAMS = [
    ("black", np.zeros((120, 100), np.uint8), "it is blank"),
    ("grey", np.full((120, 100), 128, np.uint8), "it is blank"),
    ("white", np.full((120, 100), 255, np.uint8), "it is blank"),
    ("noise", np.random.default_rng(0).integers(0, 256, (120, 100), dtype=np.uint8), "noise"),
    ("photo", _photo_like(), "colour picture"),
    ("strip", blob_image(False, np.random.default_rng(3), (400, 60))[:, :12].copy(), "to 1"),
    ("dot", _dot_on_black(), "almost nothing is brighter than the background"),
    ("grey-blob", GREY_BLOB, NO_SIDE),
    ("blurred-blob", _ellipse((120, 100), (45, 60), (40, 30), 200, blur=4), NO_SIDE),
    ("flat-half-disc", _ellipse((120, 100), (60, 0), (50, 70), 150), FLAT),
    ("text-page", _text_page(), NO_SIDE),
    ("grey-photo", _grey_photo(), NO_AIR),
]


@pytest.mark.parametrize(
    ("pixels", "reason"), [c[1:] for c in NOT_MAMMOGRAMS], ids=[c[0] for c in NOT_MAMMOGRAMS]
)
def test_an_image_that_is_no_mammogram_gets_a_reason_instead_of_a_probability(
    bundle, tmp_path, pixels, reason
):
    path = tmp_path / "upload.png"
    Image.fromarray(pixels).save(path)
    good = tmp_path / "film.png"
    Image.fromarray(right_breast()).save(good)
    refused, predicted = predict_files(bundle, [path, good])
    assert not refused.ok and refused.probability is None and refused.label is None
    assert refused.error.startswith("upload.png: this does not look like a mammogram: ")
    assert reason in refused.error
    assert predicted.ok  # the rest of the batch is predicted
    with pytest.raises(UserError, match="does not look like a mammogram"):
        predict_one(bundle, path.read_bytes(), "upload.png")


def test_breast_like_images_pass_the_mammogram_check(tiny_manifest):
    from bcp_core.imaging.decode import decode_image
    from bcp_core.imaging.preparation import mammogram_doubt

    for path in tiny_manifest["path"]:
        decoded = decode_image(path, min_size=(80, 60))
        assert mammogram_doubt(decoded.gray, decoded.colour) == "", path
    gray = right_breast() / 255.0
    assert mammogram_doubt(1.0 - gray) == ""  # an inverted grey scale is undone first
    assert mammogram_doubt(gray[::4].copy()) == ""  # squashed to 1:3, still a film's shape


def _doubt_of(pixels: np.ndarray, spec: PreprocessSpec = SPEC) -> str:
    """What the check says of ``pixels`` uploaded as a PNG and decoded for ``spec``."""
    import io

    from bcp_core.imaging.decode import decode_image
    from bcp_core.imaging.preparation import decode_size, mammogram_doubt

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    decoded = decode_image(buf.getvalue(), min_size=decode_size(spec), name="upload.png")
    return mammogram_doubt(decoded.gray, decoded.colour)


@pytest.mark.parametrize("size", [(60, 50), (240, 200), (640, 512)])
def test_featureless_blobs_are_refused_at_any_size_grey_level_and_blur(size):
    h, w = size
    for level in (60, 150, 250):
        for blur in (0.0, 0.03 * h):
            centred = _ellipse(size, (h / 2, w / 2), (0.3 * h, 0.3 * w), level, blur)
            assert NO_SIDE in _doubt_of(centred), (level, blur)
            half_disc = _ellipse(size, (h / 2, 0), (0.45 * h, 0.6 * w), level, blur)
            assert FLAT in _doubt_of(half_disc), (level, blur)
            assert FLAT in _doubt_of(np.ascontiguousarray(half_disc[:, ::-1])), (level, blur)


@pytest.mark.parametrize("side", ["L", "R"])
def test_a_film_centred_on_a_padded_canvas_passes_the_check(side):
    """Digitised screen films often come centred on a black square (the MIAS database's do):
    the breast meets the film's edge, not the image's. Issue 19's external check found 302 of
    MIAS's 322 films refused for it."""
    from bcp_demo import synth

    film = synth.render_mammogram(
        np.random.default_rng(5), height=512, width=416, view="MLO", laterality=side
    )
    padded = on_padded_canvas(film, pad=200)
    assert NO_SIDE not in _doubt_of(film[:, 40:-40])  # the film itself meets an edge
    assert _doubt_of(padded, PreprocessSpec(320, 256)) == ""
    labelled = padded.copy()
    labelled[20:40, 10:60] = 255  # a marker in the padding, as films carry
    assert _doubt_of(labelled, PreprocessSpec(320, 256)) == ""


def test_shapes_on_a_padded_canvas_are_still_refused():
    """The padding is not taken for the chest wall: a blob's curved side is no straight edge."""
    canvas = (160, 300)
    blob = _ellipse(canvas, (80, 150), (50, 40), 150, blur=3)
    assert NO_SIDE in _doubt_of(blob)
    floating_half_disc = _ellipse(canvas, (80, 80), (70, 150), 150)
    floating_half_disc[:, :80] = 0  # a breast's outline on padding, but a flat shape
    assert FLAT in _doubt_of(floating_half_disc)
    framed_photo = np.pad(_grey_photo(), ((20, 20), (60, 60)))  # straight on both sides
    assert NO_SIDE in _doubt_of(framed_photo)


def test_a_textured_shape_with_a_short_straight_side_on_a_padded_canvas_is_refused():
    """Tissue texture is not enough: the straight side must run along most of the height, as
    a film's edge does (a hand or a limb on black has shorter straight stretches)."""
    from bcp_demo import synth

    film = synth.render_mammogram(
        np.random.default_rng(5), height=512, width=416, view="MLO", laterality="L"
    )
    padded = on_padded_canvas(film, pad=200)
    assert _doubt_of(padded, PreprocessSpec(320, 256)) == ""
    short = padded.copy()
    short[:150], short[-150:] = 0, 0  # the straight side now spans 41% of the height
    assert NO_SIDE in _doubt_of(short, PreprocessSpec(320, 256))


def test_the_grey_blob_of_issue_21_passes_once_it_has_tissue_texture():
    """What refuses the blob is its shape and flatness: a textured breast there passes."""
    assert NO_SIDE in _doubt_of(GREY_BLOB)
    assert _doubt_of(right_breast((120, 100))) == ""


def test_a_nearly_blank_image_is_refused():
    from bcp_core.imaging.preparation import mammogram_doubt

    gray = np.full((120, 100), 0.5, np.float32)
    gray[:8, :9] = 0.0  # under 1% of the image: nothing stands out from the grey
    assert "it is nearly blank" in mammogram_doubt(gray)


def test_every_refusal_is_one_sentence_saying_what_to_do():
    for name, pixels, _ in NOT_MAMMOGRAMS:
        message = f"upload.png: this does not look like a mammogram: {_doubt_of(pixels)}."
        assert message.count(". ") == 0 and message.endswith("."), name
        assert any(word in message for word in ("send", "check", "choose")), name


def test_the_synthetic_demo_films_pass_the_mammogram_check(small_demo):
    from bcp_core.imaging.decode import decode_image
    from bcp_core.imaging.preparation import decode_size, mammogram_doubt
    from bcp_demo import synth

    root, _ = small_demo  # 96 px high, as every test writes them
    films = expand_inputs([root])
    assert len(films) > 100
    for spec in (SPEC, PreprocessSpec(320, 256)):
        for path in films:
            decoded = decode_image(path, min_size=decode_size(spec))
            assert mammogram_doubt(decoded.gray, decoded.colour) == "", path.name
    for seed, (view, side) in enumerate([("CC", "L"), ("MLO", "R"), ("MLO", "L"), ("CC", "R")]):
        rng = np.random.default_rng(seed)  # full size, as make run writes them
        film = synth.render_mammogram(rng, height=1024, width=832, view=view, laterality=side)
        assert _doubt_of(film, PreprocessSpec(320, 256)) == "", (view, side)


# --- Threat row 6: the page's cache holds what it shows, within bytes ----------------------------


def test_a_shown_prediction_keeps_only_small_8_bit_images(bundle, tmp_path):
    from bcp_core.inference.shown import ShownPrediction

    path = tmp_path / "big_L-CC.png"
    Image.fromarray(right_breast((900, 700))).save(path)
    full = predict_one(bundle, path.read_bytes(), path.name)
    assert full.gray.shape == (82, 64)  # decoded at an 11th: a 64 x 48 input needs 80 x 60
    shown = ShownPrediction.of(full)
    assert shown.prediction == full.prediction
    assert shown.image.dtype == shown.heatmap.dtype == np.uint8
    assert shown.nbytes == 2 * 82 * 64
    with pytest.raises(ValueError, match="needs its heatmap"):
        ShownPrediction.of(predict_one(bundle, path, with_heatmap=False))


def test_the_shown_cache_is_bounded_in_bytes_and_drops_the_least_recently_used():
    from bcp_core.inference.shown import ShownCache, ShownPrediction

    def item(side: int) -> ShownPrediction:
        image = np.zeros((side, side), np.uint8)
        return ShownPrediction(Prediction(f"{side}.png"), image, image.copy())

    cache = ShownCache(max_bytes=10_000)
    made = []

    def get(key, side=50):  # 5,000 bytes each
        return cache.get_or_make(key, lambda: made.append(key) or item(side))

    get("a"), get("b"), get("a")  # "a" is now the most recent
    assert made == ["a", "b"] and cache.nbytes == 10_000
    get("c")  # over the limit: "b", the least recently used, goes
    assert cache.nbytes <= 10_000 and len(cache) == 2
    get("a"), get("b")
    assert made == ["a", "b", "c", "b"]
    huge = get("huge", side=200)  # 80,000 bytes: returned, never kept
    assert huge.image.shape == (200, 200) and cache.nbytes <= 10_000
    get("huge", side=200)
    assert made[-2:] == ["huge", "huge"]
