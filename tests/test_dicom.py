"""DICOM decoding: tiny datasets written with pydicom in the tests, nothing downloaded."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

from bcp_core import config
from bcp_core.errors import UserError
from bcp_core.imaging.decode import DICOM_FIELDS, decode_image, read_gray
from bcp_core.imaging.dicom import looks_like_dicom, read_dicom_gray
from tests.dicom_files import compressed_junk, make_dicom, new_dataset, ramp, to_bytes


def test_window_maps_center_to_half_and_keeps_16_bit_precision():
    arr = ramp(2000, (40, 40))
    gray, meta = read_dicom_gray(make_dicom(arr, WindowCenter=1000, WindowWidth=1000))
    assert gray.dtype == np.float32 and gray.shape == (40, 40)
    assert gray[arr <= 500].max() == 0.0 and gray[arr >= 1500].min() == 1.0
    mid = np.abs(arr.astype(int) - 1000).argmin()
    assert gray.flat[mid] == pytest.approx(0.5, abs=0.01)
    # 1000 stored levels inside the window: far more grey levels than 8 bits could hold.
    assert len(np.unique(gray[(arr > 500) & (arr < 1500)])) > 256
    assert meta["photometric"] == "MONOCHROME2" and meta["bits_stored"] == 16


def test_monochrome1_is_inverted():
    arr = ramp(4095)
    mono2, _ = read_dicom_gray(make_dicom(arr, bits_stored=12))
    mono1, meta = read_dicom_gray(make_dicom(arr, "MONOCHROME1", bits_stored=12))
    assert meta["photometric"] == "MONOCHROME1"
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    assert mono1[0, 0] == 1.0 and mono1[-1, -1] == 0.0  # low stored value shows bright


def test_twelve_bit_without_window_is_scaled_by_the_bit_depth():
    arr = ramp(2048)
    gray, meta = read_dicom_gray(make_dicom(arr, bits_stored=12))
    np.testing.assert_allclose(gray, arr / 4095.0, atol=1e-6)
    assert meta["bits_stored"] == 12


def test_rescale_slope_and_intercept_come_before_the_window():
    arr = ramp(1000)
    # Rescaled values 2 * stored - 1000 run from -1000 to 1000; the window is centred on 0.
    data = make_dicom(
        arr, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1000,
        WindowCenter=0, WindowWidth=1000,
    )  # fmt: skip
    gray, _ = read_dicom_gray(data)
    assert gray[arr <= 250].max() == 0.0 and gray[arr >= 750].min() == 1.0
    half = np.abs(arr.astype(int) - 500).argmin()
    assert gray.flat[half] == pytest.approx(0.5, abs=0.01)
    unwindowed, _ = read_dicom_gray(make_dicom(arr, bits_stored=12, RescaleSlope=2,
                                               RescaleIntercept=-1000))  # fmt: skip
    np.testing.assert_allclose(unwindowed, arr / 4095.0, atol=1e-6)


def test_voi_lut_sequence_is_applied_and_scaled_by_its_output_range():
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    # Doubles the stored value, saturating from 2048 on (US, not the ambiguous OW).
    item.add_new(0x00283006, "US", [min(4095, 2 * i) for i in range(4096)])
    arr = ramp(4095)
    gray, _ = read_dicom_gray(make_dicom(arr, bits_stored=12, VOILUTSequence=Sequence([item])))
    assert gray[arr >= 2048].min() == 1.0
    np.testing.assert_allclose(gray[arr < 2000], 2 * arr[arr < 2000] / 4095.0, atol=1e-6)


def test_metadata_view_and_laterality():
    arr = ramp(4095)
    _, meta = read_dicom_gray(
        make_dicom(arr, bits_stored=12, ViewPosition="MLO", ImageLaterality="R",
                   Manufacturer="ACME", PatientID="secret"),
    )  # fmt: skip
    assert (meta["view"], meta["laterality"], meta["manufacturer"]) == ("MLO", "R", "ACME")
    assert meta["patient_id"] == "secret"
    _, meta = read_dicom_gray(make_dicom(arr, bits_stored=12, ViewPosition="CC", Laterality="L"))
    assert (meta["view"], meta["laterality"]) == ("CC", "L")


def test_compressed_without_a_working_plugin_names_the_syntax_and_the_fix():
    with pytest.raises(UserError, match=r"JPEG 2000.*pip install pylibjpeg pylibjpeg-libjpeg"):
        read_dicom_gray(compressed_junk(JPEG2000Lossless))
    with pytest.raises(UserError, match=r"JPEG-LS.*no decoder for it is installed.*pylibjpeg"):
        read_dicom_gray(compressed_junk(JPEGLSLossless))


def test_no_pixel_data():
    with pytest.raises(UserError, match="no pixel data"):
        read_dicom_gray(to_bytes(new_dataset()))


def test_text_file_renamed_dcm_is_not_dicom(tmp_path: Path):
    path = tmp_path / "notes.dcm"
    path.write_text("patient came back for a recall\n" * 20, encoding="utf-8")
    with pytest.raises(UserError, match=r"notes\.dcm is not a DICOM file"):
        read_gray(path)


def test_multi_frame_uses_the_first_frame_and_says_so():
    frames = np.stack([ramp(4095), np.zeros((20, 16), np.uint16), ramp(100)])
    gray, meta = read_dicom_gray(make_dicom(frames, bits_stored=12))
    assert gray.shape == (20, 16) and meta["frames"] == 3
    np.testing.assert_allclose(gray, ramp(4095) / 4095.0, atol=1e-6)


def test_colour_dicom_becomes_grey():
    rgb = np.zeros((20, 16, 3), np.uint8)
    rgb[..., 1] = 200
    gray, meta = read_dicom_gray(make_dicom(rgb, "RGB", bits_stored=8))
    assert meta["converted_from_colour"] and gray.shape == (20, 16)
    np.testing.assert_allclose(gray, 0.587 * 200 / 255, atol=1e-4)


def test_pixel_limit_is_checked_from_the_header(monkeypatch):
    monkeypatch.setattr(config, "MAX_PIXELS", 100)
    with pytest.raises(UserError, match="decompression bomb"):
        read_dicom_gray(make_dicom(ramp(4095), bits_stored=12))


def test_read_gray_dispatches_dicom_bytes_and_paths(tmp_path: Path):
    data = make_dicom(ramp(4095), bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    expected, _ = read_dicom_gray(data)
    np.testing.assert_array_equal(read_gray(data), expected)
    path = tmp_path / "scan.bin"  # no .dcm suffix: the magic alone decides
    path.write_bytes(data)
    np.testing.assert_array_equal(read_gray(path, min_size=(8, 8)), expected)


def test_decode_image_keeps_the_header_fields_but_never_the_patient_id():
    data = make_dicom(ramp(4095), bits_stored=12, ViewPosition="CC", ImageLaterality="L",
                      Manufacturer="ACME", PatientID="never-shown")  # fmt: skip
    decoded = decode_image(data)
    np.testing.assert_array_equal(decoded.gray, read_dicom_gray(data)[0])
    assert tuple(decoded.header) == DICOM_FIELDS and "never-shown" not in repr(decoded.header)
    assert decoded.header["view"] == "CC" and decoded.header["laterality"] == "L"
    assert (decoded.header["bits_stored"], decoded.header["manufacturer"]) == (12, "ACME")
    png = io.BytesIO()
    Image.fromarray(ramp(255).astype(np.uint8)).save(png, format="PNG")
    assert decode_image(png.getvalue(), name="scan.png").header == {}  # nothing in the header


def test_headerless_dataset_with_dcm_suffix_is_read(tmp_path: Path):
    ds = Dataset()
    ds.Modality = "MG"
    ds.set_pixel_data(ramp(4095), photometric_interpretation="MONOCHROME2", bits_stored=12)
    del ds.file_meta
    path = tmp_path / "raw.dcm"
    path.write_bytes(to_bytes(ds, file_format=False))
    assert not looks_like_dicom(path.read_bytes())
    np.testing.assert_allclose(read_gray(path), ramp(4095) / 4095.0, atol=1e-6)
    upload = decode_image(path.read_bytes(), name="raw.dcm")  # an upload: its name tells
    np.testing.assert_allclose(upload.gray, ramp(4095) / 4095.0, atol=1e-6)
    assert tuple(upload.header) == DICOM_FIELDS


def test_looks_like_dicom(tmp_path: Path):
    assert looks_like_dicom(b"\0" * 128 + b"DICM")
    assert not looks_like_dicom(b"\xff\xd8\xff" + b"\0" * 200)
    assert looks_like_dicom(b"", name="upload.DCM")
    assert looks_like_dicom(tmp_path / "missing.dcm")
    assert not looks_like_dicom(tmp_path / "missing.jpg")


def deflated_dicom(pixel_bytes: int, rows: int = 64, columns: int = 64) -> bytes:
    """A Deflated Explicit VR file declaring ``rows x columns`` whose pixel data holds
    ``pixel_bytes`` zero bytes (deflated a thousandfold), written without holding them."""
    import zlib

    from pydicom.uid import DeflatedExplicitVRLittleEndian

    small = new_dataset(DeflatedExplicitVRLittleEndian)
    small.set_pixel_data(np.zeros((rows, columns), np.uint16), "MONOCHROME2", 16)
    plain = io.BytesIO()
    small.save_as(plain, enforce_file_format=True)  # pydicom deflates the dataset
    data = plain.getvalue()
    if pixel_bytes <= rows * columns * 2:
        return data
    # Rebuild the deflated part with an oversized PixelData element (OW, 4-byte length).
    from pydicom.filereader import _read_file_meta_info, read_preamble

    stream = io.BytesIO(data)
    read_preamble(stream, force=False)
    _read_file_meta_info(stream)
    head_end = stream.tell()
    header = zlib.decompress(data[head_end:], -zlib.MAX_WBITS)
    header = header[: header.index(b"\xe0\x7f\x10\x00")]  # up to the PixelData tag
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [deflater.compress(header + b"\xe0\x7f\x10\x00OW\x00\x00")]
    parts.append(deflater.compress(pixel_bytes.to_bytes(4, "little")))
    chunk = bytes(2**22)
    for _ in range(pixel_bytes // len(chunk)):
        parts.append(deflater.compress(chunk))
    parts.append(deflater.flush())
    return data[:head_end] + b"".join(parts)


def test_a_deflated_dicom_still_decodes():
    gray, meta = read_dicom_gray(deflated_dicom(0, rows=20, columns=16))
    assert gray.shape == (20, 16) and np.isfinite(gray).all()


def test_a_deflated_dicom_bomb_is_refused_while_inflating():
    """Security row 3: 1.4 MB of deflate that inflates ~1000:1 took the server to 3.6 GB."""
    import resource

    bomb = deflated_dicom(400 * 2**20)  # 400 MB of pixels behind a 64 x 64 header
    assert len(bomb) < 2 * 2**20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UserError, match="inflates to more than .* possible decompression bomb"):
        read_dicom_gray(bomb)  # an upload: at most 40 million pixels of 2 bytes
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 150


def test_a_deflated_dicom_holding_more_than_its_image_needs_is_refused(tmp_path):
    path = tmp_path / "bomb.dcm"
    path.write_bytes(deflated_dicom(64 * 2**20))  # within the cap, far beyond 64 x 64 x 2
    with pytest.raises(UserError, match=r"bomb\.dcm inflates to 67 MB though its image needs"):
        read_dicom_gray(path)


def test_a_colour_dicom_is_measured_as_colour_and_refused_as_no_mammogram():
    """A colour DICOM (an ultrasound, a photograph) passed the mammogram check: its colour was
    never measured, only its grey conversion."""
    from bcp_core.imaging.preparation import mammogram_doubt
    from tests.test_predict import _photo_like

    coloured = decode_image(make_dicom(_photo_like(), "RGB", bits_stored=8), name="us.dcm")
    assert coloured.colour > 0.2
    assert "colour picture" in mammogram_doubt(coloured.gray, coloured.colour)
    grey = np.repeat(ramp(255, (40, 32)).astype(np.uint8)[..., None], 3, axis=-1)
    stored_as_rgb = decode_image(make_dicom(grey, "RGB", bits_stored=8), name="g.dcm")
    assert stored_as_rgb.colour == 0.0  # grey in colour: the header alone says what it is
    said = mammogram_doubt(stored_as_rgb.gray, stored_as_rgb.colour, "RGB")
    assert said.startswith("its DICOM header says it is a colour image (RGB)")
    assert decode_image(make_dicom(ramp(4095), bits_stored=12), name="m.dcm").colour == 0.0


def test_a_colour_dicom_upload_gets_the_sentence_not_a_probability():
    from bcp_core.config import PreprocessSpec
    from bcp_core.inference.prepared import prepare_image
    from tests.test_predict import _photo_like

    data = make_dicom(_photo_like() // 8 + 100, "RGB", bits_stored=8)  # faint colour, as in US
    with pytest.raises(UserError, match=r"us\.dcm: .*DICOM header says it is a colour image"):
        prepare_image(data, PreprocessSpec(64, 48), "us.dcm")
