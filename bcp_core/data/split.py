"""Patient-grouped, label-stratified train / validation / test split (pure pandas/numpy).

Views of the same woman must never land on both sides of a split: the user's random split by
image leaked patients into validation. Patients are the unit here; a patient is positive when
any of her images is a cancer image, and positives and negatives are split separately so that
both classes appear in every part.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bcp_core.errors import UserError

SPLITS = ("train", "val", "test")


def patient_labels(manifest: pd.DataFrame) -> pd.Series:
    """1 for a patient with any cancer image, else 0 (indexed by patient_id)."""
    return manifest.groupby("patient_id")["label"].max().astype(int)


def split_patients(
    manifest: pd.DataFrame, val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 42
) -> pd.Series:
    """Assign every image to "train", "val" or "test" by its patient.

    Args:
        manifest: at least the columns ``patient_id`` and ``label``.
        val_fraction: share of patients (of each class) in validation.
        test_fraction: share of patients (of each class) held out for testing.
        seed: random seed; the same seed gives the same split.

    Returns:
        A Series aligned with ``manifest`` holding the split name of each image.

    Raises:
        UserError: for fractions outside [0, 1) or summing to 1 or more.
    """
    for name, value in (("Validation", val_fraction), ("Test", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise UserError(f"{name} fraction must be at least 0 and below 1, got {value!r}.")
    if val_fraction + test_fraction >= 1.0:
        raise UserError(
            "Validation and test fractions leave no training data "
            f"({val_fraction!r} + {test_fraction!r})."
        )
    labels = patient_labels(manifest)
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for cls in (1, 0):
        patients = np.array(sorted(labels.index[labels == cls]))
        rng.shuffle(patients)
        n_val = _share(len(patients), val_fraction)
        n_test = _share(len(patients), test_fraction)
        for i, pid in enumerate(patients):
            assignment[pid] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    return manifest["patient_id"].map(assignment).rename("split")


def _share(n: int, fraction: float) -> int:
    """Patients for a part: rounded, but at least one when the part is asked for and n >= 2."""
    if fraction <= 0 or n == 0:
        return 0
    return min(max(1, round(n * fraction)), max(n - 1, 0))


def patient_overlap(manifest: pd.DataFrame, split: pd.Series) -> int:
    """Number of patients that appear in more than one split (must be 0)."""
    parts = pd.DataFrame({"patient_id": manifest["patient_id"], "split": split})
    return int((parts.groupby("patient_id")["split"].nunique() > 1).sum())
