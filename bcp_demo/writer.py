"""Synthetic dataset in the hospital's layout, a stand-in for the real data root.

Writes ``datacombined.xlsx`` (sheets Cancer / Non-Cancer, 561 columns), ``data_validation_x.xlsx``
(16 columns, Windows ``AbsolutePath`` values), ``Cancer/<two subfolders>`` and
``Non-Cancer/batch_N`` filled with mammogram-like JPGs, with the same pitfalls as the real files:
Excel-number key parts, ``.jpg`` on one side only, stray spaces, mixed case, duplicate keys, empty
key parts, cancer rows without a validation row, validation rows that match nothing, file names
repeated across folders, and listed files that are absent. It also writes
``demo_ground_truth.json``: the counts and reasons a correct matcher must report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from openpyxl import Workbook
from PIL import Image

from bcp_core import config
from bcp_core.config import DemoConfig
from bcp_core.data.workbooks import excel_row
from bcp_core.errors import UserError
from bcp_core.fileio import staged_dir
from bcp_demo.synth import breast_params, render_mammogram, sample_breast_lesion

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class DemoPlan:
    """How many patients and pitfalls a scale has (cancer rows = 2 x patients + duplicates)."""

    cancer_patients: int
    normal_patients: int
    no_validation: int  # cancer rows whose validation row is absent
    changed_time: int  # cancer rows whose validation row has another StudyTime
    empty_time: int  # cancer rows with an empty StudyTime
    duplicates: int  # extra cancer rows repeating a matched row's key
    validation_rows: int
    missing_files: int  # Non-Cancer rows whose JPG is absent
    batch_size: int


PLANS = {
    "small": DemoPlan(40, 40, 4, 1, 1, 1, 80, 2, 50),
    "hospital": DemoPlan(51, 1224, 8, 4, 3, 3, 322, 6, 500),
}
CANCER_SUBFOLDERS = ("Cancer_1", "cancer 2")
WINDOWS_ROOT = "C:\\Users\\Aylın\\Desktop\\meme kanseri\\cancer"
VALIDATION_COLUMNS = (
    config.COL_FILE,
    config.COL_DATE,
    config.COL_TIME,
    config.COL_PATIENT,
    config.COL_ABSPATH,
    "BIRADS",
    "Finding",
    "Density",
    "Laterality",
    "View",
    "PatientAge",
    "Site",
    "ValidatedBy",
    "ValidationDate",
    "Pathology",
    "Comment",
)
_DICOM_FIELDS = (
    "Modality",
    config.COL_VIEW,
    config.COL_LATERALITY,
    "Manufacturer",
    "Rows",
    "Columns",
    "PatientAge",
    "PatientSex",
    "BodyPartExamined",
    "PhotometricInterpretation",
    "BitsStored",
    "BitsAllocated",
    "PixelSpacing",
    "WindowCenter",
    "WindowWidth",
    "KVP",
    "Exposure",
    "CompressionForce",
    "BodyPartThickness",
    "DetectorType",
    "InstitutionName",
    "StationName",
    "ManufacturerModelName",
    "SoftwareVersions",
    "SeriesDescription",
    "StudyDescription",
    "AccessionNumber",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "SeriesDate",
    "ContentDate",
    "AcquisitionDate",
    "SeriesTime",
    "ContentTime",
    "AcquisitionTime",
    "PresentationIntentType",
    "ImageType",
    "ViewCodeSequence",
    "PatientOrientation",
)
N_COMBINED_COLUMNS = 561
_MANUFACTURERS = ("HOLOGIC, Inc.", "GE MEDICAL SYSTEMS", "SIEMENS")


def combined_columns() -> list[str]:
    """The 561 column names of datacombined.xlsx: key columns, DICOM fields, R-merge suffixes."""
    cols = [config.COL_FILE, config.COL_DATE, config.COL_TIME, config.COL_PATIENT, "PatientID.y"]
    cols += list(_DICOM_FIELDS)
    cols += [f"{f}.x" for f in _DICOM_FIELDS[3:]] + [f"{f}.y" for f in _DICOM_FIELDS[3:]]
    i = 0
    while len(cols) < N_COMBINED_COLUMNS:
        cols.append(f"Private_0009_{0x1000 + i:04X}")
        i += 1
    return cols


@dataclass
class ImageSpec:
    """One synthetic image: where it goes, what it shows, how it is drawn."""

    relpath: str
    label: int
    patient_id: str
    view: str
    laterality: str
    patient: int
    lesion: object = None
    anatomy: dict | None = None
    gray: bool = False
    on_disk: bool = True


def _patients(rng: np.random.Generator, n: int) -> list[dict]:
    ids = rng.choice(10**9, size=n, replace=False)
    out = []
    for i, pid in enumerate(ids):
        hour = int(rng.integers(8, 17))
        year, month, day = rng.integers(2012, 2020), rng.integers(1, 13), rng.integers(1, 29)
        out.append(
            {
                "id": f"DIT{int(pid):09d}",
                "date": int(year) * 10000 + int(month) * 100 + int(day),
                "time": f"{hour:02d}{int(rng.integers(0, 60)):02d}{int(rng.integers(0, 60)):02d}",
                "age": int(rng.integers(40, 76)),
                "index": i,
            }
        )
    return out


def _combined_row(spec: ImageSpec, name: str, pat: dict, rng: np.random.Generator) -> dict:
    """One datacombined row, key parts written the way Excel stores them."""
    time_num = int(pat["time"])  # Excel drops the leading zero: 092603 -> 92603
    time_value: object = float(time_num) if rng.random() < 0.3 else time_num
    return {
        config.COL_FILE: name,
        config.COL_DATE: pat["date"],
        config.COL_TIME: time_value,
        config.COL_PATIENT: pat["id"],
        "PatientID.y": pat["id"],
        "Modality": "MG",
        config.COL_VIEW: spec.view,
        config.COL_LATERALITY: spec.laterality,
        "Manufacturer": _MANUFACTURERS[pat["index"] % 3],
        "Rows": 4096,
        "Columns": 3328,
        "PatientAge": f"{pat['age']:03d}Y",
        "PatientSex": "F",
        "BodyPartExamined": "BREAST",
        "PhotometricInterpretation": "MONOCHROME2",
    }


def _validation_row(
    name: str, pat: dict, sub: str, rng: np.random.Generator, time: str | None = None
) -> dict:
    """One data_validation_x row, key parts written differently from datacombined."""
    file_value = name + ".jpg" if rng.random() < 0.5 else name
    if rng.random() < 0.1:
        file_value += " "
    date_value: object = str(pat["date"]) if rng.random() < 0.5 else float(pat["date"])
    pid = pat["id"].lower() if rng.random() < 0.1 else pat["id"]
    return {
        config.COL_FILE: file_value,
        config.COL_DATE: date_value,
        config.COL_TIME: time or pat["time"],
        config.COL_PATIENT: pid,
        config.COL_ABSPATH: f"{WINDOWS_ROOT}\\{sub}\\{name}.jpg",
        "BIRADS": int(rng.integers(4, 6)),
        "Finding": str(rng.choice(["mass", "calcification", "architectural distortion"])),
        "Pathology": "malignant",
        "Site": "Screening",
    }


def plan_dataset(cfg: DemoConfig) -> tuple[list[ImageSpec], dict, list[dict]]:
    """Decide every image, sheet row and pitfall of a demo dataset (no I/O).

    Returns:
        ``(images, sheets, truth_rows)``: images to draw; ``sheets`` maps "Cancer", "Non-Cancer"
        and "validation" to lists of row dicts; ``truth_rows`` lists every row a correct matcher
        must report as unusable, with the reason prefix from :mod:`bcp_core.config`.
    """
    if cfg.scale not in PLANS:
        raise UserError(f"Unknown demo scale {cfg.scale!r}; choose one of: {', '.join(PLANS)}.")
    if not 0.0 <= cfg.subtlety <= 1.0:
        raise UserError(f"Lesion subtlety must be between 0 and 1, got {cfg.subtlety!r}.")
    if cfg.image_height < 64:
        raise UserError(f"Demo image height must be at least 64 pixels, got {cfg.image_height!r}.")
    plan = PLANS[cfg.scale]
    rng = np.random.default_rng(cfg.seed)
    cancer_pats = _patients(rng, plan.cancer_patients + plan.normal_patients)
    normal_pats = cancer_pats[plan.cancer_patients :]
    cancer_pats = cancer_pats[: plan.cancer_patients]

    images: list[ImageSpec] = []
    cancer_rows: list[dict] = []
    cancer_meta: list[tuple[str, dict, str]] = []  # (name, patient, subfolder) per cancer row
    non_cancer_rows: list[dict] = []
    counters = {sub: 0 for sub in CANCER_SUBFOLDERS}
    nc_counter = 0
    for pat in cancer_pats + normal_pats:
        is_cancer = pat["index"] < plan.cancer_patients
        anatomy = breast_params(rng)
        side = str(rng.choice(config.LATERALITIES)) if is_cancer else ""
        lesions = sample_breast_lesion(rng, cfg.subtlety) if is_cancer else {}
        sub = CANCER_SUBFOLDERS[pat["index"] % 2]
        for lat in config.LATERALITIES:
            for view in config.VIEWS:
                spec = ImageSpec(
                    "",
                    0,
                    pat["id"],
                    view,
                    lat,
                    pat["index"],
                    anatomy=anatomy,
                    gray=bool(rng.random() < 0.15),
                )
                ext = ".JPG" if rng.random() < 0.05 else ".jpg"
                if lat == side:
                    counters[sub] += 1
                    name = f"FILE{counters[sub]:04d}"
                    spec.relpath, spec.label, spec.lesion = (
                        f"Cancer/{sub}/{name}{ext}",
                        1,
                        lesions[view],
                    )
                    cancer_rows.append(_combined_row(spec, name, pat, rng))
                    cancer_meta.append((name, pat, sub))
                else:
                    nc_counter += 1
                    name = f"FILE{nc_counter:04d}"
                    batch = (nc_counter - 1) // plan.batch_size + 1
                    spec.relpath = f"Non-Cancer/batch_{batch}/{name}{ext}"
                    non_cancer_rows.append(_combined_row(spec, name, pat, rng))
                images.append(spec)
    return _add_pitfalls(cfg, plan, rng, images, cancer_rows, cancer_meta, non_cancer_rows)


def _add_pitfalls(cfg, plan, rng, images, cancer_rows, cancer_meta, non_cancer_rows):
    """Break some rows on purpose, the way the real workbooks are broken, and record the truth."""
    n = len(cancer_rows)
    order = rng.permutation(n)
    cut = np.cumsum([plan.no_validation, plan.changed_time, plan.empty_time])
    no_val, changed, empty = (
        set(order[: cut[0]]),
        set(order[cut[0] : cut[1]]),
        set(order[cut[1] : cut[2]]),
    )
    matched = [i for i in range(n) if i not in no_val | changed | empty]
    truth: list[dict] = []
    validation: list[dict] = []
    for i in range(n):
        name, pat, sub = cancer_meta[i]
        if i in empty:
            cancer_rows[i][config.COL_TIME] = None
            truth.append(
                {"sheet": config.SHEET_CANCER, "index": i, "reason": config.REASON_EMPTY_PART}
            )
        if i in no_val:
            truth.append(
                {"sheet": config.SHEET_CANCER, "index": i, "reason": config.REASON_NO_VALIDATION}
            )
            continue
        time = None
        if i in changed:
            time = f"{(int(pat['time']) + 7) % 240000:06d}"
            truth.append(
                {"sheet": config.SHEET_CANCER, "index": i, "reason": config.REASON_NO_VALIDATION}
            )
        validation.append(_validation_row(name, pat, sub, rng, time))
        if i in changed or i in empty:
            truth.append(
                {
                    "sheet": config.SHEET_VALIDATION,
                    "index": len(validation) - 1,
                    "reason": config.REASON_NO_CANCER_ROW,
                }
            )
    # Duplicates: extra rows repeating a matched row's key, placed after the original.
    for orig in sorted(rng.choice(matched, size=plan.duplicates, replace=False), reverse=True):
        pos = int(rng.integers(orig + 1, len(cancer_rows) + 1))
        cancer_rows.insert(pos, dict(cancer_rows[orig]))
        for t in truth:
            if t["sheet"] == config.SHEET_CANCER and t["index"] >= pos:
                t["index"] += 1
        truth.append(
            {"sheet": config.SHEET_CANCER, "index": pos, "reason": config.REASON_DUPLICATE}
        )
    others = _patients(rng, plan.validation_rows - len(validation))
    for pat in others:
        name = f"FILE{int(rng.integers(5000, 9999)):04d}"
        validation.append(_validation_row(name, pat, str(rng.choice(CANCER_SUBFOLDERS)), rng))
        truth.append(
            {
                "sheet": config.SHEET_VALIDATION,
                "index": len(validation) - 1,
                "reason": config.REASON_NO_CANCER_ROW,
            }
        )
    order = rng.permutation(len(validation))
    validation = [validation[j] for j in order]
    where = {int(j): k for k, j in enumerate(order)}
    for t in truth:
        if t["sheet"] == config.SHEET_VALIDATION:
            t["index"] = where[t["index"]]
    nc_images = [s for s in images if s.label == 0]
    for j in rng.choice(len(nc_images), size=plan.missing_files, replace=False):
        nc_images[j].on_disk = False
        # Non-Cancer rows were written in the same order as the non-cancer images.
        truth.append(
            {"sheet": config.SHEET_NON_CANCER, "index": int(j), "reason": config.REASON_NOT_ON_DISK}
        )
    for t in truth:
        t["row"] = excel_row(t.pop("index"))
    sheets = {
        config.SHEET_CANCER: cancer_rows,
        config.SHEET_NON_CANCER: non_cancer_rows,
        config.SHEET_VALIDATION: validation,
    }
    return images, sheets, truth


def _render_one(args: tuple) -> None:
    spec, path, height, seed = args
    rng = np.random.default_rng(
        [
            seed,
            spec.patient,
            config.VIEWS.index(spec.view),
            config.LATERALITIES.index(spec.laterality),
        ]
    )
    width = int(round(height * 0.8125 / 8)) * 8
    pixels = render_mammogram(
        rng,
        height=height,
        width=width,
        view=spec.view,
        laterality=spec.laterality,
        lesion=spec.lesion,
        anatomy=spec.anatomy,
    )
    img = Image.fromarray(pixels, mode="L")
    if not spec.gray:
        img = img.convert("RGB")  # the hospital's JPGs are mostly 3-channel grey
    img.save(path, format="JPEG", quality=92)


def _write_xlsx(path: Path, sheets: dict[str, tuple[list[str], list[dict]]]) -> None:
    wb = Workbook(write_only=True)
    for title, (columns, rows) in sheets.items():
        ws = wb.create_sheet(title)
        ws.append(columns)
        for row in rows:
            ws.append([row.get(c) for c in columns])
    wb.save(path)


def write_demo_dataset(
    out: Path,
    cfg: DemoConfig | None = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    workers: int | None = None,
) -> dict:
    """Write a demo dataset to ``out`` atomically (a temporary folder renamed into place).

    Args:
        out: folder to create; it must not exist unless ``overwrite``.
        cfg: scale, seed, image size and lesion subtlety.
        overwrite: replace an existing folder.
        progress: called as ``progress(done, total, stage)`` while images are drawn.
        workers: processes for drawing (default: the number of CPUs).

    Returns:
        The ground truth (also written to ``out/demo_ground_truth.json``).
    """
    out = Path(out)
    cfg = cfg or DemoConfig()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(
            f"{out} already exists and is not empty; choose another folder or overwrite it."
        )
    images, sheets, truth_rows = plan_dataset(cfg)
    try:
        with staged_dir(out) as tmp:
            _write_all(tmp, cfg, images, sheets, progress, workers)
            truth = _truth(cfg, images, sheets, truth_rows)
            (tmp / config.DEMO_TRUTH_FILE).write_text(json.dumps(truth, indent=1), encoding="utf-8")
    except OSError as exc:
        raise UserError(
            f"Cannot write the demo dataset to {out} ({exc.strerror or exc}); "
            "choose a folder you can write to, with some free disk space."
        ) from exc
    return truth


def _write_all(
    tmp: Path,
    cfg: DemoConfig,
    images: list[ImageSpec],
    sheets: dict,
    progress: Progress | None,
    workers: int | None,
) -> None:
    columns = combined_columns()
    _write_xlsx(
        tmp / config.COMBINED_WORKBOOK,
        {
            config.SHEET_CANCER: (columns, sheets[config.SHEET_CANCER]),
            config.SHEET_NON_CANCER: (columns, sheets[config.SHEET_NON_CANCER]),
        },
    )
    _write_xlsx(
        tmp / config.VALIDATION_WORKBOOK,
        {"Sheet1": (list(VALIDATION_COLUMNS), sheets[config.SHEET_VALIDATION])},
    )
    todo = [s for s in images if s.on_disk]
    for folder in {str(Path(s.relpath).parent) for s in todo}:
        (tmp / folder).mkdir(parents=True, exist_ok=True)
    jobs = [(s, tmp / s.relpath, cfg.image_height, cfg.seed) for s in todo]
    workers = workers or min(os.cpu_count() or 1, 8)
    results: Iterator[None]
    if workers == 1:
        results = map(_render_one, jobs)
    else:
        pool = ProcessPoolExecutor(workers)
        results = pool.map(_render_one, jobs, chunksize=8)
    try:
        for done, _ in enumerate(results, 1):
            if progress:
                progress(done, len(jobs), "images")
    finally:
        if workers != 1:
            pool.shutdown()


def _truth(cfg: DemoConfig, images: list[ImageSpec], sheets: dict, rows: list[dict]) -> dict:
    """The counts and unusable rows a correct matcher must report."""
    bad = {(r["sheet"], r["row"]) for r in rows}
    n_cancer = len(sheets[config.SHEET_CANCER])
    cancer_bad = sum(1 for s, _ in bad if s == config.SHEET_CANCER)
    nc_missing = sum(1 for s, _ in bad if s == config.SHEET_NON_CANCER)
    return {
        "config": asdict(cfg),
        "counts": {
            "cancer_rows": n_cancer,
            "cancer_key_matched": n_cancer - cancer_bad,
            "cancer_images_found": n_cancer - cancer_bad,
            "non_cancer_rows": len(sheets[config.SHEET_NON_CANCER]),
            "non_cancer_images_found": len(sheets[config.SHEET_NON_CANCER]) - nc_missing,
            "validation_rows": len(sheets[config.SHEET_VALIDATION]),
        },
        "unmatched": sorted(rows, key=lambda r: (r["sheet"], r["row"])),
        "images": [
            {
                "relpath": s.relpath,
                "label": s.label,
                "patient_id": s.patient_id,
                "view": s.view,
                "laterality": s.laterality,
                "on_disk": s.on_disk,
                "lesion": getattr(s.lesion, "kind", None),
            }
            for s in images
        ],
    }
