"""Performance per subgroup: the validation images grouped by one workbook column.

Pure functions over values: the column's cells come from :mod:`bcp_core.data.attributes`
(``image_values``), the labels and probabilities from a bundle's validation predictions.

Grouping rules (:func:`group_labels`):

- **empty** cells (and images whose workbook row was not found) form the group "missing";
- **numeric** columns (every non-empty cell a number, or a number written as text, or a DICOM
  age string such as ``065Y``): an **age** (the column's name ends in "age", or its cells are
  DICOM age strings, and every value lies in 0-120) is binned by decade ("40-49"); any other
  numeric column with at most 5 distinct values keeps one group per value, and one with more is
  cut into at most 5 bins of about equal counts (quantile bins that never split a tie:
  :func:`equal_count_spans`), labelled by the smallest and largest value in each ("[40, 52]");
- **text** columns (and dates, grouped by year) are grouped by their normalised value (Unicode
  NFKC, spaces collapsed, letter case ignored) and shown in their most frequent spelling; a
  value with fewer than ``min_images`` images or fewer than ``min_patients`` patients is pooled
  into "other", so that no group names a value that only one or two patients carry.

Figures (:func:`subgroup_performance`), at ``probability >= threshold``, per image:

- sensitivity needs ``min_class_images`` cancer images in the group, specificity as many
  non-cancer images, ROC-AUC both; a group that lacks them has no such figure and a reason
  ("too few cancer images (2) for a figure");
- sensitivity and specificity carry **Wilson** score intervals (images counted as independent:
  they do not collapse to a point at 0% or 100%, as a bootstrap of a small group does, but they
  are narrower than a patient bootstrap where a patient gives several images);
- ROC-AUC carries a percentile **bootstrap over patients** (:func:`bootstrap_auc_intervals`).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bcp_core.errors import UserError
from bcp_core.evaluation.intervals import (
    DEFAULT_CONFIDENCE,
    bootstrap_auc_intervals,
    weighted_aucs,
    wilson_interval,
)
from bcp_core.evaluation.metrics import as_arrays, check_threshold
from bcp_core.formatting import with_interval
from bcp_core.values import is_blank

MISSING = "missing"
OTHER = "other"
#: A text value needs this many images, and this many patients, to be a group of its own.
MIN_GROUP_IMAGES = 5
MIN_GROUP_PATIENTS = 3
#: Images of a class a group needs for a figure (sensitivity: cancer; specificity: non-cancer).
MIN_CLASS_IMAGES = 5
#: Most quantile bins of a numeric column.
MAX_BINS = 5
#: Columns of :attr:`SubgroupTable.groups`.
GROUP_COLUMNS = (
    "group",
    "images",
    "cancer_images",
    "non_cancer_images",
    "patients",
    "sensitivity",
    "sensitivity_low",
    "sensitivity_high",
    "specificity",
    "specificity_low",
    "specificity_high",
    "roc_auc",
    "roc_auc_low",
    "roc_auc_high",
    "reason",
)

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_DICOM_AGE = re.compile(r"(\d{3})([DWMY])")
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def as_number(value: object) -> tuple[float | None, bool]:
    """``value`` as a number, and whether it was a DICOM age string (``065Y`` -> 65.0).

    Returns (None, False) for anything that is not a number: text, dates, booleans.
    """
    if isinstance(value, bool):
        return None, False
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        return (number, False) if math.isfinite(number) else (None, False)
    if isinstance(value, str):
        text = value.strip()
        age = _DICOM_AGE.fullmatch(text.upper())
        if age:
            return int(age[1]) * _AGE_UNIT_YEARS[age[2]], True
        if _NUMBER.fullmatch(text):
            return float(text), False
    return None, False


def normalised_text(value: object) -> str:
    """The value a text cell is grouped by: NFKC, spaces collapsed, letter case ignored."""
    if isinstance(value, (dt.datetime, dt.date, pd.Timestamp)):
        return str(value.year)
    return " ".join(unicodedata.normalize("NFKC", str(value)).split()).casefold()


def _shown_text(value: object) -> str:
    if isinstance(value, (dt.datetime, dt.date, pd.Timestamp)):
        return str(value.year)
    return " ".join(unicodedata.normalize("NFKC", str(value)).split())


def _looks_like_age(column: str, numbers: np.ndarray, dicom_age: bool) -> bool:
    name = re.sub(r"[^a-z]", "", re.sub(r"\.[xy]$", "", column.strip().lower()))
    named = name.endswith("age") and not name.endswith("image")
    return (
        (named or dicom_age) and bool(numbers.size) and 0 <= numbers.min() <= numbers.max() <= 120
    )


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Grouping:
    """Each image's group label, the groups in display order and the rule that made them."""

    labels: list[str]
    order: list[str]
    rule: str


def _numeric_groups(
    column: str, cells: list[object], numbers: list[float | None], dicom_age: bool
) -> Grouping:
    present = np.array([n for n in numbers if n is not None], dtype=float)
    labels = [MISSING] * len(cells)
    if _looks_like_age(column, present, dicom_age):
        bins: list[tuple[float, str]] = []
        for i, n in enumerate(numbers):
            if n is not None:
                low = int(n // 10) * 10
                labels[i] = f"{low}-{low + 9}"
                bins.append((low, labels[i]))
        order = [label for _, label in sorted(set(bins))]
        return Grouping(labels, order, "age by decade")
    distinct = np.unique(present)
    if distinct.size <= MAX_BINS:
        for i, n in enumerate(numbers):
            if n is not None:
                labels[i] = _fmt(n)
        return Grouping(labels, [_fmt(v) for v in distinct], "one group per value (at most 5)")
    spans = equal_count_spans(distinct, np.unique(present, return_counts=True)[1], MAX_BINS)
    names = [f"[{_fmt(distinct[a])}, {_fmt(distinct[b])}]" for a, b in spans]
    uppers = np.array([distinct[b] for _, b in spans])
    for i, n in enumerate(numbers):
        if n is not None:
            labels[i] = names[int(np.searchsorted(uppers, n, side="left"))]
    return Grouping(labels, names, f"at most {MAX_BINS} bins of about equal counts")


def equal_count_spans(distinct: np.ndarray, counts: np.ndarray, bins: int) -> list[tuple[int, int]]:
    """Cut sorted distinct values into at most ``bins`` runs of about equal image counts.

    Each run closes once it holds its share of the images not yet binned, so a tie is never
    split and a value that holds half the images is a bin of its own (where quantile edges
    would merge, and leave one bin).

    Returns:
        (first, last) indices into ``distinct`` of each run, in order.
    """
    spans: list[tuple[int, int]] = []
    start, held, remaining = 0, 0, int(np.sum(counts))
    for j, count in enumerate(counts):
        held += int(count)
        left = bins - len(spans)
        if left > 1 and j < len(counts) - 1 and held >= remaining / left:
            spans.append((start, j))
            start, remaining, held = j + 1, remaining - held, 0
    spans.append((start, len(counts) - 1))
    return spans


def _text_groups(
    cells: list[object], patients: Sequence[object], min_images: int, min_patients: int
) -> Grouping:
    keys = [None if is_blank(c) else normalised_text(c) for c in cells]
    frame = pd.DataFrame({"key": keys, "shown": [_shown_text(c) for c in cells], "p": patients})
    frame = frame[frame["key"].notna()]
    sizes = frame.groupby("key").agg(images=("p", "size"), patients=("p", "nunique"))
    kept = sizes[(sizes["images"] >= min_images) & (sizes["patients"] >= min_patients)]
    shown = {k: frame.loc[frame["key"] == k, "shown"].value_counts().index[0] for k in kept.index}
    for k in shown:  # a cell that reads "other" or "missing" is not taken for the pooled groups
        if k in (OTHER, MISSING):
            shown[k] = f"{shown[k]} (as written)"
    labels = [MISSING if k is None else shown.get(k, OTHER) for k in keys]
    order = [shown[k] for k in kept.sort_values("images", ascending=False, kind="stable").index]
    return Grouping(
        labels,
        order + ([OTHER] if OTHER in labels else []),
        f"one group per value; values of fewer than {min_images} images or {min_patients} "
        f"patients pooled into '{OTHER}'",
    )


def group_labels(
    column: str,
    cells: Sequence[object],
    patients: Sequence[object],
    *,
    min_images: int = MIN_GROUP_IMAGES,
    min_patients: int = MIN_GROUP_PATIENTS,
) -> Grouping:
    """The group of each image by the rules of this module's docstring.

    Args:
        column: the column's name (an age is recognised by it, among other signs).
        cells: the column's cell per image (None where empty or not found).
        patients: the patient ID per image (for the minimum of patients per text value).
        min_images, min_patients: a text value smaller than either is pooled into "other".
    """
    cells = list(cells)
    if len(patients) != len(cells):
        raise UserError(f"Got {len(patients)} patient IDs for {len(cells)} images.")
    parsed = [(None, False) if is_blank(c) else as_number(c) for c in cells]
    filled = [c for c in cells if not is_blank(c)]
    numeric = bool(filled) and all(
        n is not None for (n, _), c in zip(parsed, cells) if not is_blank(c)
    )
    if not filled:
        grouping = Grouping([MISSING] * len(cells), [], "every cell is empty")
    elif numeric:
        numbers = [n for n, _ in parsed]
        grouping = _numeric_groups(column, cells, numbers, any(a for _, a in parsed))
    else:
        grouping = _text_groups(cells, patients, min_images, min_patients)
    order = grouping.order + ([MISSING] if MISSING in grouping.labels else [])
    return Grouping(grouping.labels, order, grouping.rule)


def too_small_reason(n_cancer: int, n_non_cancer: int, minimum: int = MIN_CLASS_IMAGES) -> str:
    """Why a group lacks some figure ("" when it has them all).

    ``"too few cancer images (2) and non-cancer images (3) for a figure"``: none at all;
    ``"too few cancer images (2) for sensitivity or ROC-AUC"``: specificity only, and so on.
    """
    few_c, few_n = n_cancer < minimum, n_non_cancer < minimum
    if few_c and few_n:
        return (
            f"too few cancer images ({n_cancer}) and non-cancer images ({n_non_cancer}) "
            "for a figure"
        )
    if few_c:
        return f"too few cancer images ({n_cancer}) for sensitivity or ROC-AUC"
    if few_n:
        return f"too few non-cancer images ({n_non_cancer}) for specificity or ROC-AUC"
    return ""


@dataclass(frozen=True)
class SubgroupTable:
    """Performance per group of one column at one threshold.

    Attributes:
        column: the workbook column.
        rule: how its values were grouped (this module's docstring).
        threshold: images with ``probability >= threshold`` count as flagged.
        groups: one row per group (columns :data:`GROUP_COLUMNS`; NaN where a group has no
            figure, and then ``reason`` says why).
        images: images scored; of them ``not_found`` had no workbook row (group "missing").
        confidence: coverage of the intervals.
        n_boot: resamples of the ROC-AUC bootstrap.
        min_class_images: images of a class a group needs for that class's figures.
    """

    column: str
    rule: str
    threshold: float
    groups: pd.DataFrame
    images: int
    not_found: int = 0
    confidence: float = DEFAULT_CONFIDENCE
    n_boot: int = 1000
    min_class_images: int = MIN_CLASS_IMAGES

    def describe(self) -> str:
        """The sentence under the table: the rule, the threshold, the intervals, what is missing."""
        level = f"{self.confidence:.0%}"
        return (
            f"{self.column}: {self.rule}. Per image, at threshold {self.threshold:.4f}: "
            f"sensitivity and specificity with {level} Wilson intervals (images counted as "
            f"independent), ROC-AUC with a {level} bootstrap over patients ({self.n_boot} "
            f"resamples); a figure needs {self.min_class_images} images of its class. "
            f"{self.not_found} of {self.images} images had no workbook row (group '{MISSING}')."
        )

    def to_json(self) -> dict:
        """The table as JSON: its settings and one object per group (NaN figures as null)."""
        groups = [
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in self.groups.astype(object).to_dict(orient="records")
        ]
        return {
            "column": self.column,
            "rule": self.rule,
            "threshold": self.threshold,
            "images": self.images,
            "not_found": self.not_found,
            "confidence": self.confidence,
            "n_boot": self.n_boot,
            "min_class_images": self.min_class_images,
            "groups": groups,
        }

    def export_df(self) -> pd.DataFrame:
        """:attr:`groups` with the column's name in front (the CSV download)."""
        return self.groups.assign(column=self.column)[["column", *GROUP_COLUMNS]]

    def display_df(self) -> pd.DataFrame:
        """The table as the page shows it: counts, and each figure with its interval as text."""

        def pct(row, name: str) -> str:
            low, high = row[f"{name}_low"], row[f"{name}_high"]
            return with_interval(row[name], low, high, as_percent=True, undefined="")

        def auc(row) -> str:
            low, high = row["roc_auc_low"], row["roc_auc_high"]
            return with_interval(row["roc_auc"], low, high, as_percent=False, undefined="")

        g = self.groups
        return pd.DataFrame({
            self.column: g["group"],
            "images": g["images"],
            "cancer": g["cancer_images"],
            "non-cancer": g["non_cancer_images"],
            "patients": g["patients"],
            "sensitivity (95% CI)": [pct(r, "sensitivity") for _, r in g.iterrows()],
            "specificity (95% CI)": [pct(r, "specificity") for _, r in g.iterrows()],
            "ROC-AUC (95% CI)": [auc(r) for _, r in g.iterrows()],
            "note": g["reason"],
        })  # fmt: skip


def subgroup_performance(
    predictions: pd.DataFrame,
    cells: Sequence[object],
    column: str,
    threshold: float,
    *,
    found: Sequence[bool] | None = None,
    min_class_images: int = MIN_CLASS_IMAGES,
    min_images: int = MIN_GROUP_IMAGES,
    min_patients: int = MIN_GROUP_PATIENTS,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> SubgroupTable:
    """Sizes, sensitivity, specificity and ROC-AUC with intervals per group of ``column``.

    Args:
        predictions: per image ``label``, ``probability`` and ``patient_id`` (a bundle's
            validation predictions).
        cells: ``column``'s cell per prediction row, in order (None where empty).
        column: the column's name.
        threshold: cancer when ``probability >= threshold``.
        found: per prediction row, whether its workbook row was found (for the count only).
        min_class_images: images of a class a group needs for the figures of that class.
        min_images, min_patients: the pooling of rare text values (:func:`group_labels`).
        n_boot, seed, confidence: the ROC-AUC bootstrap and the coverage of every interval.
    """
    threshold = check_threshold(threshold)
    y, p = as_arrays(predictions["label"], predictions["probability"])
    patients = predictions["patient_id"].astype(str).to_numpy()
    cells = list(cells)
    if len(cells) != y.size:
        raise UserError(f"Got {len(cells)} cells for {y.size} predictions.")
    not_found = 0
    if found is not None:
        hits = np.asarray(list(found), dtype=bool)
        if hits.size != y.size:
            raise UserError(f"Got {hits.size} 'found' flags for {y.size} predictions.")
        if y.size and not hits.any():
            raise UserError(
                "None of the bundle's validation images is in this data root's workbooks; "
                "choose the data root the bundle was trained on."
            )
        not_found = int((~hits).sum())
    grouping = group_labels(
        column, cells, patients, min_images=min_images, min_patients=min_patients
    )
    labels = np.asarray(grouping.labels, dtype=object)
    rows = []
    for group in grouping.order:
        at = labels == group
        rows.append(
            _group_row(
                group,
                y[at],
                p[at],
                patients[at],
                threshold,
                min_class_images,
                n_boot,
                seed,
                confidence,
            )  # fmt: skip
        )
    groups = pd.DataFrame(rows, columns=list(GROUP_COLUMNS))
    return SubgroupTable(
        column, grouping.rule, threshold, groups, int(y.size), not_found, confidence, n_boot,
        min_class_images,
    )  # fmt: skip


def _group_row(
    group: str,
    y: np.ndarray,
    p: np.ndarray,
    patients: np.ndarray,
    threshold: float,
    minimum: int,
    n_boot: int,
    seed: int,
    confidence: float,
) -> dict:
    flagged = p >= threshold
    n_c, n_n = int(y.sum()), int((1 - y).sum())
    row: dict = {
        "group": group,
        "images": int(y.size),
        "cancer_images": n_c,
        "non_cancer_images": n_n,
        "patients": int(pd.unique(patients).size),
        "reason": too_small_reason(n_c, n_n, minimum),
    }
    nan = (math.nan, math.nan)
    tp, tn = int((flagged & (y == 1)).sum()), int((~flagged & (y == 0)).sum())
    sens = (tp / n_c, *wilson_interval(tp, n_c, confidence)) if n_c >= minimum else (math.nan, *nan)
    spec = (tn / n_n, *wilson_interval(tn, n_n, confidence)) if n_n >= minimum else (math.nan, *nan)
    if n_c >= minimum and n_n >= minimum:
        point = float(weighted_aucs(y.astype(float), p, np.ones((1, y.size)))[0][0])
        ci = bootstrap_auc_intervals(
            y, p, patients, n_boot=n_boot, seed=seed, confidence=confidence
        )["roc_auc"]
        auc = (point, *ci)
    else:
        auc = (math.nan, *nan)
    for name, values in (("sensitivity", sens), ("specificity", spec), ("roc_auc", auc)):
        row[name], row[f"{name}_low"], row[f"{name}_high"] = values
    return row
