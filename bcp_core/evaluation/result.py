"""Compute once, display separately: one evaluation of (labels, probabilities) for any threshold.

:func:`evaluate` returns an :class:`EvaluationResult` that holds the predictions, curves, AUCs
with patient-bootstrap intervals and calibration, and answers any threshold cheaply
(:meth:`EvaluationResult.at`) without re-scanning the predictions. Bootstrap and Wilson intervals
live in :mod:`bcp_core.evaluation.intervals`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bcp_core.errors import UserError
from bcp_core.evaluation import intervals
from bcp_core.evaluation.metrics import (
    Metrics,
    as_arrays,
    brier_score,
    calibration_df,
    check_beta,
    check_threshold,
    pr_curve_points,
    ranking_metrics,
    rates_at,
    roc_curve_points,
)
from bcp_core.evaluation.thresholds import counts_at, recommend_rules

#: Fewer patients with cancer than this in a validation split, and its figures get a caution
#: (:meth:`EvaluationResult.few_cancers_caution`). On the public films, runs validated on about
#: 78 women with cancer missed their held-out ROC-AUC by 0.00 on average (SD 0.05, 72 runs);
#: on 8, by -0.13 to +0.32 (9 runs); on about 19 and 39, by up to 0.16 (docs/benchmarks.md,
#: "How many cancers").
FEW_CANCER_PATIENTS = 50
#: The caution's advice, for those who can train.
TRAIN_AGAIN = (
    "; train again with another seed and compare the runs: how far they differ is what one "
    "run's figure is worth."
)


@dataclass(frozen=True)
class SensSpecIntervals:
    """Sensitivity and specificity at one threshold with their intervals.

    Attributes:
        sensitivity_ci, specificity_ci: bootstrap (low, high), patients resampled when known.
        sensitivity_wilson, specificity_wilson: Wilson (low, high), images as independent.
        n_boot, n_used: resamples asked for and usable (both classes present).
    """

    threshold: float
    sensitivity: float
    specificity: float
    sensitivity_ci: tuple[float, float]
    specificity_ci: tuple[float, float]
    sensitivity_wilson: tuple[float, float]
    specificity_wilson: tuple[float, float]
    n_boot: int
    n_used: int


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

    @property
    def n_positive_patients(self) -> int:
        """Patients with a cancer image (cancer images, when no patient ids were given)."""
        if self.patient_id is None:
            return self.n_positive
        return int(pd.unique(self.patient_id[self.y_true == 1]).size)

    def few_cancers_caution(self, *, advice: bool = True) -> str:
        """A sentence for validation figures resting on fewer than `FEW_CANCER_PATIENTS`
        patients with cancer, else ``""``; with ``advice``, what someone who trains can do
        about it (leave it out for a reader who cannot train)."""
        k = self.n_positive_patients
        if k >= FEW_CANCER_PATIENTS:
            return ""
        what = f"{k} patients with cancer" if self.patient_id is not None else f"{k} cancer images"
        return (
            f"Only {what} validate this model, and they also chose the threshold and the "
            "epoch kept: with so few, these figures can lie far from what new patients will "
            "see, either way (on public films, runs validated on 8 women with cancer scored "
            "ROC-AUC 0.46-0.89 on them and 0.53-0.61 on women they never saw). Take them as a "
            "rough guide"
        ) + (TRAIN_AGAIN if advice else ".")

    def at(self, threshold: float, *, beta: float = 2.0) -> Metrics:
        """All metrics at ``threshold``, as `metrics_at_threshold` gives, by binary search."""
        threshold, beta = check_threshold(threshold), check_beta(beta)
        tp, fp, tn, fn = (int(c) for c in counts_at(self._pos, self._neg, threshold))
        return Metrics.from_counts(tp, fp, tn, fn, threshold, beta)

    def intervals_at(self, threshold: float) -> SensSpecIntervals:
        """Bootstrap and Wilson intervals for sensitivity and specificity at ``threshold``.

        The bootstrap is cached per threshold interval (thresholds with the same counts).
        """
        threshold = check_threshold(threshold)
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
        return SensSpecIntervals(
            threshold=threshold,
            sensitivity=m.sensitivity,
            specificity=m.specificity,
            sensitivity_ci=boot["sensitivity"],
            specificity_ci=boot["specificity"],
            sensitivity_wilson=intervals.wilson_interval(m.tp, m.tp + m.fn, self.confidence),
            specificity_wilson=intervals.wilson_interval(m.tn, m.tn + m.fp, self.confidence),
            n_boot=boot["n_boot"],
            n_used=boot["n_used"],
        )

    def recommendations(self, **params) -> pd.DataFrame:
        """Recommended thresholds (see `recommend_thresholds` for the rules and ``params``).

        Returns:
            Columns ``name, threshold, sensitivity, specificity, ppv, npv, description, met``.
        """
        rows = []
        for rec in recommend_rules(self.y_true, self.y_prob, **params):
            m = self.at(rec.threshold)
            rows.append(
                {
                    "name": rec.name,
                    "threshold": rec.threshold,
                    "sensitivity": m.sensitivity,
                    "specificity": m.specificity,
                    "ppv": m.ppv,
                    "npv": m.npv,
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
        r = rates_at(*counts_at(self._pos, self._neg, self.thresholds), beta=1.0)
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
    y, p = as_arrays(y_true, y_prob)
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
