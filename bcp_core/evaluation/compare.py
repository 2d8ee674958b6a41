"""Compare runs: two or more models' validation predictions on the images they share.

Runs are compared only on the validation images every one of them scored (joined on ``file`` and
``patient_id``), so runs trained on different patient splits meet on their common validation
patients; runs trained on different data (another ``data_fingerprint``) are refused. Each run is
scored at its own saved threshold. The AUC difference of two runs is tested by a paired patient
bootstrap: every resample draws the common patients once and scores both runs on it (the
resampling helpers of :mod:`bcp_core.evaluation.intervals`), so the interval reflects how the
two models differ on the same patients, not two independent intervals. Beside these final
figures, each run's per-epoch history (:class:`RunCurves`) shows how it got there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bcp_core.errors import UserError
from bcp_core.evaluation import intervals
from bcp_core.evaluation.result import EvaluationResult, SensSpecIntervals, evaluate

JOIN_KEYS = ("file", "patient_id")


@dataclass(frozen=True)
class RunInput:
    """One run to compare: its name, validation predictions, saved threshold and settings.

    Attributes:
        name: how the run is shown (the bundle folder's name).
        predictions: columns ``file``, ``patient_id``, ``label``, ``probability``.
        threshold: the run's saved threshold (positive when ``probability >= threshold``).
        settings: flat settings (``training.epochs``, ``preprocessing.height`` ...).
        data_fingerprint: which images with which labels it was trained on ("" unknown).
    """

    name: str
    predictions: pd.DataFrame
    threshold: float
    settings: dict[str, Any]
    data_fingerprint: str = ""


@dataclass(frozen=True)
class RunScores:
    """One run scored on the common images: AUCs with intervals, and its saved threshold."""

    name: str
    result: EvaluationResult
    threshold: float
    at: SensSpecIntervals

    def to_json(self) -> dict[str, Any]:
        r, a = self.result, self.at
        return _clean(
            {
                "name": self.name,
                "roc_auc": r.roc_auc,
                "roc_auc_ci": list(r.roc_auc_ci),
                "pr_auc": r.pr_auc,
                "pr_auc_ci": list(r.pr_auc_ci),
                "threshold": self.threshold,
                "sensitivity": a.sensitivity,
                "sensitivity_ci": list(a.sensitivity_ci),
                "specificity": a.specificity,
                "specificity_ci": list(a.specificity_ci),
            }
        )


@dataclass(frozen=True)
class PairedDifference:
    """ROC-AUC and PR-AUC of run ``a`` minus run ``b`` on the same patients.

    ``p_value`` is two-sided: twice the smaller share of paired resamples on either side of 0
    (at most 1).
    """

    a: str
    b: str
    roc_auc_diff: float
    roc_auc_diff_ci: tuple[float, float]
    pr_auc_diff: float
    pr_auc_diff_ci: tuple[float, float]
    p_value: float
    n_boot: int
    n_used: int

    def to_json(self) -> dict[str, Any]:
        return _clean(
            {
                "a": self.a,
                "b": self.b,
                "roc_auc_diff": self.roc_auc_diff,
                "roc_auc_diff_ci": list(self.roc_auc_diff_ci),
                "pr_auc_diff": self.pr_auc_diff,
                "pr_auc_diff_ci": list(self.pr_auc_diff_ci),
                "p_value": self.p_value,
                "n_boot": self.n_boot,
                "n_used": self.n_used,
            }
        )


@dataclass(frozen=True)
class Comparison:
    """Runs compared on their common validation images (see :func:`compare_runs`).

    Attributes:
        runs: each run's scores, in the order given.
        pairs: the paired AUC difference of every pair (first minus second).
        n_images, n_patients, n_positive: the common validation images, their patients, and the
            images with cancer among them.
        dropped_images: per run, its validation images that not every run scored.
        differing: settings whose values differ between runs: name -> one value per run.
        confidence: coverage of every interval.
    """

    runs: tuple[RunScores, ...]
    pairs: tuple[PairedDifference, ...]
    n_images: int
    n_patients: int
    n_positive: int
    dropped_images: dict[str, int]
    differing: dict[str, tuple[Any, ...]]
    confidence: float

    def to_json(self) -> dict[str, Any]:
        """The ``compare --json`` object (non-finite numbers become null)."""
        return {
            "runs": [r.to_json() for r in self.runs],
            "common_images": self.n_images,
            "common_patients": self.n_patients,
            "common_positive_images": self.n_positive,
            "dropped_images": dict(self.dropped_images),
            "pairs": [p.to_json() for p in self.pairs],
            "differing_settings": {k: list(v) for k, v in self.differing.items()},
            "confidence": self.confidence,
            "test": "paired patient bootstrap of the AUC difference on the common patients",
        }


@dataclass(frozen=True)
class RunCurves:
    """One run's training history, to overlay with other runs' epoch by epoch.

    Attributes:
        name: how the run is shown (its name, else its bundle folder's name; see
            :func:`bcp_core.inference.bundles_compared.run_titles`).
        history: one row per epoch: ``epoch`` and Keras-style columns (``loss``, ``val_loss``,
            ``val_roc_auc``, ``val_pr_auc``, ...); empty when the bundle has none.
        best_epoch: the epoch whose weights the bundle keeps (None when not known).
    """

    name: str
    history: pd.DataFrame
    best_epoch: int | None = None

    def has(self, column: str) -> bool:
        """Whether the history holds a value of ``column`` for some epoch."""
        h = self.history
        return "epoch" in h and column in h and bool(h[column].notna().any())


def _clean(data: dict[str, Any]) -> dict[str, Any]:
    def one(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return {k: ([one(x) for x in v] if isinstance(v, list) else one(v)) for k, v in data.items()}


def differing_settings(runs: list[RunInput]) -> dict[str, tuple[Any, ...]]:
    """Settings whose values are not the same in every run (missing counts as None)."""
    names = sorted({k for r in runs for k in r.settings})
    out = {}
    for name in names:
        values = tuple(r.settings.get(name) for r in runs)
        if any(v != values[0] for v in values[1:]):
            out[name] = values
    return out


def _check_runs(runs: list[RunInput]) -> None:
    if len(runs) < 2:
        raise UserError("Choose at least two runs to compare.")
    names = [r.name for r in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"Each run can be compared once; {twice[0]!r} is named twice.")
    known = {r.data_fingerprint for r in runs if r.data_fingerprint}
    if len(known) > 1:
        raise UserError(
            "These runs were trained on different data (their data fingerprints differ), so "
            "their validation results cannot be compared; choose runs of one data root."
        )
    for r in runs:
        if r.predictions.empty:
            raise UserError(f"{r.name} has no validation predictions to compare.")
        missing = [c for c in (*JOIN_KEYS, "label", "probability") if c not in r.predictions]
        if missing:
            raise UserError(f"The predictions of {r.name} lack the column(s) {', '.join(missing)}.")


def common_predictions(runs: list[RunInput]) -> pd.DataFrame:
    """The images every run scored: ``file``, ``patient_id``, ``label`` and one probability
    column per run (``p0``, ``p1`` ...), sorted by patient and file.

    Raises:
        UserError: when the runs share no image, or disagree on an image's label.
    """
    keys = list(JOIN_KEYS)
    common = None
    for i, r in enumerate(runs):
        df = r.predictions[[*keys, "label", "probability"]].astype({"file": str, "patient_id": str})
        df = df.drop_duplicates(keys).rename(columns={"label": f"y{i}", "probability": f"p{i}"})
        common = df if common is None else common.merge(df, on=keys, how="inner")
    assert common is not None
    if common.empty:
        raise UserError(
            "These runs share no validation image, so they cannot be compared on the same "
            "patients; train them with the same split seed and validation share."
        )
    labels = common[[f"y{i}" for i in range(len(runs))]]
    if (labels.nunique(axis=1) > 1).any():
        raise UserError(
            "The runs disagree on the label of some shared images, so they were not trained on "
            "the same data; choose runs of one data root."
        )
    common = common.rename(columns={"y0": "label"}).drop(
        columns=[f"y{i}" for i in range(1, len(runs))]
    )
    return common.sort_values(keys).reset_index(drop=True)


def paired_auc_difference(
    y, p_a, p_b, groups, *, n_boot: int, seed: int, confidence: float
) -> dict[str, Any]:
    """ROC-AUC and PR-AUC differences (a - b) with paired patient-bootstrap intervals.

    Both runs are scored on the same resamples (the same patient draws), so the interval and
    the two-sided ``p_value`` are those of the paired difference.
    """
    y, p_a, p_b = (np.asarray(v, dtype=float) for v in (y, p_a, p_b))
    codes = intervals.group_codes(groups, y.size)
    roc_d, pr_d = [np.empty(0)], [np.empty(0)]
    if y.size and n_boot > 0:
        for counts in intervals.resample_counts(int(codes.max()) + 1, n_boot, seed):
            w = counts[:, codes]
            roc_a, pr_a = intervals.weighted_aucs(y, p_a, w)
            roc_b, pr_b = intervals.weighted_aucs(y, p_b, w)
            roc_d.append(roc_a - roc_b)
            pr_d.append(pr_a - pr_b)
    roc_all, pr_all = np.concatenate(roc_d), np.concatenate(pr_d)
    finite = roc_all[np.isfinite(roc_all)]
    if finite.size:
        share = min(float(np.mean(finite <= 0)), float(np.mean(finite >= 0)))
        p_value = min(1.0, 2.0 * share)
    else:
        p_value = math.nan
    return {
        "roc_auc_diff_ci": intervals.percentile_interval(roc_all, confidence),
        "pr_auc_diff_ci": intervals.percentile_interval(pr_all, confidence),
        "p_value": p_value,
        "n_used": int(finite.size),
    }


def compare_runs(
    runs: list[RunInput],
    *,
    n_boot: int = intervals.DEFAULT_N_BOOT,
    seed: int = 0,
    confidence: float = intervals.DEFAULT_CONFIDENCE,
) -> Comparison:
    """Score every run on the validation images they all share and test each pair.

    Raises:
        UserError: fewer than two runs, runs of different data, or no shared image.
    """
    confidence = intervals.check_confidence(confidence)
    if int(n_boot) != n_boot or n_boot < 0:
        raise UserError(f"The number of bootstrap resamples must be >= 0, got {n_boot!r}.")
    _check_runs(runs)
    common = common_predictions(runs)
    y, groups = common["label"].to_numpy(), common["patient_id"].to_numpy(dtype=object)
    scores = []
    for i, r in enumerate(runs):
        result = evaluate(
            y, common[f"p{i}"], groups, n_boot=int(n_boot), seed=seed, confidence=confidence
        )
        scores.append(RunScores(r.name, result, r.threshold, result.intervals_at(r.threshold)))
    pairs = []
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            a, b = scores[i].result, scores[j].result
            boot = paired_auc_difference(
                y, a.y_prob, b.y_prob, groups, n_boot=int(n_boot), seed=seed, confidence=confidence
            )
            pairs.append(
                PairedDifference(
                    a=runs[i].name,
                    b=runs[j].name,
                    roc_auc_diff=a.roc_auc - b.roc_auc,
                    roc_auc_diff_ci=boot["roc_auc_diff_ci"],
                    pr_auc_diff=a.pr_auc - b.pr_auc,
                    pr_auc_diff_ci=boot["pr_auc_diff_ci"],
                    p_value=boot["p_value"],
                    n_boot=int(n_boot),
                    n_used=boot["n_used"],
                )
            )
    n_images = len(common)
    return Comparison(
        runs=tuple(scores),
        pairs=tuple(pairs),
        n_images=n_images,
        n_patients=int(common["patient_id"].nunique()),
        n_positive=int(common["label"].sum()),
        dropped_images={r.name: int(len(r.predictions) - n_images) for r in runs},
        differing=differing_settings(runs),
        confidence=confidence,
    )
