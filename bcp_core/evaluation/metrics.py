"""Metrics at any threshold, curves and calibration, from labels and probabilities.

Convention: an image is called positive (cancer) when ``probability >= threshold``, as in
scikit-learn's threshold tuning; threshold 0 calls every image positive, a threshold above the
largest probability calls none. Sensitivity and specificity come first everywhere: at 1:57
imbalance, accuracy says nothing. A ratio whose denominator is empty (PPV when nothing is called
positive, sensitivity without cancers) is NaN; MCC follows scikit-learn and is 0 then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from bcp_core.errors import UserError


def _sklearn_metrics():
    """``sklearn.metrics``, imported on first use: scikit-learn takes most of a second to
    import, and the command line refuses bad arguments before it needs it."""
    from sklearn import metrics

    return metrics


CALIBRATION_STRATEGIES = ("quantile", "uniform")


def as_arrays(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    """Labels as 0/1 ints and probabilities as floats, or a UserError saying what is wrong."""
    try:
        y = np.asarray(y_true, dtype=float).ravel()
        p = np.asarray(y_prob, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise UserError("Labels and probabilities must be numbers.") from exc
    if y.shape != p.shape:
        raise UserError(f"Got {y.size} labels but {p.size} probabilities.")
    if not np.isin(y, (0.0, 1.0)).all():
        raise UserError("Labels must be 0 (no cancer) or 1 (cancer).")
    if not np.isfinite(p).all():
        raise UserError("Some probabilities are not finite numbers (NaN or infinity).")
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise UserError("Probabilities must lie between 0 and 1.")
    return y.astype(int), p


def check_beta(beta: float) -> float:
    if not (math.isfinite(beta) and beta > 0):
        raise UserError(f"Beta must be a positive number, got {beta!r}.")
    return float(beta)


def check_threshold(threshold: float) -> float:
    if not math.isfinite(threshold):
        raise UserError(f"The threshold must be a finite number, got {threshold!r}.")
    return float(threshold)


def _div(num, den) -> np.ndarray:
    """``num / den`` elementwise, NaN where ``den`` is 0, without a warning."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    out = np.full(np.broadcast_shapes(num.shape, den.shape), np.nan)
    return np.divide(num, den, out=out, where=den > 0)


def rates_at(tp, fp, tn, fn, beta: float) -> dict[str, np.ndarray]:
    """Every ratio metric from confusion counts (scalars or arrays of equal shape)."""
    tp, fp, tn, fn = (np.asarray(c, dtype=float) for c in (tp, fp, tn, fn))
    sens, spec = _div(tp, tp + fn), _div(tn, tn + fp)
    b2 = beta * beta
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = np.where(den > 0, _div(tp * tn - fp * fn, den), 0.0)
    return {
        "sensitivity": sens,
        "specificity": spec,
        "precision": _div(tp, tp + fp),
        "npv": _div(tn, tn + fn),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "f_beta": _div((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp),
        "mcc": mcc,
        "balanced_accuracy": (sens + spec) / 2,
        "accuracy": _div(tp + tn, tp + fp + tn + fn),
    }


@dataclass(frozen=True)
class Metrics:
    """Confusion counts at one threshold and every metric derived from them.

    A case is positive when ``probability >= threshold``. Empty denominators give NaN (MCC
    gives 0, as scikit-learn does). ``ppv`` is ``precision`` under its clinical name.
    """

    threshold: float
    n: int
    n_positive: int
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: float
    specificity: float
    precision: float
    npv: float
    f1: float
    f_beta: float
    mcc: float
    balanced_accuracy: float
    accuracy: float
    beta: float

    @property
    def ppv(self) -> float:
        return self.precision

    @classmethod
    def from_counts(cls, tp: int, fp: int, tn: int, fn: int, threshold: float, beta: float):
        """Metrics from confusion counts (see :func:`rates_at`)."""
        rates = {k: float(v) for k, v in rates_at(tp, fp, tn, fn, beta).items()}
        n, n_positive = int(tp + fp + tn + fn), int(tp + fn)
        return cls(
            threshold=float(threshold),
            n=n,
            n_positive=n_positive,
            tp=int(tp),
            fp=int(fp),
            tn=int(tn),
            fn=int(fn),
            beta=float(beta),
            **rates,
        )

    def to_json(self) -> dict[str, float | int]:
        """Every field by name, with ``ppv`` after ``accuracy`` (NaN stays NaN)."""
        out: dict[str, float | int] = {}
        for f in fields(self):
            if f.name == "beta":
                out["ppv"] = self.ppv
            out[f.name] = getattr(self, f.name)
        return out


def metrics_at_threshold(y_true, y_prob, threshold: float, *, beta: float = 2.0) -> Metrics:
    """Confusion counts and the metrics derived from them at one threshold (``p >= t``).

    Returns:
        :class:`Metrics`: counts, sensitivity (recall), specificity, precision (PPV), NPV, F1,
        F-beta (with ``beta``), MCC, balanced accuracy and accuracy.
    """
    y, p = as_arrays(y_true, y_prob)
    beta, threshold = check_beta(beta), check_threshold(threshold)
    pred = p >= threshold
    tp, fp = int(np.sum(pred & (y == 1))), int(np.sum(pred & (y == 0)))
    fn, tn = int(np.sum(y == 1)) - tp, int(np.sum(y == 0)) - fp
    return Metrics.from_counts(tp, fp, tn, fn, threshold, beta)


def has_both_classes(y: np.ndarray) -> bool:
    return bool(y.size) and 0 < int(y.sum()) < y.size


def ranking_metrics(y_true, y_prob) -> dict[str, float]:
    """ROC-AUC and PR-AUC (average precision); NaN when only one class is present."""
    y, p = as_arrays(y_true, y_prob)
    if not has_both_classes(y):
        return {"roc_auc": math.nan, "pr_auc": math.nan}
    return {
        "roc_auc": float(_sklearn_metrics().roc_auc_score(y, p)),
        "pr_auc": float(_sklearn_metrics().average_precision_score(y, p)),
    }


def _curve(name: str, y_true, y_prob) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``sklearn.metrics.<name>(y, p)``, or three empty arrays when only one class is present."""
    y, p = as_arrays(y_true, y_prob)
    if not has_both_classes(y):
        return np.empty(0), np.empty(0), np.empty(0)
    return getattr(_sklearn_metrics(), name)(y, p)


def roc_curve_points(y_true, y_prob) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` from ``sklearn.metrics.roc_curve`` (its first threshold is inf);
    three empty arrays when only one class is present."""
    return _curve("roc_curve", y_true, y_prob)


def pr_curve_points(y_true, y_prob) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, thresholds)`` from ``sklearn.metrics.precision_recall_curve``;
    three empty arrays when only one class is present."""
    return _curve("precision_recall_curve", y_true, y_prob)


def brier_score(y_true, y_prob) -> float:
    """Mean squared difference between probability and label (lower is better); NaN if empty."""
    y, p = as_arrays(y_true, y_prob)
    return float(np.mean((p - y) ** 2)) if y.size else math.nan


def calibration_df(y_true, y_prob, *, n_bins: int = 10, strategy: str = "quantile") -> pd.DataFrame:
    """Reliability curve from ``sklearn.calibration.calibration_curve``.

    Returns:
        One row per non-empty bin: ``mean_predicted``, ``fraction_positive``, ``count``.
    """
    y, p = as_arrays(y_true, y_prob)
    if strategy not in CALIBRATION_STRATEGIES:
        raise UserError(f"Unknown binning {strategy!r}; choose one of {CALIBRATION_STRATEGIES}.")
    if int(n_bins) != n_bins or n_bins < 1:
        raise UserError(f"The number of bins must be a positive whole number, got {n_bins!r}.")
    if not y.size:
        raise UserError("There are no predictions to calibrate.")
    from sklearn.calibration import calibration_curve

    frac, mean = calibration_curve(y, p, n_bins=int(n_bins), strategy=strategy)
    # The same bin edges as scikit-learn, for the number of images behind each point.
    edges = (
        np.percentile(p, np.linspace(0, 100, n_bins + 1))
        if strategy == "quantile"
        else np.linspace(0.0, 1.0, n_bins + 1)
    )
    counts = np.bincount(np.searchsorted(edges[1:-1], p), minlength=n_bins)
    return pd.DataFrame(
        {"mean_predicted": mean, "fraction_positive": frac, "count": counts[counts > 0]}
    )
