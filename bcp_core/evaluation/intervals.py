"""Confidence intervals: patient-level bootstrap for AUCs and sensitivity / specificity, Wilson.

Images of one patient are correlated (two views of each breast, often the same lesion), so the
bootstrap resamples PATIENTS with replacement when patient ids are given, and images otherwise.
Intervals are percentile intervals over resamples drawn from a fixed seed; a resample that lacks
either class is skipped, and the number of resamples used is reported.

Vectorised: one resample is a vector of counts per patient; every image inherits its patient's
count as a weight, and the AUCs of all resamples come from weighted sums over the distinct scores
at once (equal to scikit-learn's ``roc_auc_score`` / ``average_precision_score`` on the resampled
data, ties included). Sensitivity and specificity use per-patient counts: a matrix product.

These functions expect checked arrays (labels 0/1, probabilities in [0, 1]), as
``bcp_core.evaluation`` passes them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from statistics import NormalDist

import numpy as np
import pandas as pd

from bcp_core.errors import UserError

DEFAULT_N_BOOT = 1000
DEFAULT_CONFIDENCE = 0.95
#: Bounds the (resamples x images) weight matrix held at once to about 16 MB of float64.
_CHUNK_CELLS = 2_000_000


def better_than_chance(roc_auc_interval: tuple[float, float]) -> bool:
    """Whether a ROC-AUC interval lies wholly above 0.5 (an undefined one does not)."""
    low = float(roc_auc_interval[0])
    return low == low and low > 0.5


def check_confidence(confidence: float) -> float:
    """Return ``confidence`` as a float, or raise UserError unless it lies strictly in (0, 1)."""
    if not 0.0 < float(confidence) < 1.0:
        raise UserError(f"The confidence level must lie between 0 and 1, got {confidence!r}.")
    return float(confidence)


def group_codes(groups, n: int) -> np.ndarray:
    """Integer codes 0..G-1 for the patient id of each image; each image its own group if None."""
    if groups is None:
        return np.arange(n)
    values = pd.Series(np.asarray(groups, dtype=object).ravel())
    if len(values) != n:
        raise UserError(f"Got {len(values)} patient ids for {n} predictions.")
    codes, _ = pd.factorize(values)
    if (codes < 0).any():
        raise UserError("Some patient ids are missing; give every image its patient id.")
    return codes


def resample_counts(n_groups: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Yield chunks of bootstrap resamples as (chunk, n_groups) arrays of draw counts per group.

    The chunking depends on ``n_groups`` only, so the same seed always gives the same resamples.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // max(n_groups, 1))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        draws = rng.integers(0, n_groups, size=(size, n_groups))
        flat = draws + n_groups * np.arange(size)[:, None]
        yield np.bincount(flat.ravel(), minlength=size * n_groups).reshape(size, n_groups)


def weighted_aucs(
    y: np.ndarray, p: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC and average precision for each row of image weights (NaN where a class is absent).

    Args:
        y: labels 0/1, shape (n,).
        p: probabilities, shape (n,).
        weights: non-negative weights (bootstrap counts), shape (rows, n).

    Returns:
        Two arrays of shape (rows,): ROC-AUC (ties count one half) and average precision, the
        values scikit-learn gives on data where image i appears ``weights[r, i]`` times.
    """
    order = np.argsort(p, kind="stable")
    p_sorted = p[order]
    starts = np.flatnonzero(np.r_[True, p_sorted[1:] != p_sorted[:-1]])
    w = np.asarray(weights, dtype=float)[:, order]
    pos = np.add.reduceat(w * y[order], starts, axis=1)  # positive weight per distinct score
    neg = np.add.reduceat(w, starts, axis=1) - pos
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    valid = (n_pos > 0) & (n_neg > 0)
    below = np.cumsum(neg, axis=1) - neg  # negatives strictly below each score
    with np.errstate(invalid="ignore", divide="ignore"):
        roc = (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
        tp = np.cumsum(pos[:, ::-1], axis=1)  # walking down from the top score
        flagged = tp + np.cumsum(neg[:, ::-1], axis=1)
        precision = np.divide(tp, flagged, out=np.zeros_like(tp), where=flagged > 0)
        ap = (pos[:, ::-1] * precision).sum(axis=1) / n_pos
    return np.where(valid, roc, np.nan), np.where(valid, ap, np.nan)


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Central percentile interval of the finite ``values``; (NaN, NaN) when there are none."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (math.nan, math.nan)
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return (float(low), float(high))


def bootstrap_auc_intervals(
    y: np.ndarray,
    p: np.ndarray,
    groups=None,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict:
    """Percentile bootstrap intervals for ROC-AUC and PR-AUC (average precision).

    Args:
        y: labels 0/1.
        p: probabilities.
        groups: patient id per image (resample patients), or None (resample images).
        n_boot: number of resamples.
        seed: seed of the random generator.
        confidence: coverage of the interval, 0.95 for a 95% interval.

    Returns:
        ``roc_auc`` and ``pr_auc`` as (low, high) tuples, ``n_boot`` and ``n_used`` (resamples
        that held both classes).
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    codes = group_codes(groups, y.size)
    confidence = check_confidence(confidence)
    rocs, aps = [np.empty(0)], [np.empty(0)]
    if y.size and n_boot > 0:
        for counts in resample_counts(int(codes.max()) + 1, n_boot, seed):
            roc, ap = weighted_aucs(y, p, counts[:, codes])
            rocs.append(roc)
            aps.append(ap)
    roc_all, ap_all = np.concatenate(rocs), np.concatenate(aps)
    return {
        "roc_auc": percentile_interval(roc_all, confidence),
        "pr_auc": percentile_interval(ap_all, confidence),
        "n_boot": int(n_boot),
        "n_used": int(np.isfinite(roc_all).sum()),
    }


def bootstrap_sens_spec_intervals(
    y: np.ndarray,
    p: np.ndarray,
    threshold: float,
    groups=None,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict:
    """Percentile bootstrap intervals for sensitivity and specificity at ``p >= threshold``.

    Per-patient counts (positives, true positives, negatives, true negatives) are sufficient
    statistics, so each resample costs one matrix product. Arguments as in
    `bootstrap_auc_intervals`; the same seed gives the same resamples.

    Returns:
        ``sensitivity`` and ``specificity`` as (low, high) tuples, ``n_boot``, ``n_used``.
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    codes = group_codes(groups, y.size)
    confidence = check_confidence(confidence)
    n_groups = int(codes.max()) + 1 if y.size else 0
    flagged = (p >= threshold).astype(float)
    stats = np.stack(
        [
            np.bincount(codes, weights=w, minlength=n_groups)
            for w in (y, y * flagged, 1.0 - y, (1.0 - y) * (1.0 - flagged))
        ],
        axis=1,
    )
    sums = [np.empty((0, 4))]
    if n_groups and n_boot > 0:
        sums += [counts @ stats for counts in resample_counts(n_groups, n_boot, seed)]
    pos, tp, neg, tn = np.concatenate(sums).T
    valid = (pos > 0) & (neg > 0)
    sens = np.divide(tp, pos, out=np.full_like(tp, np.nan), where=valid)
    spec = np.divide(tn, neg, out=np.full_like(tn, np.nan), where=valid)
    return {
        "sensitivity": percentile_interval(sens, confidence),
        "specificity": percentile_interval(spec, confidence),
        "n_boot": int(n_boot),
        "n_used": int(valid.sum()),
    }


def wilson_interval(k: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a proportion ``k / n`` (e.g. sensitivity: k of n cancers found).

    Better than the normal approximation when n is small or k is near 0 or n. It treats images as
    independent; prefer the patient bootstrap when patients contribute several images.

    Returns:
        (low, high); (NaN, NaN) when ``n`` is 0.
    """
    if not (0 <= k <= n):
        raise UserError(f"A proportion needs 0 <= k <= n, got k={k!r} and n={n!r}.")
    if n == 0:
        return (math.nan, math.nan)
    z = NormalDist().inv_cdf(0.5 + check_confidence(confidence) / 2)
    z2 = z * z
    centre = (k + z2 / 2) / (n + z2)
    half = z * math.sqrt(k * (n - k) / n + z2 / 4) / (n + z2)
    return (max(0.0, centre - half), min(1.0, centre + half))
