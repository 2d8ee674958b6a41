"""Decoding and preprocessing one image: shapes, ranges, orientation, odd files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bcp_core.config import PreprocessSpec
from bcp_core.errors import UserError
from bcp_core.imaging.decode import read_gray
from bcp_core.imaging.limits import DEFAULT_MAX_UPLOAD_PIXELS
from bcp_core.imaging.preparation import (
    breast_bbox,
    chest_wall_on_right,
    fit_to_size,
    looks_inverted,
    prepare,
    preprocess_image,
)
from tests.conftest import on_padded_canvas

SPEC = PreprocessSpec(height=64, width=48)


def breast(h=200, w=160, side="L", level=180) -> np.ndarray:
    """A bright half-disc touching the left (or right) edge on a black background."""
    yy, xx = np.mgrid[0:h, 0:w]
    cx = 0 if side == "L" else w - 1
    img = ((xx - cx) ** 2 / (0.8 * w) ** 2 + (yy - h / 2) ** 2 / (0.45 * h) ** 2) < 1
    return (img * level).astype(np.uint8)


def save(arr: np.ndarray, path, mode=None, fmt="JPEG", **kw):
    img = Image.fromarray(arr)
    if mode:
        img = img.convert(mode)
    img.save(path, format=fmt, **kw)
    return path


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_gray_and_rgb_give_the_same_input(tmp_path, mode):
    out = preprocess_image(save(breast(), tmp_path / "a.jpg", mode), SPEC)
    assert out.shape == (64, 48, 1) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0 and out.max() > 0.5


def test_16_bit_png_is_scaled_by_its_bit_depth(tmp_path):
    arr = breast().astype(np.uint16) * 16  # 12-bit data, peak 2880
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    gray = read_gray(path)
    assert gray.max() == pytest.approx(2880 / 4095, abs=1e-3)
    assert preprocess_image(path, SPEC).shape == (64, 48, 1)


def test_right_breast_is_flipped_to_the_left():
    right = breast(side="R").astype(np.float32) / 255
    assert chest_wall_on_right(right)
    assert not chest_wall_on_right(right[:, ::-1])


def test_left_and_right_breasts_give_mirror_equal_inputs(tmp_path):
    left = preprocess_image(save(breast(side="L"), tmp_path / "l.png", fmt="PNG"), SPEC)
    right = preprocess_image(save(breast(side="R"), tmp_path / "r.png", fmt="PNG"), SPEC)
    assert np.abs(left - right).max() < 0.05
    assert left[:, :5].mean() > left[:, -5:].mean()  # chest wall on the left


@pytest.mark.parametrize("side", ["L", "R"])
def test_a_film_centred_on_a_padded_canvas_is_oriented_by_its_own_edges(side):
    padded = on_padded_canvas(breast(side=side), pad=90).astype(np.float32) / 255
    assert chest_wall_on_right(padded) == (side == "R")
    unpadded = on_padded_canvas(breast(side="L"), pad=0).astype(np.float32) / 255
    a, b = prepare(padded, SPEC), prepare(unpadded, SPEC)
    assert a.geometry.flipped == (side == "R")
    # oriented and cropped to the breast: the padding is gone, the input is the film's
    assert np.abs(a.net_input - b.net_input).max() < 0.02
    assert a.net_input[:, :5].mean() > a.net_input[:, -5:].mean()  # chest wall on the left


def test_padding_on_one_side_only_changes_nothing():
    """A breast that meets an edge is oriented by the image's edges, as it always was."""
    right = breast(side="R")
    one_side = np.pad(right, ((0, 0), (60, 0)))  # dark on the left: the nipple side's air
    assert chest_wall_on_right(one_side.astype(np.float32) / 255)
    assert not chest_wall_on_right(one_side[:, ::-1].astype(np.float32) / 255)


@pytest.mark.parametrize("shape", [(300, 100), (100, 300), (50, 50)])
def test_odd_aspect_ratios_are_padded_not_stretched(shape):
    out, _ = fit_to_size(np.ones(shape, np.float32), 64, 48)
    assert out.shape == (64, 48)
    filled_rows = (out.sum(axis=1) > 0).sum()
    filled_cols = (out.sum(axis=0) > 0).sum()
    # One side fills the frame, the other keeps the aspect ratio.
    assert filled_rows == 64 or filled_cols == 48
    assert filled_rows / filled_cols == pytest.approx(shape[0] / shape[1], rel=0.1)


@pytest.mark.parametrize("shape", [(40, 32), (32, 40), (300, 17), (7, 500), (64, 48), (1, 1)])
def test_fit_to_size_says_where_it_placed_the_image(shape):
    out, placement = fit_to_size(np.ones(shape, np.float32), 64, 48)
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    assert placement.offset == (rows[0], cols[0]) == (rows[0], 0)
    assert placement.fitted_size == (len(rows), len(cols))
    assert placement.scale == pytest.approx(min(64 / shape[0], 48 / shape[1]))


def test_prepare_records_its_decisions_and_gives_the_network_input():
    gray = breast(side="R").astype(np.float32) / 255
    prepared = prepare(gray, SPEC)
    geometry = prepared.geometry
    assert prepared.net_input.shape == (64, 48, 1) and prepared.net_input.dtype == np.float32
    assert geometry.flipped and geometry.original_shape == (200, 160)
    top, bottom, left, right = geometry.crop_box
    assert right == 160 and left > 0  # in the decoded image's coordinates: the right edge
    unflipped = prepare(gray, PreprocessSpec(64, 48, orient=False)).geometry
    assert not unflipped.flipped and unflipped.crop_box == geometry.crop_box
    whole = prepare(gray, PreprocessSpec(64, 48, crop=False)).geometry
    assert whole.crop_box == (0, 200, 0, 160)


def test_crop_keeps_the_breast_and_drops_background():
    img = np.zeros((400, 300), np.float32)
    img[100:300, 0:120] = 0.8
    top, bottom, left, right = breast_bbox(img)
    assert (top, left) == (100, 0)
    assert 295 <= bottom <= 302 and 118 <= right <= 122


@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_blank_and_white_images_pass_through_uncropped(fill):
    img = np.full((100, 80), fill, np.float32)
    assert breast_bbox(img) == (0, 100, 0, 80)


def test_large_jpeg_is_decoded_at_reduced_size(tmp_path):
    path = save(breast(2000, 1600), tmp_path / "big.jpg")
    assert read_gray(path, min_size=(128, 96)).shape[0] == 250  # 1/8 scale, still >= 128
    assert read_gray(path).shape == (2000, 1600)


def test_exif_orientation_is_applied(tmp_path):
    arr = breast(120, 80)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: the viewer turns it back
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif)
    assert read_gray(path).shape == (80, 120)


@pytest.mark.parametrize("mode", ["CMYK", "LA", "RGBA", "P", "1", "I"])
def test_odd_modes_become_gray(tmp_path, mode):
    arr = breast(60, 50)
    img = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="TIFF" if mode in ("CMYK", "I") else "PNG")
    out = read_gray(buf.getvalue())
    assert out.shape == (60, 50) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0 and out.max() > 0.3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "Cannot read the uploaded image as an image"),
        (b"just some text, not a picture", "Cannot read the uploaded image as an image"),
    ],
)
def test_unreadable_bytes_give_a_sentence(content, message):
    with pytest.raises(UserError, match=message):
        read_gray(content)


def test_truncated_jpeg_gives_a_sentence(tmp_path):
    path = save(breast(), tmp_path / "cut.jpg")
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UserError, match=r"Cannot read cut.jpg as an image"):
        read_gray(path)


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((20000, 6000), "declares 20000 x 6000 pixels"),
        ((30000, 10000), "declares more pixels than"),
    ],
)
def test_huge_declared_size_is_refused_before_decoding(tmp_path, size, message):
    path = tmp_path / "bomb.png"
    Image.new("1", size).save(path)  # compresses to a few KB
    with pytest.raises(UserError, match=rf"{message}.*decompression bomb"):
        read_gray(path)


def test_spec_validation_and_round_trip():
    spec = PreprocessSpec(100, 80, crop=False)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(UserError, match="Image height must be a whole number from 32 to 4096"):
        PreprocessSpec(10, 80).validate()


# --- An inverted grey scale ---------------------------------------------------------------------


def breast_on_black(seed: int = 0) -> np.ndarray:
    """A right-side breast-like half disc (chest wall on the right) on a black background."""
    from tests.conftest import blob_image

    return blob_image(True, np.random.default_rng(seed), size=(96, 72))[:, ::-1] / 255.0


def test_an_inverted_film_is_seen_and_prepared_like_the_original():
    gray = breast_on_black().astype(np.float32)
    assert not looks_inverted(gray) and looks_inverted(1.0 - gray)
    spec = PreprocessSpec(64, 48)
    plain, undone = prepare(gray, spec), prepare(1.0 - gray, spec)
    assert undone.inverted and not plain.inverted
    assert undone.geometry == plain.geometry  # same flip, crop and placement
    np.testing.assert_allclose(undone.net_input, plain.net_input, atol=1e-6)


def test_inversion_can_be_switched_off_and_blank_images_are_left_alone():
    inverted = 1.0 - breast_on_black().astype(np.float32)
    assert not prepare(inverted, PreprocessSpec(64, 48, invert=False)).inverted
    for blank in (np.ones((40, 30), np.float32), np.zeros((40, 30), np.float32)):
        assert not looks_inverted(blank)


def test_bundles_from_before_the_invert_setting_never_invert():
    legacy = {"height": 64, "width": 48, "crop": True, "orient": True, "decode_margin": 1.25}
    spec = PreprocessSpec.from_dict(legacy)
    assert spec.invert is False and spec.to_dict() == legacy  # written back unchanged
    assert PreprocessSpec(64, 48).to_dict()["invert"] is True  # new bundles record it
    with pytest.raises(UserError, match="invert must be true or false"):
        PreprocessSpec(64, 48, invert="yes").validate()  # type: ignore[arg-type]


# --- Threat row 6: uploads at a mammogram's size, decoded small -----------------------------------


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels, with no image data at all."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_an_upload_over_a_mammograms_size_is_refused_from_its_header():
    """75 M pixels (under the 100 M bomb limit) cost ~20 s and GBs each; uploads stop at 40 M."""
    from bcp_core import settings

    assert settings.max_upload_pixels() == DEFAULT_MAX_UPLOAD_PIXELS == 40_000_000
    with pytest.raises(UserError, match=r"declares 10000 x 7500 pixels, more than the 40,000,000"):
        read_gray(png_declaring(10_000, 7_500), name="big.png")


def test_the_upload_pixel_cap_is_configurable_and_files_keep_the_bomb_limit(tmp_path):
    path = save(breast(200, 160), tmp_path / "film.png", fmt="PNG")
    with pytest.raises(UserError, match=r"more than the 20,000 .*BCP_MAX_UPLOAD_PIXELS"):
        read_gray(path.read_bytes(), max_upload_pixels=20_000)
    assert read_gray(path, max_upload_pixels=20_000).shape == (200, 160)  # a file: no upload
    from tests.dicom_files import make_dicom

    dicom = make_dicom(breast(200, 160).astype(np.uint16) * 16, bits_stored=12)
    with pytest.raises(UserError, match=r"declares 160 x 200 pixels, more than the 20,000"):
        read_gray(dicom, name="scan.dcm", max_upload_pixels=20_000)
    (tmp_path / "scan.dcm").write_bytes(dicom)
    assert read_gray(tmp_path / "scan.dcm", max_upload_pixels=20_000).shape == (200, 160)


def test_an_unusable_upload_setting_stops_uploads_at_the_edge_and_no_other_decode(
    tmp_path, monkeypatch
):
    """Settings at the edge: decoding reads no setting, so ``BCP_MAX_UPLOAD_PIXELS=abc`` (which
    once stopped the decoding of any bytes) stops only the dashboard's uploads, with a sentence
    naming it (the prediction page: tests/test_predict_page.py)."""
    from bcp_core import settings
    from bcp_core.imaging.preparation import decode_and_prepare
    from tests.dicom_files import make_dicom

    monkeypatch.setenv("BCP_MAX_UPLOAD_PIXELS", "abc")
    path = save(breast(200, 160), tmp_path / "film.png", fmt="PNG")
    dicom = tmp_path / "scan.dcm"
    dicom.write_bytes(make_dicom(breast(200, 160).astype(np.uint16) * 16, bits_stored=12))
    # a training image, from a path (the CLI, the tf.data pipeline) or as bytes
    assert preprocess_image(path, SPEC).shape == (64, 48, 1)
    assert preprocess_image(dicom, SPEC).shape == (64, 48, 1)
    assert preprocess_image(path.read_bytes(), SPEC).shape == (64, 48, 1)
    assert decode_and_prepare(dicom.read_bytes(), SPEC, "scan.dcm")[0].gray.shape == (200, 160)
    # the entry point that reads the setting for its uploads says what is wrong with it
    with pytest.raises(UserError) as info:
        settings.max_upload_pixels()
    assert (
        str(info.value) == "BCP_MAX_UPLOAD_PIXELS must be a whole number of at least 1, got 'abc'."
    )


@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "L"), ("PNG", "RGB"), ("TIFF", "L")])
def test_a_large_png_or_tiff_is_shrunk_at_once_to_what_the_model_needs(tmp_path, fmt, mode):
    path = save(breast(2000, 1600), tmp_path / f"big.{fmt.lower()}", mode=mode, fmt=fmt)
    small = read_gray(path, min_size=(128, 96))
    assert 128 <= small.shape[0] < 256 and 96 <= small.shape[1] < 192  # a whole factor (15)
    assert small.shape == (134, 107)  # 2000 / 15 and 1600 / 15, rounded up
    assert read_gray(path).shape == (2000, 1600)  # without a size asked for: full size
    assert abs(float(small.mean()) - float(read_gray(path).mean())) < 0.01  # block means


def test_a_shrunk_16_bit_png_keeps_its_bit_depth_scale(tmp_path):
    arr = breast(1000, 800).astype(np.uint16) * 16  # 12-bit data up to 2880
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    small = read_gray(path, min_size=(100, 80))
    assert small.shape == (100, 80)
    assert float(small.max()) == pytest.approx(2880 / 4095, abs=0.01)


# --- Local contrast equalisation (PreprocessSpec.contrast "clahe") ------------------------------


def grey_texture(seed: int = 0, level: float = 0.5, spread: float = 0.03) -> np.ndarray:
    """Low-contrast smooth texture: faint differences around one grey level."""
    from scipy import ndimage

    noise = np.random.default_rng(seed).standard_normal((120, 96))
    smooth = ndimage.gaussian_filter(noise, 2.0)
    return np.clip(level + spread * smooth / smooth.std(), 0, 1).astype(np.float32)


def test_clahe_stretches_faint_contrast_and_keeps_order_within_a_tile():
    from bcp_core.imaging.preparation import equalise_locally

    faint = grey_texture()
    out = equalise_locally(faint)
    assert out.shape == faint.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert out.std() > 2 * faint.std()  # faint differences stretched (the clip caps it)
    # one tile alone: a pure histogram equalisation, so brighter stays brighter
    one = equalise_locally(faint, tiles=1)
    order = np.argsort(faint.ravel(), kind="stable")
    assert np.all(np.diff(one.ravel()[order]) >= -1e-6)
    # the mapping follows each tile's own histogram: a darker half is lifted, a brighter
    # half lowered, towards the middle of the range
    halves = np.concatenate([grey_texture(1, 0.2), grey_texture(2, 0.8)], axis=1)
    mixed = equalise_locally(halves)
    assert mixed[:, :96].mean() > 0.25 and mixed[:, 96:].mean() < 0.75  # from 0.2 and 0.8


def test_clahe_leaves_an_even_black_area_nearly_black():
    from bcp_core.imaging.preparation import equalise_locally

    black = np.zeros((80, 64), np.float32)
    assert equalise_locally(black).max() < 0.02  # the clip: no amplified noise from nothing
    film = breast_on_black().astype(np.float32)
    out = equalise_locally(film)
    air = film < 0.02
    assert air.mean() > 0.2 and np.median(out[air]) < 0.1


def test_the_contrast_step_changes_the_breast_not_the_padding_nor_the_geometry():
    gray = breast_on_black().astype(np.float32)
    plain = prepare(gray, PreprocessSpec(64, 64))  # a portrait crop in a square: padded
    clahe = prepare(gray, PreprocessSpec(64, 64, contrast="clahe"))
    assert clahe.geometry == plain.geometry
    (top, left), (h, w) = plain.geometry.placement.offset, plain.geometry.placement.fitted_size
    assert w < 64  # there is padding to keep
    inside = (slice(top, top + h), slice(left, left + w))
    assert np.abs(clahe.net_input[inside] - plain.net_input[inside]).max() > 0.1
    assert not clahe.net_input[:, left + w :].any()  # the padding stays black
    assert clahe.net_input.dtype == np.float32 and clahe.net_input.max() <= 1.0


def test_the_contrast_setting_is_recorded_only_when_used_and_checked():
    assert "contrast" not in PreprocessSpec(64, 48).to_dict()  # older bundles write back as read
    clahe = PreprocessSpec(64, 48, contrast="clahe")
    assert clahe.to_dict()["contrast"] == "clahe"
    assert PreprocessSpec.from_dict(clahe.to_dict()) == clahe
    assert PreprocessSpec.from_dict({"height": 64, "width": 48}).contrast == "none"
    with pytest.raises(UserError, match="contrast step must be one of none, clahe"):
        PreprocessSpec(64, 48, contrast="sharpen").validate()
