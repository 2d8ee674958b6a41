"""Constants and configuration dataclasses: the one home for names and defaults.

Every sheet name, column name, folder spelling and default that more than one module
needs lives here, so the hospital layout is described in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# --- Workbooks -------------------------------------------------------------------------

#: File names of the hospital's workbooks (matched case-insensitively in the data root).
COMBINED_WORKBOOK = "datacombined.xlsx"
VALIDATION_WORKBOOK = "data_validation_x.xlsx"
#: The user's intermediate exports, accepted instead of the workbooks (CSV or Excel inside).
CANCER_EXPORT = "CANCER.csv"
NON_CANCER_EXPORT = "NON CANCER.csv"

SHEET_CANCER = "Cancer"
SHEET_NON_CANCER = "Non-Cancer"
#: Name used for the validation workbook's rows in reports (it has a single sheet).
SHEET_VALIDATION = "validation"

COL_FILE = "InputFileName"
COL_DATE = "StudyDate"
COL_TIME = "StudyTime"
COL_PATIENT = "PatientID.x"
#: Column names accepted for the patient ID part of the key, in order of preference.
PATIENT_COLUMNS = ("PatientID.x", "PatientID", "PatientID.y")
KEY_COLUMNS = (COL_FILE, COL_DATE, COL_TIME, COL_PATIENT)
COL_ABSPATH = "AbsolutePath"
COL_UNIQUE_KEY = "UniqueKey"
COL_VIEW = "ViewPosition"
COL_LATERALITY = "ImageLaterality"
KEY_SEPARATOR = "-"

# --- Image folders ----------------------------------------------------------------------

#: Folder spellings seen for each class, compared after casefolding and dropping
#: everything but letters and digits ("Non-Cancer", "non cancer", "NON_CANCER" -> "noncancer").
CANCER_FOLDER_NAMES = ("cancer", "kanser", "malignant")
NON_CANCER_FOLDER_NAMES = ("noncancer", "nocancer", "normal", "benign", "kanserdegil")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".dcm", ".tif", ".tiff")

# --- Manifest ---------------------------------------------------------------------------

LABEL_CANCER = 1
LABEL_NON_CANCER = 0
CLASS_NAMES = ("non-cancer", "cancer")
VIEWS = ("CC", "MLO")
LATERALITIES = ("L", "R")
#: Columns of the manifest DataFrame, the one table every later stage reads.
MANIFEST_COLUMNS = (
    "path",  # absolute path of the image file
    "relpath",  # path relative to the data root, with forward slashes
    "label",  # 1 cancer, 0 non-cancer
    "patient_id",
    "view",  # CC / MLO / "" when unknown
    "laterality",  # L / R / "" when unknown
    "key",  # normalised UniqueKey (cancer) or normalised InputFileName (non-cancer)
    "sheet",  # sheet the row came from
    "row",  # Excel row number in that sheet (header is row 1)
)
UNMATCHED_COLUMNS = ("sheet", "row", "key", "reason")

# --- Unmatched-row reasons (stable wording: tests and the CLI rely on the prefixes) --------

REASON_NO_VALIDATION = "no validation row has this key"
REASON_NO_CANCER_ROW = "no Cancer row has this key"
REASON_EMPTY_PART = "empty key part"
REASON_DUPLICATE = "duplicate key"
REASON_NOT_ON_DISK = "image not found under the data root"
REASON_AMBIGUOUS = "ambiguous image"
REASON_NO_PATH = "no AbsolutePath"

# --- Demo dataset -----------------------------------------------------------------------

DEMO_SCALES = ("small", "hospital")
DEMO_TRUTH_FILE = "demo_ground_truth.json"
DEFAULT_DEMO_DIR = Path(__file__).resolve().parent.parent / "demo_data"
DEFAULT_SEED = 42


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the synthetic dataset (validated by :func:`bcp_core.demo.write_demo_dataset`).

    Attributes:
        scale: "small" (a few hundred images) or "hospital" (the real row counts).
        seed: Random seed; the same seed writes the same files.
        image_height: Height of every image in pixels (width is about 0.8 of it).
        subtlety: 0 makes lesions obvious, 1 makes them barely visible.
    """

    scale: str = "small"
    seed: int = DEFAULT_SEED
    image_height: int = 1024
    subtlety: float = 0.6
