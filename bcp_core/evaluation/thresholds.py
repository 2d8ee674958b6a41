"""Threshold rules: recommendations on validation predictions and the rule a run saves."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bcp_core.config import THRESHOLD_METHODS
from bcp_core.errors import UserError
from bcp_core.evaluation.metrics import as_arrays, check_beta, has_both_classes, rates_at


def threshold_for_top_percent(y_prob, percent: float) -> float:
    """The threshold that calls the ``percent`` % highest-scoring images positive.

    It is the k-th largest probability with k = ceil(n * percent / 100), so ties at that value
    may flag a few more images than asked.
    """
    _, p = as_arrays(np.zeros(np.size(y_prob)), y_prob)
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


def counts_at(
    pos_sorted: np.ndarray, neg_sorted: np.ndarray, thresholds
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
    check_beta(beta)
    for name, value in (("sensitivity", sensitivity_target), ("specificity", specificity_target)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"The {name} target must lie between 0 and 1, got {value!r}.")
    if not (cost_fn >= 0 and cost_fp >= 0):
        raise UserError("The costs of a missed cancer and of a false alarm must be >= 0.")
    if prevalence is not None and not 0.0 <= prevalence <= 1.0:
        raise UserError(f"The prevalence must lie between 0 and 1, got {prevalence!r}.")


def recommend_rules(
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
    tp, fp, tn, fn = counts_at(np.sort(p[y == 1]), np.sort(p[y == 0]), thr)
    r = rates_at(tp, fp, tn, fn, beta)
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
    y, p = as_arrays(y_true, y_prob)
    if not p.size:
        raise UserError("There are no predictions to choose a threshold from.")
    return recommend_rules(y, p, **params)


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
    y, p = as_arrays(y_true, y_prob)
    if method == "fixed_0.5" or (method != "top_percent" and not has_both_classes(y)):
        return 0.5
    return next(r.threshold for r in recommend_rules(y, p, **params) if r.name == method)
