"""Metrics at any threshold, curves, threshold recommendations, calibration and aggregation.

Convention: an image is called positive (cancer) when ``probability >= threshold``, as in
scikit-learn's threshold tuning; threshold 0 calls every image positive, a threshold above the
largest probability calls none. Sensitivity and specificity come first everywhere: at 1:57
imbalance, accuracy says nothing. A ratio whose denominator is empty (PPV when nothing is called
positive, sensitivity without cancers) is NaN; MCC follows scikit-learn and is 0 then.

Compute once, display separately: `evaluate` returns an `EvaluationResult` that holds the
predictions, curves, AUCs with patient-bootstrap intervals and calibration, and answers any
threshold cheaply (`EvaluationResult.at`) without re-scanning the predictions. Bootstrap and
Wilson intervals live in `bcp_core.intervals`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from bcp_core import intervals
from bcp_core.errors import UserError

THRESHOLD_METHODS = (
    "youden",
    "max_f1",
    "max_fbeta",
    "sensitivity_target",
    "specificity_target",
    "min_cost",
    "top_percent",
    "fixed_0.5",
)
AGGREGATION_LEVELS = ("breast", "patient")
#: ``mean_max``: mean over each breast's views, then max over the patient's breasts.
AGGREGATION_METHODS = ("max", "mean", "mean_max")
CALIBRATION_STRATEGIES = ("quantile", "uniform")


def _arrays(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
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


def _check_beta(beta: float) -> float:
    if not (math.isfinite(beta) and beta > 0):
        raise UserError(f"Beta must be a positive number, got {beta!r}.")
    return float(beta)


def _check_threshold(threshold: float) -> float:
    if not math.isfinite(threshold):
        raise UserError(f"The threshold must be a finite number, got {threshold!r}.")
    return float(threshold)


def _div(num, den) -> np.ndarray:
    """``num / den`` elementwise, NaN where ``den`` is 0, without a warning."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    out = np.full(np.broadcast_shapes(num.shape, den.shape), np.nan)
    return np.divide(num, den, out=out, where=den > 0)


def _rates(tp, fp, tn, fn, beta: float) -> dict[str, np.ndarray]:
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


def _metrics_dict(tp: int, fp: int, tn: int, fn: int, threshold: float, beta: float) -> dict:
    rates = {k: float(v) for k, v in _rates(tp, fp, tn, fn, beta).items()}
    counts = {"tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)}
    n = {"n": int(tp + fp + tn + fn), "n_positive": int(tp + fn)}
    return {
        "threshold": float(threshold),
        **n,
        **counts,
        **rates,
        "ppv": rates["precision"],
        "beta": beta,
    }


def metrics_at_threshold(y_true, y_prob, threshold: float, *, beta: float = 2.0) -> dict:
    """Confusion counts and the metrics derived from them at one threshold (``p >= t``).

    Returns:
        ``threshold, n, n_positive, tp, fp, tn, fn``, ``sensitivity`` (recall), ``specificity``,
        ``precision`` and its alias ``ppv``, ``npv``, ``f1``, ``f_beta`` (with ``beta``),
        ``mcc``, ``balanced_accuracy``, ``accuracy``. Empty denominators give NaN.
    """
    y, p = _arrays(y_true, y_prob)
    beta, threshold = _check_beta(beta), _check_threshold(threshold)
    pred = p >= threshold
    tp, fp = int(np.sum(pred & (y == 1))), int(np.sum(pred & (y == 0)))
    fn, tn = int(np.sum(y == 1)) - tp, int(np.sum(y == 0)) - fp
    return _metrics_dict(tp, fp, tn, fn, threshold, beta)


def _both_classes(y: np.ndarray) -> bool:
    return bool(y.size) and 0 < int(y.sum()) < y.size


def ranking_metrics(y_true, y_prob) -> dict[str, float]:
    """ROC-AUC and PR-AUC (average precision); NaN when only one class is present."""
    y, p = _arrays(y_true, y_prob)
    if not _both_classes(y):
        return {"roc_auc": math.nan, "pr_auc": math.nan}
    return {
        "roc_auc": float(skm.roc_auc_score(y, p)),
        "pr_auc": float(skm.average_precision_score(y, p)),
    }


def roc_curve_points(y_true, y_prob) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` from ``sklearn.metrics.roc_curve`` (its first threshold is inf);
    three empty arrays when only one class is present."""
    y, p = _arrays(y_true, y_prob)
    if not _both_classes(y):
        return np.empty(0), np.empty(0), np.empty(0)
    return skm.roc_curve(y, p)


def pr_curve_points(y_true, y_prob) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, thresholds)`` from ``sklearn.metrics.precision_recall_curve``;
    three empty arrays when only one class is present."""
    y, p = _arrays(y_true, y_prob)
    if not _both_classes(y):
        return np.empty(0), np.empty(0), np.empty(0)
    return skm.precision_recall_curve(y, p)


def brier_score(y_true, y_prob) -> float:
    """Mean squared difference between probability and label (lower is better); NaN if empty."""
    y, p = _arrays(y_true, y_prob)
    return float(np.mean((p - y) ** 2)) if y.size else math.nan


def calibration_df(y_true, y_prob, *, n_bins: int = 10, strategy: str = "quantile") -> pd.DataFrame:
    """Reliability curve from ``sklearn.calibration.calibration_curve``.

    Returns:
        One row per non-empty bin: ``mean_predicted``, ``fraction_positive``, ``count``.
    """
    y, p = _arrays(y_true, y_prob)
    if strategy not in CALIBRATION_STRATEGIES:
        raise UserError(f"Unknown binning {strategy!r}; choose one of {CALIBRATION_STRATEGIES}.")
    if int(n_bins) != n_bins or n_bins < 1:
        raise UserError(f"The number of bins must be a positive whole number, got {n_bins!r}.")
    if not y.size:
        raise UserError("There are no predictions to calibrate.")
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


def aggregate_predictions_df(
    predictions: pd.DataFrame, *, level: str = "breast", how: str | None = None
) -> pd.DataFrame:
    """Scores per breast (``patient_id`` + ``laterality``) or per patient from image predictions.

    The label of a group is its maximum (a breast with one cancer image has cancer). The
    probability is the ``max`` or ``mean`` over the group's images, or ``mean_max``: the mean
    over each breast's views, then the max over the patient's breasts, as the strongest
    mammography systems score patients (FIELD_NOTES). Default: ``mean`` per breast,
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
    _arrays(df["label"], df["probability"])
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


def threshold_for_top_percent(y_prob, percent: float) -> float:
    """The threshold that calls the ``percent`` % highest-scoring images positive.

    It is the k-th largest probability with k = ceil(n * percent / 100), so ties at that value
    may flag a few more images than asked.
    """
    _, p = _arrays(np.zeros(np.size(y_prob)), y_prob)
    if not (math.isfinite(percent) and 0 < percent <= 100):
        raise UserError(f"The percentage to flag must lie in (0, 100], got {percent!r}.")
    if not p.size:
        raise UserError("There are no predictions to rank.")
    return float(np.sort(p)[::-1][_top_k(p.size, percent) - 1])


def _top_k(n: int, percent: float) -> int:
    """How many of ``n`` images make up the top ``percent`` % (at least one, rounded up)."""
    return min(n, max(1, math.ceil(round(n * percent / 100, 9))))


@dataclass(frozen=True)
class ThresholdRecommendation:
    """A recommended threshold: its rule's name, a one-line description, whether it was met."""

    name: str
    threshold: float
    description: str
    met: bool


def _counts_at(pos_sorted: np.ndarray, neg_sorted: np.ndarray, thresholds) -> tuple:
    """Confusion counts at each threshold from the sorted scores of each class."""
    t = np.asarray(thresholds, dtype=float)
    tp = pos_sorted.size - np.searchsorted(pos_sorted, t, side="left")
    fp = neg_sorted.size - np.searchsorted(neg_sorted, t, side="left")
    return tp, fp, neg_sorted.size - fp, pos_sorted.size - tp


def _pick(thresholds, primary, secondary, feasible=None) -> tuple[float, bool]:
    """Threshold maximising ``primary`` (then ``secondary``, then the threshold) where feasible.

    Returns the threshold and whether the rule could be met. Without a feasible threshold, the
    one closest to feasibility (best ``secondary``, the constrained metric); without any
    finite ``primary`` in an unconstrained rule, 0.5 as a placeholder.
    """
    primary, secondary = (np.asarray(a, dtype=float) for a in (primary, secondary))
    primary, secondary = (np.where(np.isnan(a), -np.inf, a) for a in (primary, secondary))
    if feasible is None:
        if not np.isfinite(primary).any():
            return 0.5, False
        ok = np.ones(len(thresholds), dtype=bool)
    elif not np.any(feasible):
        return _pick(thresholds, secondary, primary)[0], False
    else:
        ok = np.asarray(feasible, dtype=bool)
    best = np.lexsort((thresholds, secondary, primary, ok))[-1]
    return float(thresholds[best]), True


def _check_rule_params(beta, sensitivity_target, specificity_target, cost_fn, cost_fp, prevalence):
    _check_beta(beta)
    for name, value in (("sensitivity", sensitivity_target), ("specificity", specificity_target)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"The {name} target must lie between 0 and 1, got {value!r}.")
    if not (cost_fn >= 0 and cost_fp >= 0):
        raise UserError("The costs of a missed cancer and of a false alarm must be >= 0.")
    if prevalence is not None and not 0.0 <= prevalence <= 1.0:
        raise UserError(f"The prevalence must lie between 0 and 1, got {prevalence!r}.")


def _recommend(
    y,
    p,
    *,
    beta=2.0,
    sensitivity_target=0.9,
    specificity_target=0.9,
    cost_fn=10.0,
    cost_fp=1.0,
    prevalence=None,
    top_percent=10.0,
) -> list:
    _check_rule_params(beta, sensitivity_target, specificity_target, cost_fn, cost_fp, prevalence)
    thr = np.unique(np.concatenate([p, [0.0, 1.0]]))
    tp, fp, tn, fn = _counts_at(np.sort(p[y == 1]), np.sort(p[y == 0]), thr)
    r = _rates(tp, fp, tn, fn, beta)
    sens, spec = r["sensitivity"], r["specificity"]
    if not y.any():  # F-scores are 0 or undefined without cancers: no recommendation
        r["f1"] = r["f_beta"] = np.full(thr.shape, np.nan)
    if prevalence is None:  # the data's prevalence: expected cost per image from the counts
        cost = (cost_fn * fn + cost_fp * fp) / y.size
    else:
        cost = prevalence * cost_fn * (1 - sens) + (1 - prevalence) * cost_fp * (1 - spec)
    at_prev = "." if prevalence is None else f" at prevalence {prevalence:.2%}."
    st, pt = f"{sensitivity_target:.0%}", f"{specificity_target:.0%}"
    undefined = "is undefined on these labels; 0.5 is a placeholder."
    rules = [  # name, maximise, then, feasible, description, description when not met
        ("youden", sens + spec - 1, sens, None, "Maximises sensitivity + specificity - 1.",
         f"Youden's J {undefined}"),
        ("max_f1", r["f1"], sens, None, "Maximises F1 (precision and recall balanced).",
         f"F1 {undefined}"),
        ("max_fbeta", r["f_beta"], sens, None,
         f"Maximises F-beta, beta={beta:g} (recall weighs {beta:g}x precision).",
         f"F-beta {undefined}"),
        ("sensitivity_target", spec, sens, sens >= sensitivity_target,
         f"Best specificity with sensitivity >= {st}.",
         f"No threshold reaches sensitivity {st}; this one comes closest."),
        ("specificity_target", sens, spec, spec >= specificity_target,
         f"Best sensitivity with specificity >= {pt}.",
         f"No threshold reaches specificity {pt}; this one comes closest."),
        ("min_cost", -cost, sens, None,
         f"Least expected cost: a missed cancer costs {cost_fn:g}, a false alarm {cost_fp:g}"
         + at_prev, f"The expected cost {undefined}"),
    ]  # fmt: skip
    recs = []
    for name, primary, secondary, feasible, text, miss in rules:
        t, met = _pick(thr, primary, secondary, feasible)
        recs.append(ThresholdRecommendation(name, t, text if met else miss, met))
    t = threshold_for_top_percent(p, top_percent)
    k, flagged = _top_k(p.size, top_percent), int((p >= t).sum())
    text = f"Flags the top {top_percent:g}% of images ({flagged} of {p.size})"
    tie = "." if flagged == k else f"; ties at the threshold flag {flagged - k} more than asked."
    recs.append(ThresholdRecommendation("top_percent", t, text + tie, flagged == k))
    return recs


def recommend_thresholds(y_true, y_prob, **params) -> list[ThresholdRecommendation]:
    """Recommended thresholds, one per rule, searched over the unique probabilities plus 0 and 1.

    Rules (names): ``youden``, ``max_f1``, ``max_fbeta``, ``sensitivity_target`` (best
    specificity with sensitivity >= target), ``specificity_target``, ``min_cost`` (expected
    cost per image; the data's prevalence unless ``prevalence`` is given), ``top_percent``.
    Ties go to the higher sensitivity, then the higher threshold. ``met`` is False when no
    threshold satisfies the rule; the threshold is then the closest one (or 0.5).

    Args:
        y_true, y_prob: labels 0/1 and probabilities.
        **params: ``beta`` (2.0, favours sensitivity as screening does), ``sensitivity_target``
            (0.9), ``specificity_target`` (0.9), ``cost_fn`` (10.0, a missed cancer),
            ``cost_fp`` (1.0, a false alarm), ``prevalence`` (None), ``top_percent`` (10.0).
    """
    y, p = _arrays(y_true, y_prob)
    if not p.size:
        raise UserError("There are no predictions to choose a threshold from.")
    return _recommend(y, p, **params)


def choose_threshold(y_true, y_prob, method: str = "youden", **params) -> float:
    """Pick a decision threshold on validation data.

    Args:
        method: one of `THRESHOLD_METHODS`: a rule of `recommend_thresholds` or ``fixed_0.5``.
        **params: the rule's parameters, as in `recommend_thresholds`.

    Returns:
        The threshold; 0.5 when the data hold a single class (except for ``top_percent``).
    """
    if method not in THRESHOLD_METHODS:
        raise UserError(f"Unknown threshold method {method!r}; choose one of {THRESHOLD_METHODS}.")
    y, p = _arrays(y_true, y_prob)
    if method == "fixed_0.5" or (method != "top_percent" and not _both_classes(y)):
        return 0.5
    return next(r.threshold for r in _recommend(y, p, **params) if r.name == method)


@dataclass(eq=False)
class EvaluationResult:
    """Everything about one set of predictions, computed once; see `evaluate`.

    ``thresholds`` are the sorted unique probabilities plus 0 and 1 (the candidate thresholds);
    ``roc_auc_ci`` / ``pr_auc_ci`` are bootstrap (low, high) intervals from ``n_boot_used``
    resamples (patients when ``patient_id`` was given).
    """

    y_true: np.ndarray
    y_prob: np.ndarray
    patient_id: np.ndarray | None
    thresholds: np.ndarray
    roc_fpr: np.ndarray
    roc_tpr: np.ndarray
    roc_thresholds: np.ndarray
    pr_precision: np.ndarray
    pr_recall: np.ndarray
    pr_thresholds: np.ndarray
    roc_auc: float
    pr_auc: float
    roc_auc_ci: tuple[float, float]
    pr_auc_ci: tuple[float, float]
    brier: float
    calibration: pd.DataFrame
    n_boot: int
    n_boot_used: int
    seed: int
    confidence: float
    _pos: np.ndarray = field(init=False, repr=False)
    _neg: np.ndarray = field(init=False, repr=False)
    _cache: dict = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._pos = np.sort(self.y_prob[self.y_true == 1])
        self._neg = np.sort(self.y_prob[self.y_true == 0])

    @property
    def n(self) -> int:
        return int(self.y_true.size)

    @property
    def n_positive(self) -> int:
        return int(self._pos.size)

    def at(self, threshold: float, *, beta: float = 2.0) -> dict:
        """All metrics at ``threshold``, as `metrics_at_threshold` gives, by binary search."""
        threshold, beta = _check_threshold(threshold), _check_beta(beta)
        tp, fp, tn, fn = (int(c) for c in _counts_at(self._pos, self._neg, threshold))
        return _metrics_dict(tp, fp, tn, fn, threshold, beta)

    def intervals_at(self, threshold: float) -> dict:
        """Bootstrap and Wilson intervals for sensitivity and specificity at ``threshold``.

        Returns:
            ``threshold``, ``sensitivity``, ``specificity``, their bootstrap intervals
            ``sensitivity_ci`` / ``specificity_ci`` (patients resampled when known), Wilson
            intervals ``sensitivity_wilson`` / ``specificity_wilson`` (images as independent),
            ``n_boot``, ``n_used``. Cached per threshold.
        """
        threshold = _check_threshold(threshold)
        key = int(np.searchsorted(self.thresholds, threshold, side="left"))  # same counts
        if key not in self._cache:
            boot = intervals.bootstrap_sens_spec_intervals(
                self.y_true,
                self.y_prob,
                threshold,
                self.patient_id,
                n_boot=self.n_boot,
                seed=self.seed,
                confidence=self.confidence,
            )
            self._cache[key] = boot
        boot, m = self._cache[key], self.at(threshold)
        return {
            "threshold": threshold,
            "sensitivity": m["sensitivity"],
            "specificity": m["specificity"],
            "sensitivity_ci": boot["sensitivity"],
            "specificity_ci": boot["specificity"],
            "sensitivity_wilson": intervals.wilson_interval(
                m["tp"], m["tp"] + m["fn"], self.confidence
            ),
            "specificity_wilson": intervals.wilson_interval(
                m["tn"], m["tn"] + m["fp"], self.confidence
            ),
            "n_boot": boot["n_boot"],
            "n_used": boot["n_used"],
        }

    def recommendations(self, **params) -> pd.DataFrame:
        """Recommended thresholds (see `recommend_thresholds` for the rules and ``params``).

        Returns:
            Columns ``name, threshold, sensitivity, specificity, ppv, npv, description, met``.
        """
        rows = []
        for rec in _recommend(self.y_true, self.y_prob, **params):
            m = self.at(rec.threshold)
            rows.append(
                {
                    "name": rec.name,
                    "threshold": rec.threshold,
                    **{k: m[k] for k in ("sensitivity", "specificity", "ppv", "npv")},
                    "description": rec.description,
                    "met": rec.met,
                }
            )
        return pd.DataFrame(rows)

    def curve_df(self) -> pd.DataFrame:
        """Metrics against threshold for plotting, one row per candidate threshold.

        Returns:
            Columns ``threshold, sensitivity, specificity, ppv, npv, f1``.
        """
        r = _rates(*_counts_at(self._pos, self._neg, self.thresholds), beta=1.0)
        cols = {
            "sensitivity": "sensitivity",
            "specificity": "specificity",
            "ppv": "precision",
            "npv": "npv",
            "f1": "f1",
        }
        return pd.DataFrame({"threshold": self.thresholds, **{k: r[v] for k, v in cols.items()}})


def evaluate(
    y_true,
    y_prob,
    patient_id=None,
    *,
    n_boot: int = intervals.DEFAULT_N_BOOT,
    seed: int = 0,
    confidence: float = intervals.DEFAULT_CONFIDENCE,
    n_bins: int = 10,
    strategy: str = "quantile",
) -> EvaluationResult:
    """Compute curves, AUCs with bootstrap intervals and calibration once.

    Args:
        y_true: labels, 1 cancer, 0 not.
        y_prob: predicted probability of cancer per image.
        patient_id: patient of each image; the bootstrap then resamples patients.
        n_boot: bootstrap resamples (0 skips the intervals).
        seed: seed of the bootstrap.
        confidence: coverage of the intervals.
        n_bins, strategy: calibration bins, as in `calibration_df`.
    """
    y, p = _arrays(y_true, y_prob)
    if not y.size:
        raise UserError("There are no predictions to evaluate.")
    if int(n_boot) != n_boot or n_boot < 0:
        raise UserError(f"The number of bootstrap resamples must be >= 0, got {n_boot!r}.")
    groups = None if patient_id is None else np.asarray(patient_id, dtype=object).ravel()
    intervals.group_codes(groups, y.size)  # validate before any work
    boot = intervals.bootstrap_auc_intervals(
        y, p, groups, n_boot=int(n_boot), seed=seed, confidence=confidence
    )
    fpr, tpr, roc_thr = roc_curve_points(y, p)
    prec, rec, pr_thr = pr_curve_points(y, p)
    return EvaluationResult(
        y_true=y,
        y_prob=p,
        patient_id=groups,
        thresholds=np.unique(np.concatenate([p, [0.0, 1.0]])),
        roc_fpr=fpr,
        roc_tpr=tpr,
        roc_thresholds=roc_thr,
        pr_precision=prec,
        pr_recall=rec,
        pr_thresholds=pr_thr,
        **ranking_metrics(y, p),
        roc_auc_ci=boot["roc_auc"],
        pr_auc_ci=boot["pr_auc"],
        brier=brier_score(y, p),
        calibration=calibration_df(y, p, n_bins=n_bins, strategy=strategy),
        n_boot=int(n_boot),
        n_boot_used=boot["n_used"],
        seed=seed,
        confidence=float(confidence),
    )
