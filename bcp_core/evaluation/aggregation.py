"""Per-breast and per-patient scores from per-image predictions: the one aggregation rule."""

from __future__ import annotations

import pandas as pd

from bcp_core.errors import UserError
from bcp_core.evaluation.metrics import as_arrays

AGGREGATION_LEVELS = ("breast", "patient")
#: ``mean_max``: mean over each breast's views, then max over the patient's breasts.
AGGREGATION_METHODS = ("max", "mean", "mean_max")


def aggregate_predictions_df(
    predictions: pd.DataFrame, *, level: str = "breast", how: str | None = None
) -> pd.DataFrame:
    """Scores per breast (``patient_id`` + ``laterality``) or per patient from image predictions.

    The label of a group is its maximum (a breast with one cancer image has cancer). The
    probability is the ``max`` or ``mean`` over the group's images, or ``mean_max``: the mean
    over each breast's views, then the max over the patient's breasts, as the strongest
    mammography systems score patients. Default: ``mean`` per breast,
    ``mean_max`` per patient. An empty or missing laterality counts as one unknown breast.

    Args:
        predictions: columns ``patient_id``, ``laterality``, ``label``, ``probability``.

    Returns:
        ``patient_id`` (and ``laterality`` per breast), ``label``, ``probability``, ``n_images``.
    """
    if level not in AGGREGATION_LEVELS:
        raise UserError(f"Unknown level {level!r}; choose one of {AGGREGATION_LEVELS}.")
    how = how or ("mean" if level == "breast" else "mean_max")
    if how not in AGGREGATION_METHODS:
        raise UserError(f"Unknown aggregation {how!r}; choose one of {AGGREGATION_METHODS}.")
    missing = [c for c in ("patient_id", "label", "probability") if c not in predictions]
    if missing:
        raise UserError(f"The predictions lack the column(s) {', '.join(missing)}.")
    if predictions["patient_id"].isna().any():
        raise UserError("Some patient ids are missing; give every image its patient id.")
    df = predictions.assign(n_images=1)
    as_arrays(df["label"], df["probability"])
    lat = df["laterality"] if "laterality" in df else pd.Series("", index=df.index)
    df["laterality"] = lat.fillna("").astype(str).str.strip().str.upper()
    agg = {"label": "max", "probability": "max" if how == "max" else "mean", "n_images": "sum"}
    out = df.groupby(["patient_id", "laterality"], sort=True).agg(agg).reset_index()
    if level == "patient":
        agg["probability"] = "mean" if how == "mean" else "max"
        if how == "mean":  # a plain mean over the patient's images, not over breast means
            out = df.groupby("patient_id", sort=True).agg(agg).reset_index()
        else:
            out = out.groupby("patient_id", sort=True).agg(agg).reset_index()
    out["label"] = out["label"].astype(int)
    return out
