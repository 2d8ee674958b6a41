"""A catalogue of bad inputs: each gets one clear sentence, and no output is left half written.

Every case names the thing that is wrong and, where the user can act, what to do. Cases that
write (demo-data, train, save_bundle, update_threshold) also check that nothing partial is left
behind: no half bundle, no ``.NAME.tmp-*`` / ``.NAME.partial-*`` folder, the previous bundle
intact. Inputs are tiny files made here; the only trained model is the session's demo bundle.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import struct
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bcp_core import cli, fileio
from bcp_core.config import PreprocessSpec, TrainConfig
from bcp_core.data.datasource import read_data_root
from bcp_core.data.workbooks import read_excel_sheets, read_table
from bcp_core.errors import UserError
from bcp_core.imaging.decode import read_gray
from bcp_core.imaging.preparation import preprocess_image
from bcp_core.model.bundle import (
    META_FILE,
    MODEL_FILE,
    list_bundles_df,
    load_bundle,
    resolve_bundle_path,
    save_bundle,
    update_threshold,
)
from bcp_core.model.meta import BundleMeta, ThresholdChoice
from bcp_core.model.training import plan_split
from bcp_demo import writer as demo
from tests.conftest import write_data_root, write_jpeg, write_xlsx
from tests.dicom_files import compressed_junk, make_dicom, new_dataset, ramp, to_bytes

KEYS = ["InputFileName", "StudyDate", "StudyTime", "PatientID.x"]
VAL_HEADER = [*KEYS, "AbsolutePath"]
CANCER_ROW = ["FILE0001", 20200101, 92603, "P1"]  # Excel dropped StudyTime's leading zero
VAL_ROW = ["FILE0001", 20200101, "092603", "P1", r"C:\Users\x\cancer\a\FILE0001.jpg"]
NON_CANCER_ROW = ["FILE0100", 20200101, 100000, "P2"]
SPEC = PreprocessSpec(64, 48)


# --- Helpers ---------------------------------------------------------------------------------


def make_root(
    root: Path,
    cancer: list | None = None,
    validation: list | None = None,
    non_cancer: list | None = None,
) -> Path:
    """A tiny data root: both workbooks, one cancer and one non-cancer JPEG."""
    return write_data_root(
        root,
        cancer if cancer is not None else [KEYS, CANCER_ROW],
        non_cancer if non_cancer is not None else [KEYS, NON_CANCER_ROW],
        validation if validation is not None else [VAL_HEADER, VAL_ROW],
        ["C/a/FILE0001.jpg", "N/batch_1/FILE0100.jpg"],
    )


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary entries (``.NAME.tmp-*``, ``.NAME.partial-*``, ``.NAME.old-*``...)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Run the CLI in this process; returns (exit status, stderr)."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, pattern: str) -> None:
    import re

    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith(("error: ", "python -m bcp_core")), err
    assert re.search(pattern, lines[-1]), lines[-1]


def skip_if_permissions_ignored(path: Path) -> None:
    if os.access(path, os.W_OK if path.is_dir() else os.R_OK):
        pytest.skip("running as root: file permissions are not enforced here")


def os_error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


# --- Workbooks and exports --------------------------------------------------------------------


def _text_renamed(d: Path):
    (d / "book.xlsx").write_text("InputFileName,StudyDate\nFILE1,20200101\n")
    return lambda: read_excel_sheets(d / "book.xlsx")


def _corrupt_zip(d: Path):
    (d / "book.xlsx").write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    return lambda: read_excel_sheets(d / "book.xlsx")


def _zip_not_workbook(d: Path):
    with zipfile.ZipFile(d / "book.xlsx", "w") as zf:
        zf.writestr("readme.txt", "not a workbook")
    return lambda: read_excel_sheets(d / "book.xlsx")


def _encrypted(d: Path):
    # Excel saves a password-protected .xlsx (and an old .xls) as an OLE compound file.
    (d / "book.xlsx").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 1024)
    return lambda: read_excel_sheets(d / "book.xlsx")


def _empty_sheet(d: Path):
    make_root(d / "r", cancer=[])
    return lambda: read_data_root(d / "r")


def _empty_validation(d: Path):
    make_root(d / "r", validation=[])
    return lambda: read_data_root(d / "r")


def _wrong_sheet_names(d: Path):
    root = make_root(d / "r")
    write_xlsx(root / "datacombined.xlsx", {"Sheet1": [KEYS, CANCER_ROW]})
    return lambda: read_data_root(root)


def _missing_key_column(d: Path):
    cancer = [["InputFileName", "StudyDate", "PatientID.x"], ["FILE0001", 20200101, "P1"]]
    make_root(d / "r", cancer=cancer)
    return lambda: read_data_root(d / "r")


def _duplicate_key_column(d: Path):
    make_root(d / "r", cancer=[[*KEYS, "StudyTime"], [*CANCER_ROW, 101010]])
    return lambda: read_data_root(d / "r")


def _duplicate_abspath_column(d: Path):
    make_root(d / "r", validation=[[*VAL_HEADER, "AbsolutePath"], [*VAL_ROW, "x.jpg"]])
    return lambda: read_data_root(d / "r")


def _duplicate_in_non_cancer(d: Path):
    make_root(d / "r", non_cancer=[[*KEYS, "inputfilename"], [*NON_CANCER_ROW, "X"]])
    return lambda: read_data_root(d / "r")


def _validation_workbook_missing(d: Path):
    (make_root(d / "r") / "data_validation_x.xlsx").unlink()
    return lambda: read_data_root(d / "r")


def _exports_root(d: Path) -> Path:
    root = make_root(d / "r")
    for name in ("datacombined.xlsx", "data_validation_x.xlsx"):
        (root / name).unlink()
    (root / "CANCER.csv").write_text(
        "InputFileName,StudyDate,StudyTime,PatientID.x,AbsolutePath\n"
        "FILE0001,20200101,092603,P1,C:\\x\\cancer\\a\\FILE0001.jpg\n",
        encoding="utf-8",
    )
    return root


def _one_export_missing(d: Path):
    return lambda: read_data_root(_exports_root(d))


def _export_bad_encoding(d: Path):
    root = _exports_root(d)
    # 0x81 and 0x90 are undefined in both UTF-8 (as lead bytes) and Windows-1254.
    (root / "NON CANCER.csv").write_bytes(b"InputFileName\nFILE\x81\x90\n")
    return lambda: read_data_root(root)


def _export_unbalanced_quotes(d: Path):
    root = _exports_root(d)
    (root / "NON CANCER.csv").write_text('InputFileName,StudyDate\n"FILE0100,20200101\n')
    return lambda: read_data_root(root)


def _export_empty(d: Path):
    root = _exports_root(d)
    (root / "NON CANCER.csv").write_bytes(b"")
    return lambda: read_data_root(root)


WORKBOOK_CASES = [
    ("missing-file", lambda d: lambda: read_excel_sheets(d / "nope.xlsx"), r"Workbook not found"),
    ("csv-missing-file", lambda d: lambda: read_table(d / "nope.csv"), r"File not found"),
    ("text-renamed-xlsx", _text_renamed, r"book.xlsx is not an Excel workbook .*save it as .xlsx"),
    ("corrupt-zip", _corrupt_zip, r"book.xlsx: the file is damaged .*save it again as .xlsx"),
    ("zip-not-a-workbook", _zip_not_workbook, r"book.xlsx: the file is damaged"),
    ("encrypted-ole", _encrypted, r"password-protected .*remove the password and save it as"),
    ("empty-sheet", _empty_sheet, r"Sheet 'Cancer' is empty: it has no header row"),
    ("empty-validation", _empty_validation, r"data_validation_x.xlsx is empty"),
    ("wrong-sheet-names", _wrong_sheet_names, r"has no sheet 'Cancer'; its sheets are: 'Sheet1'"),
    ("missing-key-column", _missing_key_column, r"'Cancer' has no column 'StudyTime'"),
    ("duplicate-key-column", _duplicate_key_column, r"two columns named 'StudyTime'; delete"),
    ("duplicate-abspath", _duplicate_abspath_column, r"two columns named 'AbsolutePath'"),
    ("duplicate-non-cancer", _duplicate_in_non_cancer, r"Non-Cancer has two columns named"),
    ("validation-missing", _validation_workbook_missing, r"data_validation_x.xlsx is missing"),
    ("one-export-missing", _one_export_missing, r"has the export CANCER.csv but not NON CANCER"),
    ("export-bad-encoding", _export_bad_encoding, r"neither UTF-8 nor Windows-1254 .*UTF-8 CSV"),
    ("export-unbalanced-quotes", _export_unbalanced_quotes, r"as CSV .*unclosed quote"),
    ("export-empty", _export_empty, r"NON CANCER.csv is empty \(0 bytes\)"),
]


@pytest.mark.parametrize(
    ("make", "message"), [c[1:] for c in WORKBOOK_CASES], ids=[c[0] for c in WORKBOOK_CASES]
)
def test_bad_workbook_is_refused_with_a_sentence(tmp_path, make, message):
    action = make(tmp_path)
    with pytest.raises(UserError, match=message) as info:
        action()
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


def test_sheet_with_only_headers_reports_zero_rows_and_training_refuses(tmp_path):
    result = read_data_root(make_root(tmp_path / "r", cancer=[KEYS]))
    assert result.stats.cancer_rows == 0 and result.stats.non_cancer_rows == 1
    with pytest.raises(UserError, match=r"split has no cancer images"):
        plan_split(result.manifest, TrainConfig())


def test_one_column_export_is_not_split_at_a_letter(tmp_path):
    (tmp_path / "NON CANCER.csv").write_text("InputFileName\nFILE0100\nFILE0101\n")
    df = read_table(tmp_path / "NON CANCER.csv")
    assert list(df.columns) == ["InputFileName"] and df["InputFileName"].tolist()[-1] == "FILE0101"


# --- Keys --------------------------------------------------------------------------------------

KEY_CASES = [
    (
        "all-empty-studytime",
        [KEYS, ["FILE0001", 20200101, None, "P1"], ["FILE0002", 20200101, "  ", "P1"]],
        None,
        "Cancer",
        r"^empty key part: StudyTime$",
    ),
    (
        "non-numeric-date",
        [KEYS, ["FILE0001", "yesterday", 92603, "P1"]],
        None,
        "Cancer",
        r"^no validation row has this key$",
    ),
    (
        "absurd-studytime",
        [KEYS, ["FILE0001", 20200101, 99999999, "P1"]],
        None,
        "Cancer",
        r"^no validation row has this key$",
    ),
    (
        "whitespace-only-cells",
        [KEYS, ["   ", 20200101, 92603, "\t "]],
        None,
        "Cancer",
        r"^empty key part: InputFileName, PatientID.x$",
    ),
    (
        "duplicate-cancer-keys",
        [KEYS, CANCER_ROW, [" file0001.jpg", "20200101", "092603", "p1"]],
        None,
        "Cancer",
        r"^duplicate key: same as Cancer row 2$",
    ),
    (
        "duplicate-validation-keys",
        None,
        [VAL_HEADER, VAL_ROW, VAL_ROW],
        "validation",
        r"^duplicate key: same as validation row 2$",
    ),
    (
        "abspath-outside-root",
        None,
        [VAL_HEADER, [*VAL_ROW[:4], "/etc/passwd"]],
        "Cancer",
        r"^image not found under the data root: passwd$",
    ),
    (
        "abspath-not-an-image",
        None,
        [VAL_HEADER, [*VAL_ROW[:4], r"C:\x\cancer\notes.txt"]],
        "Cancer",
        r"^image not found under the data root: notes.txt$",
    ),
    (
        "abspath-traversal",
        None,
        [VAL_HEADER, [*VAL_ROW[:4], "..\\..\\secret.jpg"]],
        "Cancer",
        r"^image not found under the data root: secret.jpg$",
    ),
]


@pytest.mark.parametrize(
    ("cancer", "validation", "sheet", "reason"),
    [c[1:] for c in KEY_CASES],
    ids=[c[0] for c in KEY_CASES],
)
def test_bad_key_is_reported_per_row_with_its_reason(tmp_path, cancer, validation, sheet, reason):
    # A real file called secret.jpg sits just outside the data root: it must never be used.
    write_jpeg(tmp_path / "secret.jpg")
    root = make_root(tmp_path / "root", cancer=cancer, validation=validation)
    result = read_data_root(root)
    rows = result.unmatched[result.unmatched["sheet"] == sheet]
    assert rows["reason"].str.contains(reason, regex=True).any(), result.unmatched
    for path in result.manifest["path"]:
        assert Path(path).resolve().is_relative_to(root.resolve())


def test_traversal_in_abspath_resolves_inside_the_data_root_only(tmp_path):
    write_jpeg(tmp_path / "FILE0001.jpg")  # a same-named file outside the root
    validation = [VAL_HEADER, [*VAL_ROW[:4], "..\\..\\..\\FILE0001.jpg"]]
    root = make_root(tmp_path / "root", validation=validation)
    result = read_data_root(root)
    cancer = result.manifest[result.manifest["label"] == 1]
    assert cancer["path"].tolist() == [str((root / "Cancer/a/FILE0001.jpg").resolve())]


# --- Folders -----------------------------------------------------------------------------------


def _root_is_file(d: Path) -> Path:
    (d / "data.txt").write_text("x")
    return d / "data.txt"


def _no_class_folders(d: Path) -> Path:
    root = make_root(d / "r")
    shutil.rmtree(root / "Cancer")
    shutil.rmtree(root / "Non-Cancer")
    return root


def _only_cancer_folder(d: Path) -> Path:
    root = make_root(d / "r")
    shutil.rmtree(root / "Non-Cancer")
    return root


FOLDER_CASES = [
    ("root-missing", lambda d: d / "nope", r"Data root not found: .*Choose the folder"),
    ("root-is-a-file", _root_is_file, r"Data root is a file, not a folder"),
    ("root-empty-string", lambda d: "", r"No data root given"),
    ("root-blank", lambda d: "   ", r"No data root given"),
    ("root-without-workbooks", lambda d: d, r"has neither datacombined.xlsx"),
    ("no-class-folders", _no_class_folders, r"No cancer image folder under .*it holds:"),
    ("no-non-cancer-folder", _only_cancer_folder, r"No non-cancer image folder"),
]


@pytest.mark.parametrize(
    "make, message", [c[1:] for c in FOLDER_CASES], ids=[c[0] for c in FOLDER_CASES]
)
def test_bad_data_root_is_refused(tmp_path, make, message):
    with pytest.raises(UserError, match=message):
        read_data_root(make(tmp_path))


def test_unreadable_class_folder_chmod(tmp_path):
    root = make_root(tmp_path / "r")
    folder = root / "Cancer" / "a"
    folder.chmod(0)
    try:
        skip_if_permissions_ignored(folder)
        with pytest.raises(UserError, match=r"Cannot read folder .*a: Permission denied"):
            read_data_root(root)
    finally:
        folder.chmod(0o755)


def test_unreadable_class_folder_simulated(tmp_path, monkeypatch):
    root = make_root(tmp_path / "r")
    locked = str((root / "Cancer" / "a").resolve())
    real = os.scandir

    def scandir(path="."):
        if str(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(UserError, match=r"Cannot read folder .*Permission denied\.$"):
        read_data_root(root)


@pytest.mark.timeout(30)
def test_symlink_loop_in_an_image_tree_does_not_hang(tmp_path):
    root = make_root(tmp_path / "r")
    os.symlink("..", root / "Cancer" / "a" / "up")
    os.symlink(".", root / "Non-Cancer" / "batch_1" / "self")
    os.symlink(str(root), root / "Non-Cancer" / "root")
    result = read_data_root(root)
    assert result.stats.cancer_images_found == 1
    assert result.stats.non_cancer_images_found == 1


def test_non_ascii_folder_and_file_names(tmp_path):
    root = tmp_path / "Mamografi Verilerı"
    non_cancer = [KEYS, ["görüntü_1", 20200101, 100000, "P2"]]
    make_root(root, non_cancer=non_cancer)
    shutil.rmtree(root / "Non-Cancer")
    write_jpeg(root / "Kanser Değil" / "parti_1" / "GÖRÜNTÜ_1.jpg")
    result = read_data_root(root)
    assert result.stats.non_cancer_images_found == 1
    assert result.stats.cancer_images_found == 1


# --- Images ------------------------------------------------------------------------------------


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    """A valid small PNG whose header claims another size (with a correct checksum)."""
    data = bytearray(_png_bytes(Image.new("L", (16, 16), 80)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _jpeg_declaring(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (16, 16), 80).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 100), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def _damaged_png() -> bytes:
    data = bytearray(_png_bytes(Image.new("L", (16, 16), 80)))
    data[40:60] = b"\x00" * 20
    return bytes(data)


BAD_IMAGE_CASES = [
    ("zero-byte", "empty.jpg", b"", r"empty.jpg as an image: the file is empty \(0 bytes\)"),
    ("truncated-jpeg", "cut.jpg", _truncated_jpeg(), r"cut.jpg as an image \(.*truncated"),
    (
        "text-renamed-jpg",
        "notes.jpg",
        b"patient notes\n",
        r"notes.jpg .*a text file, not a picture",
    ),
    (
        "html-renamed-png",
        "page.png",
        b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
        r"page.png .*a text file, not a picture",
    ),
    ("damaged-png", "broken.png", _damaged_png(), r"starts like a PNG file but is damaged"),
    ("binary-junk", "junk.png", bytes(range(256)) * 4, r"not a JPG, PNG, TIFF or DICOM file"),
    (
        "huge-png-header",
        "huge.png",
        _png_declaring(12000, 12000),
        r"huge.png declares 12000 x 12000 pixels, more than the limit",
    ),
    (
        "bomb-jpeg-header",
        "bomb.jpg",
        _jpeg_declaring(60000, 60000),
        r"bomb.jpg declares more pixels than the limit .*decompression bomb",
    ),
]


@pytest.mark.parametrize(
    "name, data, message", [c[1:] for c in BAD_IMAGE_CASES], ids=[c[0] for c in BAD_IMAGE_CASES]
)
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_image_is_refused_with_a_sentence(tmp_path, name, data, message):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(UserError, match=message):
        preprocess_image(tmp_path / name, SPEC)
    with pytest.raises(UserError, match=message.replace(name, "the uploaded image")):
        read_gray(data)


def test_missing_image_file(tmp_path):
    with pytest.raises(UserError, match=r"Cannot read gone.jpg: the file does not exist"):
        read_gray(tmp_path / "gone.jpg")


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def _animated_gif(d: Path) -> Path:
    frames = [Image.new("L", (30, 40), v) for v in (51, 204)]
    return _save(frames[0], d / "anim.gif", save_all=True, append_images=frames[1:])


def _multipage_tiff(d: Path) -> Path:
    frames = [Image.new("L", (30, 40), v) for v in (51, 204)]
    return _save(frames[0], d / "pages.tif", save_all=True, append_images=frames[1:])


def _exif_rotated(d: Path) -> Path:
    img = Image.new("L", (30, 40), 100)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    return _save(img, d / "rotated.jpg", exif=exif)


def _la(d: Path) -> Path:
    arr = np.zeros((40, 30, 2), np.uint8)
    arr[..., 0], arr[:20, :, 1] = 200, 255  # bottom half fully transparent
    return _save(Image.fromarray(arr, "LA"), d / "alpha.png")


GOOD_IMAGE_CASES = [
    (
        "cmyk-jpeg",
        lambda d: _save(Image.new("CMYK", (30, 40), (0, 0, 0, 100)), d / "cmyk.jpg"),
        lambda g: g.shape == (40, 30) and 0.4 < g.mean() < 0.8,
    ),
    ("gray-alpha-png", _la, lambda g: g[:20].mean() > 0.7 and g[20:].max() == 0.0),
    (
        "16-bit-png",
        lambda d: _save(Image.fromarray(np.full((40, 30), 4000, np.uint16)), d / "deep.png"),
        lambda g: abs(float(g.mean()) - 4000 / 4095) < 1e-3,
    ),
    (
        "1x1",
        lambda d: _save(Image.new("L", (1, 1), 200), d / "dot.png"),
        lambda g: g.shape == (1, 1),
    ),
    (
        "all-white",
        lambda d: _save(Image.new("L", (30, 40), 255), d / "white.png"),
        lambda g: g.min() == 1.0,
    ),
    (
        "all-black",
        lambda d: _save(Image.new("L", (30, 40), 0), d / "black.png"),
        lambda g: g.max() == 0.0,
    ),
    ("animated-gif-first-frame", _animated_gif, lambda g: abs(float(g.mean()) - 0.2) < 0.01),
    ("multipage-tiff-first-frame", _multipage_tiff, lambda g: abs(float(g.mean()) - 0.2) < 0.01),
    ("exif-rotated", _exif_rotated, lambda g: g.shape == (30, 40)),
]


@pytest.mark.parametrize(
    "make, check", [c[1:] for c in GOOD_IMAGE_CASES], ids=[c[0] for c in GOOD_IMAGE_CASES]
)
def test_odd_but_valid_image_is_read_and_preprocessed(tmp_path, make, check):
    path = make(tmp_path)
    gray = read_gray(path)
    assert gray.dtype == np.float32 and check(gray), (gray.shape, gray.min(), gray.max())
    net = preprocess_image(path, SPEC)  # cropping must cope with blank and tiny images
    assert net.shape == (64, 48, 1) and np.isfinite(net).all()
    assert 0.0 <= net.min() and net.max() <= 1.0


# --- DICOM -------------------------------------------------------------------------------------


def _no_pixel_data() -> bytes:
    ds = new_dataset()
    ds.Rows, ds.Columns = 20, 16
    return to_bytes(ds)


def _compressed_without_plugin() -> bytes:
    from pydicom.uid import JPEG2000Lossless

    return compressed_junk(JPEG2000Lossless)


def _huge_dicom() -> bytes:
    ds = new_dataset()
    ds.set_pixel_data(ramp(4095), photometric_interpretation="MONOCHROME2", bits_stored=12)
    ds.Rows, ds.Columns = 60000, 60000
    return to_bytes(ds)


DICOM_CASES = [
    ("text-renamed-dcm", b"this is not a DICOM file\n", r"scan.dcm is not a DICOM file"),
    ("empty-dcm", b"", r"scan.dcm is not a DICOM file"),
    ("jpeg-renamed-dcm", _jpeg_declaring(16, 16), r"scan.dcm is not a DICOM file"),
    ("no-pixel-data", _no_pixel_data(), r"scan.dcm is a DICOM file without an image"),
    (
        "compressed-without-plugin",
        _compressed_without_plugin(),
        r"scan.dcm is compressed with JPEG 2000 .*cannot be decoded here .*pip install",
    ),
    ("huge-rows-columns", _huge_dicom(), r"scan.dcm declares 60000 x 60000 pixels"),
]


@pytest.mark.parametrize(
    "data, message", [c[1:] for c in DICOM_CASES], ids=[c[0] for c in DICOM_CASES]
)
def test_bad_dicom_is_refused_with_a_sentence(tmp_path, data, message):
    (tmp_path / "scan.dcm").write_bytes(data)
    with pytest.raises(UserError, match=message):
        preprocess_image(tmp_path / "scan.dcm", SPEC)


def test_monochrome1_dicom_is_inverted_not_refused(tmp_path):
    arr = ramp(4095)
    (tmp_path / "mono1.dcm").write_bytes(make_dicom(arr, "MONOCHROME1", bits_stored=12))
    gray = read_gray(tmp_path / "mono1.dcm")
    assert gray[arr == arr.max()].max() == 0.0 and gray[arr == 0].min() == 1.0
    assert preprocess_image(tmp_path / "mono1.dcm", SPEC).shape == (64, 48, 1)


# --- Bundles -----------------------------------------------------------------------------------


@pytest.fixture
def bundle_copy(demo_bundle, tmp_path) -> Path:
    """A copy of the session's tiny demo bundle, to damage freely."""
    return Path(shutil.copytree(demo_bundle, tmp_path / "bundles" / "copy"))


def _edit_meta(folder: Path, change) -> None:
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    change(meta)
    (folder / META_FILE).write_text(json.dumps(meta), encoding="utf-8")


@pytest.fixture(scope="module")
def lambda_model_file(tmp_path_factory) -> Path:
    """A .keras file of a tiny functional model holding a Python lambda."""
    import keras

    inputs = keras.Input((4,))
    hidden = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    path = tmp_path_factory.mktemp("lambda") / MODEL_FILE
    model.save(path)
    return path


def _set(key, value):
    return lambda d: _edit_meta(d, lambda m: m.__setitem__(key, value))


def _drop(key):
    return lambda d: _edit_meta(d, lambda m: m.pop(key))


BUNDLE_CASES = [
    ("folder-missing", lambda d: shutil.rmtree(d), r"Bundle not found: .* is not a folder"),
    (
        "empty-folder",
        lambda d: [p.unlink() for p in d.iterdir()],
        r"is not a model bundle: it needs bundle.json and model.keras",
    ),
    (
        "malformed-json",
        lambda d: (d / META_FILE).write_text('{"format_version": 1,'),
        r"bundle.json in .* is not valid JSON",
    ),
    (
        "binary-json",
        lambda d: (d / META_FILE).write_bytes(b"\xff\xfe\x00garbage"),
        r"bundle.json in .* is not valid JSON",
    ),
    (
        "json-not-an-object",
        lambda d: (d / META_FILE).write_text("[1, 2, 3]"),
        r"has no format_version; it is not a bundle",
    ),
    (
        "newer-format-version",
        _set("format_version", 99),
        r"written by a newer version \(bundle format 99, this one reads up to 2\); update",
    ),
    ("text-format-version", _set("format_version", "1"), r"has an invalid format_version '1'"),
    ("missing-threshold", _drop("threshold"), r"lacks 'threshold'; the bundle is incomplete"),
    ("missing-model-name", _drop("model_name"), r"lacks 'model_name'"),
    ("missing-preprocessing", _drop("preprocessing"), r"lacks 'preprocessing'"),
    ("threshold-not-a-number", _set("threshold", "high"), r"has no valid threshold value"),
    (
        "threshold-out-of-range",
        _set("threshold", {"value": 7, "method": "manual"}),
        r"has no valid threshold value \(a number from 0 to 1\)",
    ),
    ("preprocessing-not-a-dict", _set("preprocessing", 5), r"no valid preprocessing settings"),
    (
        "preprocessing-bad-size",
        _set("preprocessing", {"height": 5, "width": 48}),
        r"Image height must be a whole number from 32 to 4096, got 5",
    ),
    (
        "model-missing",
        lambda d: (d / MODEL_FILE).unlink(),
        r"is not a model bundle: it needs bundle.json and model.keras",
    ),
    (
        "model-garbage-bytes",
        lambda d: (d / MODEL_FILE).write_bytes(b"\x00garbage" * 64),
        r"model.keras in copy is damaged or not a Keras model .*train the model again",
    ),
]


@pytest.mark.parametrize(
    "damage, message", [c[1:] for c in BUNDLE_CASES], ids=[c[0] for c in BUNDLE_CASES]
)
def test_bad_bundle_is_refused_with_a_sentence(bundle_copy, damage, message):
    damage(bundle_copy)
    with pytest.raises(UserError, match=message) as info:
        load_bundle(bundle_copy).spec  # noqa: B018 (the spec is checked when read)
    assert "\n" not in str(info.value)


def test_lambda_layer_is_refused_by_safe_mode(bundle_copy, lambda_model_file):
    shutil.copyfile(lambda_model_file, bundle_copy / MODEL_FILE)
    with pytest.raises(UserError, match=r"refused: it holds custom code \(a Lambda layer") as info:
        load_bundle(bundle_copy)
    assert "safe_mode=False" not in str(info.value)  # never advise turning the guard off
    assert load_bundle(bundle_copy, with_model=False).meta  # the metadata alone stays readable


def test_cli_reports_a_bad_bundle_in_one_line(bundle_copy, capsys):
    (bundle_copy / MODEL_FILE).write_bytes(b"garbage")
    code, err = run_cli(["predict", "--bundle", str(bundle_copy), str(bundle_copy)], capsys)
    assert_one_line_error(code, err, r"^error: The model file model.keras in copy is damaged")
    code, err = run_cli(["evaluate", "--bundle", str(bundle_copy / "nope")], capsys)
    assert_one_line_error(code, err, r"^error: Bundle not found")


def test_cli_answers_no_mammogram_with_a_reason_per_file(bundle_copy, tmp_path, capsys):
    """Threat row 15: a blank or noise image gets a reason in the CLI, never a probability."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("L", (100, 120), 0).save(folder / "black.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (120, 100), dtype=np.uint8)).save(folder / "noise.png")
    code = cli.main(["predict", "--bundle", str(bundle_copy), str(folder), "--json"])
    out = capsys.readouterr().out
    entries = {Path(e["file"]).name: e for e in json.loads(out)}
    assert code == 2  # nothing could be predicted
    assert set(entries["black.png"]) == {"file", "error"}
    assert (
        "black.png: this does not look like a mammogram: it is blank"
        in entries["black.png"]["error"]
    )
    assert "does not look like a mammogram: it looks like noise" in entries["noise.png"]["error"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BCP_MAX_UPLOAD_PIXELS", "-5"),
        ("BCP_MAX_UPLOAD_FILES", "0"),
        ("BCP_MAX_UPLOAD_FILES", "many"),
        ("BCP_PREDICTION_CACHE_MB", "1.5"),
    ],
)
def test_bad_upload_limit_settings_are_refused_with_a_sentence(monkeypatch, variable, value):
    from bcp_core import settings

    monkeypatch.setenv(variable, value)
    read = {
        "BCP_MAX_UPLOAD_PIXELS": settings.max_upload_pixels,
        "BCP_MAX_UPLOAD_FILES": settings.max_upload_files,
        "BCP_PREDICTION_CACHE_MB": settings.prediction_cache_bytes,
    }[variable]
    with pytest.raises(UserError, match=rf"^{variable} must be a whole number of at least 1"):
        read()


# --- Bundle paths that leave the bundles folder --------------------------------------------------


def _outside_link(root: Path) -> str:
    outside = root.parent / "elsewhere"
    shutil.copytree(root / "demo", outside)
    os.symlink(outside, root / "link")
    return "link"


ESCAPE_CASES = [
    ("dot-dot", lambda root: "../../something", r"lies outside the bundles folder"),
    ("dot-dot-after-name", lambda root: "demo/../../x", r"lies outside the bundles folder"),
    ("absolute-elsewhere", lambda root: str(root.parent), r"lies outside the bundles folder"),
    ("the-folder-itself", lambda root: ".", r"lies outside the bundles folder"),
    ("symlink-outside", _outside_link, r"'link' lies outside the bundles folder"),
    ("empty-name", lambda root: "  ", r"No bundle name given"),
]


@pytest.mark.parametrize(
    "name_of, message", [c[1:] for c in ESCAPE_CASES], ids=[c[0] for c in ESCAPE_CASES]
)
def test_bundle_name_that_escapes_the_bundles_folder_is_refused(bundles_dir, name_of, message):
    with pytest.raises(UserError, match=message):
        resolve_bundle_path(bundles_dir, name_of(bundles_dir))


def test_bundle_inside_the_folder_resolves_and_outside_links_are_not_listed(bundles_dir):
    assert resolve_bundle_path(bundles_dir, "demo") == (bundles_dir / "demo").resolve()
    os.symlink(bundles_dir / "demo", bundles_dir / "alias")  # a link inside is fine
    assert resolve_bundle_path(bundles_dir, "alias") == (bundles_dir / "demo").resolve()
    _outside_link(bundles_dir)
    assert set(list_bundles_df(bundles_dir)["bundle"]) == {"demo", "alias"}


# --- Thresholds ---------------------------------------------------------------------------------

THRESHOLD_CASES = [
    ("above-one", 1.5),
    ("negative", -0.1),
    ("nan", float("nan")),
    ("infinity", float("inf")),
    ("text", "abc"),
    ("none", None),
    ("bool", True),
]


@pytest.mark.parametrize(
    "value", [c[1] for c in THRESHOLD_CASES], ids=[c[0] for c in THRESHOLD_CASES]
)
def test_threshold_outside_zero_one_is_refused_and_nothing_written(bundle_copy, value):
    before = (bundle_copy / META_FILE).read_bytes()
    with pytest.raises(UserError, match=r"A threshold must be a number between 0 and 1, got"):
        update_threshold(bundle_copy, value, "manual")
    assert (bundle_copy / META_FILE).read_bytes() == before
    assert leftovers(bundle_copy) == []


# --- Settings ----------------------------------------------------------------------------------

SETTING_CASES = [
    ("epochs-zero", {"epochs": 0}, r"Epochs must be a whole number from 1 to 500, got 0"),
    ("epochs-text", {"epochs": "5"}, r"Epochs must be a whole number .*got '5'"),
    ("epochs-fraction", {"epochs": 2.5}, r"Epochs must be a whole number .*got 2.5"),
    ("epochs-bool", {"epochs": True}, r"Epochs must be a whole number .*got True"),
    ("batch-zero", {"batch_size": 0}, r"Batch size must be a whole number from 1 to 512"),
    ("batch-huge", {"batch_size": 100000}, r"Batch size must be .*got 100000"),
    ("lr-negative", {"learning_rate": -0.001}, r"Learning rate must be from 1e-7 to 1, got -0.001"),
    ("lr-zero", {"learning_rate": 0}, r"Learning rate must be from 1e-7 to 1, got 0"),
    ("lr-text", {"learning_rate": "fast"}, r"Learning rate must be .*got 'fast'"),
    ("lr-nan", {"learning_rate": float("nan")}, r"Learning rate must be .*got nan"),
    ("unknown-model", {"model": "alexnet"}, r"Unknown model 'alexnet'; choose one of: .*seed_cnn"),
    ("unknown-imbalance", {"imbalance": "smote"}, r"Unknown imbalance method 'smote'; choose"),
    ("image-size-10", {"image_size": (10, 10)}, r"Image height must be .*from 32 to 4096, got 10"),
    ("image-size-huge", {"image_size": (320, 99999)}, r"Image width must be .*got 99999"),
    ("image-size-one-number", {"image_size": (320,)}, r"Image size must be two numbers"),
    ("image-size-none", {"image_size": None}, r"Image size must be two numbers .*got None"),
    ("image-size-text", {"image_size": ("a", "b")}, r"Image height must be .*got 'a'"),
    ("val-fraction-0.9", {"val_fraction": 0.9}, r"Validation fraction must be from 0.05 to 0.5"),
    ("val-fraction-zero", {"val_fraction": 0}, r"Validation fraction must be .*got 0"),
    ("smoothing-0.6", {"label_smoothing": 0.6}, r"Label smoothing must be from 0 to 0.49, got 0.6"),
    ("smoothing-negative", {"label_smoothing": -0.1}, r"Label smoothing must be .*got -0.1"),
    ("patience-zero", {"patience": 0}, r"Patience must be a whole number from 1 to 500"),
    ("seed-negative", {"seed": -1}, r"Seed must be a whole number from 0"),
    (
        "weights-file-missing-resnet50",
        {"model": "resnet50", "weights": "/no/such/resnet50_notop.h5"},
        r"The weights file '/no/such/resnet50_notop.h5' does not exist; pass 'none', 'imagenet'",
    ),
    (
        "weights-for-default-cnn",
        {"model": "default_cnn", "weights": "imagenet"},
        r"Pretrained weights apply to .*resnet50, .* only, not 'default_cnn'",
    ),
    ("fine-tune-text", {"fine_tune": "yes"}, r"Fine-tune must be true or false, got 'yes'"),
    ("augment-number", {"augment": 1}, r"Augment must be true or false, got 1"),
    ("threshold-method", {"threshold_method": "magic"}, r"Unknown threshold method 'magic'"),
]


@pytest.mark.parametrize(
    "settings, message", [c[1:] for c in SETTING_CASES], ids=[c[0] for c in SETTING_CASES]
)
def test_bad_training_setting_is_refused(settings, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(**settings).validate()


CLI_CASES = [
    ("epochs-not-a-number", ["--epochs", "ten"], r"argument --epochs: invalid int value: 'ten'"),
    ("lr-not-a-number", ["--learning-rate", "fast"], r"--learning-rate: invalid float value"),
    ("image-size-one-value", ["--image-size", "320"], r"--image-size: expected 2 arguments"),
    ("unknown-model", ["--model", "alexnet"], r"--model: invalid choice: 'alexnet'"),
    ("epochs-zero", ["--epochs", "0"], r"^error: Epochs must be a whole number from 1 to 500"),
    ("batch-negative", ["--batch-size", "-4"], r"^error: Batch size must be .*got -4"),
    ("lr-negative", ["--learning-rate", "-1"], r"^error: Learning rate must be .*got -1.0"),
    ("lr-nan", ["--learning-rate", "nan"], r"^error: Learning rate must be .*got nan"),
    ("val-fraction", ["--val-fraction", "0.9"], r"^error: Validation fraction must be"),
    ("image-size-10", ["--image-size", "10", "10"], r"^error: Image height must be"),
    (
        "weights-missing",
        ["--model", "resnet50", "--weights", "/no/such.h5"],
        r"^error: The weights file '/no/such.h5' does not exist",
    ),
]


@pytest.mark.parametrize(
    "extra, message", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_refuses_bad_numbers_in_one_line(tmp_path, capsys, extra, message):
    # Settings are checked before any data is read, so the data root need not exist.
    argv = ["train", "--data-root", str(tmp_path / "none"), "--out", str(tmp_path / "b"), *extra]
    code, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "b").exists()


# --- Output: read-only folders and a full disk ---------------------------------------------------


def test_demo_data_into_read_only_folder_chmod(tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        skip_if_permissions_ignored(parent)
        code, err = run_cli(["demo-data", "--out", str(parent / "demo")], capsys)
        assert_one_line_error(code, err, r"^error: Cannot write the demo dataset to .*demo")
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


@pytest.mark.parametrize(
    "code, message",
    [(errno.EACCES, r"Permission denied"), (errno.ENOSPC, r"No space left on device")],
    ids=["read-only", "disk-full"],
)
def test_demo_data_write_failure_leaves_nothing(tmp_path, capsys, monkeypatch, code, message):
    def fail(tmp, *args):
        (tmp / "half-written.xlsx").write_bytes(b"PK")
        raise os_error(code)

    monkeypatch.setattr(demo, "_write_all", fail)
    out = tmp_path / "demo"
    rc, err = run_cli(["demo-data", "--out", str(out)], capsys)
    assert_one_line_error(rc, err, rf"^error: Cannot write the demo dataset to .*\({message}\)")
    assert list(tmp_path.iterdir()) == []  # no demo folder, no .demo.partial-*


def test_demo_data_into_a_non_empty_folder_is_refused(tmp_path, capsys):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "mine.txt").write_text("keep me")
    code, err = run_cli(["demo-data", "--out", str(tmp_path / "demo")], capsys)
    assert_one_line_error(code, err, r"already exists and is not empty; choose another folder")
    assert [p.name for p in (tmp_path / "demo").iterdir()] == ["mine.txt"]


TRAIN_ARGS = ["--model", "seed_cnn", "--image-size", "32", "32", "--epochs", "1"]
TRAIN_ARGS += ["--batch-size", "64", "--json"]


def test_train_into_read_only_folder_chmod(small_demo, tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        skip_if_permissions_ignored(parent)
        argv = ["train", "--data-root", str(small_demo[0]), "--out", str(parent / "b"), *TRAIN_ARGS]
        code, err = run_cli(argv, capsys)
        assert_one_line_error(code, err, r"^error: Cannot write the bundle to .*choose a folder")
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


def test_train_into_unwritable_folder_simulated(small_demo, tmp_path, capsys, monkeypatch):
    import tempfile

    def mkdtemp(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(
        fileio, "tempfile", SimpleNamespace(mkdtemp=mkdtemp, mkstemp=tempfile.mkstemp)
    )
    out = tmp_path / "bundles" / "b"
    argv = ["train", "--data-root", str(small_demo[0]), "--out", str(out), *TRAIN_ARGS]
    code, err = run_cli(argv, capsys)
    assert_one_line_error(
        code, err, r"^error: Cannot write the bundle to .*\(Permission denied\); choose a folder"
    )
    assert not out.exists() and leftovers(out.parent) == []


@pytest.fixture(scope="module")
def tiny_model():
    import keras

    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(1)(inputs))


def _save_over(target: Path, model) -> Path:
    meta = BundleMeta("tiny", PreprocessSpec(), ThresholdChoice(0.5))
    return save_bundle(target, model, meta, pd.DataFrame({"epoch": [1]}), pd.DataFrame())


def _assert_previous_bundle_intact(target: Path, meta_before: bytes) -> None:
    assert (target / META_FILE).read_bytes() == meta_before
    assert load_bundle(target).model is not None  # still loads, model included
    assert leftovers(target.parent) == []


def test_full_disk_while_saving_keeps_the_previous_bundle(bundle_copy, tiny_model, monkeypatch):
    import keras

    before = (bundle_copy / META_FILE).read_bytes()

    def save(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a model")
        raise os_error(errno.ENOSPC)

    monkeypatch.setattr(keras.Model, "save", save)
    with pytest.raises(UserError, match=r"\(No space left on device\); free some disk space"):
        _save_over(bundle_copy, tiny_model)
    monkeypatch.undo()
    _assert_previous_bundle_intact(bundle_copy, before)


def test_full_disk_at_the_final_rename_puts_the_previous_bundle_back(
    bundle_copy, tiny_model, monkeypatch
):
    before = (bundle_copy / META_FILE).read_bytes()
    real = os.replace

    def replace(src, dst):
        if ".tmp-" in str(src) and Path(dst) == bundle_copy:
            raise os_error(errno.ENOSPC)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(UserError, match=r"No space left on device"):
        _save_over(bundle_copy, tiny_model)
    monkeypatch.undo()
    _assert_previous_bundle_intact(bundle_copy, before)


def test_bundle_parent_is_a_file(tmp_path, tiny_model):
    (tmp_path / "bundles").write_text("a file where a folder should be")
    with pytest.raises(UserError, match=r"Cannot write the bundle to .*bundles/b \("):
        _save_over(tmp_path / "bundles" / "b", tiny_model)


@pytest.mark.parametrize(
    "code, message",
    [(errno.ENOSPC, r"No space left on device\); free some disk space"),
     (errno.EROFS, r"Read-only file system\); choose a folder you can write to")],
    ids=["disk-full", "read-only"],
)  # fmt: skip
def test_threshold_write_failure_keeps_bundle_json(bundle_copy, monkeypatch, code, message):
    before = (bundle_copy / META_FILE).read_bytes()
    real = os.replace

    def replace(src, dst):
        if Path(dst).name == META_FILE:
            raise os_error(code)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(UserError, match=message):
        update_threshold(bundle_copy, 0.3, "manual")
    monkeypatch.undo()
    assert (bundle_copy / META_FILE).read_bytes() == before
    assert leftovers(bundle_copy) == []
