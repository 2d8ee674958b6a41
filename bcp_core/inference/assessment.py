"""A bundle's validation predictions, scored at image, breast or patient level.

The glue between a bundle and :mod:`bcp_core.evaluation` for the threshold explorer and the
``evaluate`` command: pick the level, compute the evaluation once, list the errors at a threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bcp_core.errors import UserError
from bcp_core.evaluation.aggregation import aggregate_predictions_df
from bcp_core.evaluation.metrics import Metrics
from bcp_core.evaluation.result import EvaluationResult, SensSpecIntervals, evaluate
from bcp_core.model.bundle import Bundle
from bcp_core.model.meta import ThresholdChoice

LEVELS = ("image", "breast", "patient")


def predictions_at_level_df(predictions: pd.DataFrame, level: str = "image") -> pd.DataFrame:
    """Validation predictions per image, or aggregated per breast or patient.

    Args:
        predictions: a bundle's ``val_predictions`` (``file``, ``patient_id``, ``label``,
            ``probability``, and ``laterality`` where known).
        level: ``image``, ``breast`` (mean of a breast's views) or ``patient`` (max over her
            breasts of the breast means).

    Returns:
        DataFrame with at least ``patient_id``, ``label``, ``probability`` (and ``file`` per image).
    """
    if level not in LEVELS:
        raise UserError(f"Unknown level {level!r}; choose one of: {', '.join(LEVELS)}.")
    if predictions.empty:
        raise UserError("This bundle has no validation predictions to evaluate.")
    if level == "image":
        return predictions.reset_index(drop=True)
    df = predictions.copy()
    if "laterality" not in df.columns:
        df["laterality"] = ""
    return aggregate_predictions_df(df, level=level)


def evaluate_level(
    predictions: pd.DataFrame, level: str = "image", *, n_boot: int = 1000, seed: int = 0
) -> tuple[EvaluationResult, pd.DataFrame]:
    """Evaluate the predictions at ``level``; the bootstrap resamples patients."""
    df = predictions_at_level_df(predictions, level)
    result = evaluate(df["label"], df["probability"], df["patient_id"], n_boot=n_boot, seed=seed)
    return result, df


def errors_df(df: pd.DataFrame, threshold: float, kind: str) -> pd.DataFrame:
    """False negatives (``fn``: missed cancers, lowest probability first) or false positives
    (``fp``: false alarms, highest first) at ``threshold`` (positive when ``p >= threshold``)."""
    positive = df["probability"] >= threshold
    if kind == "fn":
        return df[(df["label"] == 1) & ~positive].sort_values("probability")
    if kind == "fp":
        return df[(df["label"] == 0) & positive].sort_values("probability", ascending=False)
    raise UserError(f"Unknown error kind {kind!r}; use 'fn' or 'fp'.")


def _clean(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


@dataclass(frozen=True)
class BundleReport:
    """A bundle's validation scored at its saved threshold: what ``evaluate`` prints.

    Attributes:
        bundle: the bundle folder.
        level: ``image``, ``breast`` or ``patient``.
        result: the evaluation (AUCs with intervals, curves, calibration).
        threshold: the saved threshold and how it was chosen.
        at: every metric at that threshold.
        intervals: bootstrap intervals of sensitivity and specificity there
            (see :meth:`EvaluationResult.intervals_at`).
    """

    bundle: Path
    level: str
    result: EvaluationResult
    threshold: ThresholdChoice
    at: Metrics
    intervals: SensSpecIntervals

    def to_json(self) -> dict:
        """The ``evaluate --json`` object (non-finite numbers become null)."""
        r, m = self.result, self.at
        out = {
            "bundle": str(self.bundle),
            "level": self.level,
            "roc_auc": r.roc_auc,
            "roc_auc_ci": list(r.roc_auc_ci),
            "pr_auc": r.pr_auc,
            "pr_auc_ci": list(r.pr_auc_ci),
            "threshold": self.threshold.value,
            "threshold_method": self.threshold.method,
            "sensitivity": m.sensitivity,
            "specificity": m.specificity,
            "precision": m.precision,
            "npv": m.npv,
            "f1": m.f1,
            "mcc": m.mcc,
            "balanced_accuracy": m.balanced_accuracy,
            "accuracy": m.accuracy,
            "tp": m.tp,
            "fp": m.fp,
            "tn": m.tn,
            "fn": m.fn,
            "sensitivity_ci": list(self.intervals.sensitivity_ci),
            "specificity_ci": list(self.intervals.specificity_ci),
            "caution": self.result.few_cancers_caution() or None,
            "brier": r.brier,
            "n": r.n,
            "n_positive": r.n_positive,
        }
        return {
            k: ([_clean(v) for v in val] if isinstance(val, list) else _clean(val))
            for k, val in out.items()
        }


def bundle_report(bundle: Bundle, level: str = "image", *, n_boot: int = 1000) -> BundleReport:
    """Metrics at the bundle's saved threshold, with intervals, at ``level``."""
    result, _ = evaluate_level(bundle.val_predictions, level, n_boot=n_boot)
    choice = bundle.meta.threshold
    return BundleReport(
        bundle=Path(bundle.path),
        level=level,
        result=result,
        threshold=choice,
        at=result.at(choice.value),
        intervals=result.intervals_at(choice.value),
    )
