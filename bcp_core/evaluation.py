"""Metrics at a threshold, ranking metrics and threshold choice (pure functions over arrays).

Convention: an image is called positive (cancer) when ``probability >= threshold``, as in
scikit-learn's threshold tuning. Sensitivity and specificity come first everywhere: at 1:57
imbalance, accuracy says nothing.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm

from bcp_core.errors import UserError

THRESHOLD_METHODS = ("youden", "max_f1", "fixed_0.5")


def _arrays(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=int).ravel()
    p = np.asarray(y_prob, dtype=float).ravel()
    if y.shape != p.shape:
        raise UserError(f"Got {y.size} labels but {p.size} probabilities.")
    if not np.isfinite(p).all():
        raise UserError("Some probabilities are not finite numbers (NaN or infinity).")
    return y, p


def _ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")


def metrics_at_threshold(y_true, y_prob, threshold: float) -> dict[str, float]:
    """Confusion counts and the metrics derived from them at one threshold (``p >= t``).

    Returns:
        ``tp, fp, tn, fn`` and ``sensitivity`` (recall), ``specificity``, ``precision`` (PPV),
        ``npv``, ``f1``, ``accuracy``, ``balanced_accuracy``, ``mcc``; ratios with an empty
        denominator are NaN.
    """
    y, p = _arrays(y_true, y_prob)
    pred = p >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    tn = int(np.sum(~pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    prec = _ratio(tp, tp + fp)
    denom = math.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {
        "threshold": float(threshold),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "sensitivity": sens,
        "specificity": spec,
        "precision": prec,
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(tp + tn, len(y)),
        "balanced_accuracy": (sens + spec) / 2,
        "mcc": (tp * tn - fp * fn) / denom if denom else 0.0,
    }  # fmt: skip


def ranking_metrics(y_true, y_prob) -> dict[str, float]:
    """ROC-AUC and PR-AUC (average precision); NaN when only one class is present."""
    y, p = _arrays(y_true, y_prob)
    if len(np.unique(y)) < 2:
        return {"roc_auc": float("nan"), "pr_auc": float("nan")}
    return {
        "roc_auc": float(skm.roc_auc_score(y, p)),
        "pr_auc": float(skm.average_precision_score(y, p)),
    }


def choose_threshold(y_true, y_prob, method: str = "youden") -> float:
    """Pick a decision threshold on validation data.

    Args:
        method: ``youden`` (max sensitivity + specificity - 1), ``max_f1``, or ``fixed_0.5``.

    Returns:
        The threshold; 0.5 when the data hold a single class.
    """
    if method not in THRESHOLD_METHODS:
        raise UserError(f"Unknown threshold method {method!r}; choose one of {THRESHOLD_METHODS}.")
    y, p = _arrays(y_true, y_prob)
    if method == "fixed_0.5" or len(np.unique(y)) < 2:
        return 0.5
    if method == "youden":
        fpr, tpr, thr = skm.roc_curve(y, p)
        best = int(np.argmax(tpr - fpr))
        return float(min(thr[best], 1.0))
    prec, rec, thr = skm.precision_recall_curve(y, p)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)[:-1]
    return float(thr[int(np.argmax(f1))])
