"""Class-balance summaries of the manifest (pure pandas): what page 2 shows.

At 87 cancer images against ~5,000 others, a model that always answers "no cancer" is 98%
accurate and useless; these summaries put that number next to the counts so nobody is fooled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from bcp_core import config

if TYPE_CHECKING:
    from bcp_core.data.matching import MatchStats


@dataclass(frozen=True)
class BalanceSummary:
    """Counts and the ratios derived from them."""

    cancer_images: int
    non_cancer_images: int
    cancer_patients: int
    non_cancer_patients: int

    @property
    def images(self) -> int:
        return self.cancer_images + self.non_cancer_images

    @property
    def imbalance_ratio(self) -> float:
        """Non-cancer images per cancer image (inf when there is no cancer image)."""
        return self.non_cancer_images / self.cancer_images if self.cancer_images else float("inf")

    @property
    def always_negative_accuracy(self) -> float:
        """Accuracy of a model that answers "no cancer" for every image (its sensitivity is 0)."""
        return self.non_cancer_images / self.images if self.images else 0.0


def class_name(label: int) -> str:
    return config.CLASS_NAMES[int(label)]


def balance_summary(manifest: pd.DataFrame) -> BalanceSummary:
    """Image and patient counts per class; a patient counts as cancer if any image is."""
    per_patient = manifest.groupby("patient_id")["label"].max()
    return BalanceSummary(
        cancer_images=int((manifest["label"] == 1).sum()),
        non_cancer_images=int((manifest["label"] == 0).sum()),
        cancer_patients=int((per_patient == 1).sum()),
        non_cancer_patients=int((per_patient == 0).sum()),
    )


def counts_df(manifest: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Images and patients per class, optionally per value of another column.

    Args:
        manifest: the manifest (``label``, ``patient_id`` and the ``by`` column).
        by: a column such as ``view``, ``laterality``, ``sheet`` or ``split``.

    Returns:
        DataFrame with columns ``[by,] class, images, patients``; empty values of ``by`` shown as
        "unknown".
    """
    df = manifest.assign(**{"class": manifest["label"].map(class_name)})
    keys = ["class"]
    if by:
        df[by] = df[by].replace("", "unknown").fillna("unknown")
        keys = [by, "class"]
    out = df.groupby(keys, sort=True).agg(
        images=("label", "size"), patients=("patient_id", "nunique")
    )
    return out.reset_index()


def images_per_patient_df(manifest: pd.DataFrame) -> pd.DataFrame:
    """How many patients have 1, 2, 3, ... usable images (columns ``images``, ``patients``)."""
    per = manifest.groupby("patient_id").size().value_counts().sort_index()
    return pd.DataFrame({"images": per.index.astype(int), "patients": per.to_numpy()})


def sheet_rows_df(stats: MatchStats) -> pd.DataFrame:
    """Rows per sheet, keys matched, images on disk (columns ``sheet``, ``stage``, ``count``)."""
    rows = [
        (config.SHEET_CANCER, "rows in sheet", stats.cancer_rows),
        (config.SHEET_CANCER, "key matched", stats.cancer_key_matched),
        (config.SHEET_CANCER, "image on disk", stats.cancer_images_found),
        (config.SHEET_NON_CANCER, "rows in sheet", stats.non_cancer_rows),
        (config.SHEET_NON_CANCER, "file name usable", stats.non_cancer_names_usable),
        (config.SHEET_NON_CANCER, "image on disk", stats.non_cancer_images_found),
    ]
    return pd.DataFrame(rows, columns=["sheet", "stage", "count"])
