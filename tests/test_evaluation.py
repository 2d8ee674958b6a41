"""Evaluation: metrics equal scikit-learn's, recommendations meet their rules, intervals behave."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from bcp_core import config
from bcp_core.errors import UserError
from bcp_core.evaluation import aggregation, thresholds
from bcp_core.evaluation import intervals as iv
from bcp_core.evaluation import metrics as ev_metrics
from bcp_core.evaluation import result as ev_result


def make_data(n: int = 300, seed: int = 0, prevalence: float = 0.25, decimals: int = 2):
    """Labels and rounded (hence tied) probabilities where cancers score higher on average."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    p = np.clip(rng.normal(0.35 + 0.25 * y, 0.2), 0.0, 1.0).round(decimals)
    return y, p


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture(scope="module")
def result(data):
    y, p = data
    return ev_result.evaluate(y, p, np.arange(y.size) // 3, n_boot=200, seed=1)


def sklearn_metrics(y, p, t, beta=2.0):
    pred = (p >= t).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    nan = {"zero_division": np.nan}
    return {
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "sensitivity": skm.recall_score(y, pred, **nan),
        "specificity": skm.recall_score(y, pred, pos_label=0, **nan),
        "precision": skm.precision_score(y, pred, **nan),
        "npv": skm.precision_score(y, pred, pos_label=0, **nan),
        "f1": skm.f1_score(y, pred, **nan),
        "f_beta": skm.fbeta_score(y, pred, beta=beta, **nan),
        "mcc": skm.matthews_corrcoef(y, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "accuracy": skm.accuracy_score(y, pred),
    }  # fmt: skip


@pytest.mark.parametrize("t", [0.0, 0.13, 0.35, 0.5, 0.62, 0.9, 1.0])
def test_metrics_equal_sklearn(data, t):
    y, p = data
    ours = ev_metrics.metrics_at_threshold(y, p, t)
    for key, value in sklearn_metrics(y, p, t).items():
        np.testing.assert_allclose(getattr(ours, key), value, rtol=1e-12, err_msg=key)
    assert ours.ppv == ours.precision
    assert (ours.n, ours.n_positive) == (y.size, y.sum())


def test_f_beta_uses_beta(data):
    y, p = data
    ours = ev_metrics.metrics_at_threshold(y, p, 0.4, beta=0.5)
    assert ours.f_beta == pytest.approx(skm.fbeta_score(y, p >= 0.4, beta=0.5))


def test_ties_at_the_threshold_count_as_positive():
    m = ev_metrics.metrics_at_threshold([0, 1, 1, 0], [0.5, 0.5, 0.2, 0.7], 0.5)
    assert (m.tp, m.fp, m.tn, m.fn) == (1, 2, 0, 1)


def test_thresholds_zero_and_one():
    y, p = [0, 1, 0, 1], [0.0, 0.3, 0.6, 1.0]
    assert ev_metrics.metrics_at_threshold(y, p, 0.0).sensitivity == 1.0
    assert ev_metrics.metrics_at_threshold(y, p, 0.0).specificity == 0.0
    at_one = ev_metrics.metrics_at_threshold(y, p, 1.0)
    assert (at_one.tp, at_one.fp) == (1, 0)  # p == 1 is still >= 1


def test_no_predicted_positives_gives_nan_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = ev_metrics.metrics_at_threshold([0, 1, 0], [0.1, 0.2, 0.3], 0.9)
    assert np.isnan(m.precision) and m.npv == pytest.approx(2 / 3)
    assert m.sensitivity == 0.0 and m.f1 == 0.0 and m.mcc == 0.0


def test_one_class_gives_nan_aucs_and_empty_curves_without_warning():
    y, p = np.zeros(30, int), np.linspace(0, 1, 30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = ev_result.evaluate(y, p, n_boot=20)
        recs = res.recommendations()
        boot = res.intervals_at(0.5)
    assert np.isnan(res.roc_auc) and np.isnan(res.pr_auc) and np.isnan(res.roc_auc_ci[0])
    assert res.roc_fpr.size == 0 and res.pr_precision.size == 0 and res.n_boot_used == 0
    assert np.isnan(res.at(0.5).sensitivity) and boot.n_used == 0
    assert not recs.set_index("name").loc["youden", "met"]
    assert not recs.set_index("name").loc["sensitivity_target", "met"]
    assert thresholds.choose_threshold(y, p) == 0.5


def test_ranking_and_curves_equal_sklearn(data, result):
    y, p = data
    assert result.roc_auc == pytest.approx(skm.roc_auc_score(y, p))
    assert result.pr_auc == pytest.approx(skm.average_precision_score(y, p))
    for ours, theirs in zip(
        (result.roc_fpr, result.roc_tpr, result.pr_precision, result.pr_recall),
        (*skm.roc_curve(y, p)[:2], *skm.precision_recall_curve(y, p)[:2]),
    ):
        np.testing.assert_allclose(ours, theirs)


def test_at_equals_metrics_at_threshold_everywhere(data, result):
    y, p = data
    u = np.unique(p)
    for t in [-0.1, 0.0, 1.0, 1.5, *u[::5], *((u[:-1] + u[1:]) / 2)[::5]]:
        fast, slow = result.at(t), ev_metrics.metrics_at_threshold(y, p, t)
        fast_json, slow_json = fast.to_json(), slow.to_json()
        assert fast_json.keys() == slow_json.keys()
        for key in slow_json:
            np.testing.assert_equal(fast_json[key], slow_json[key], err_msg=f"{key} at {t}")


def test_curve_df_matches_at(result):
    df = result.curve_df()
    assert list(df.columns) == ["threshold", "sensitivity", "specificity", "ppv", "npv", "f1"]
    assert df["threshold"].is_monotonic_increasing
    assert df["threshold"].iloc[[0, -1]].tolist() == [0.0, 1.0]
    for _, row in df.iloc[::7].iterrows():
        m = result.at(row["threshold"])
        for col in ("sensitivity", "specificity", "ppv", "npv", "f1"):
            np.testing.assert_equal(row[col], getattr(m, col))


def brute_force(y, p, beta=2.0):
    """Metrics at every candidate threshold, for checking the recommendations."""
    grid = np.unique(np.r_[p, 0.0, 1.0])
    return pd.DataFrame(
        [ev_metrics.metrics_at_threshold(y, p, t, beta=beta).to_json() for t in grid]
    )


def test_recommendations_meet_their_rules(data, result):
    y, p = data
    recs = result.recommendations(sensitivity_target=0.85, specificity_target=0.8)
    assert list(recs.columns) == [
        "name",
        "threshold",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "description",
        "met",
    ]
    assert set(recs["name"]) == set(config.THRESHOLD_METHODS) - {"fixed_0.5"} and recs["met"].all()
    rec = recs.set_index("name")
    bf = brute_force(y, p)
    j = bf["sensitivity"] + bf["specificity"] - 1
    at = {name: result.at(rec.loc[name, "threshold"]) for name in rec.index}
    assert at["youden"].sensitivity + at["youden"].specificity - 1 == pytest.approx(j.max())
    assert at["max_f1"].f1 == pytest.approx(bf["f1"].max())
    assert at["max_fbeta"].f_beta == pytest.approx(bf["f_beta"].max())
    assert at["sensitivity_target"].sensitivity >= 0.85
    best_spec = bf.loc[bf["sensitivity"] >= 0.85, "specificity"].max()
    assert at["sensitivity_target"].specificity == best_spec
    assert at["specificity_target"].specificity >= 0.8
    assert (
        at["specificity_target"].sensitivity
        == bf.loc[bf["specificity"] >= 0.8, "sensitivity"].max()
    )


def test_choose_threshold_agrees_with_recommendations(data, result):
    y, p = data
    rec = result.recommendations().set_index("name")["threshold"]
    for method in config.THRESHOLD_METHODS:
        expected = 0.5 if method == "fixed_0.5" else rec[method]
        assert thresholds.choose_threshold(y, p, method) == expected


def test_unreachable_target_says_not_met_and_returns_closest():
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.2, 1.0, 1.0, 0.6, 1.0])  # two negatives at 1.0: specificity <= 1/3
    recs = thresholds.recommend_thresholds(y, p, specificity_target=0.9)
    spec = next(r for r in recs if r.name == "specificity_target")
    assert not spec.met and "No threshold" in spec.description
    assert ev_metrics.metrics_at_threshold(y, p, spec.threshold).specificity == pytest.approx(1 / 3)


@pytest.mark.parametrize("prevalence", [None, 0.01])
def test_min_cost_minimises_expected_cost(data, prevalence):
    y, p = data
    cost_fn, cost_fp = 20.0, 1.5
    recs = thresholds.recommend_thresholds(
        y, p, cost_fn=cost_fn, cost_fp=cost_fp, prevalence=prevalence
    )
    t = next(r.threshold for r in recs if r.name == "min_cost")

    def cost(m):
        if prevalence is None:
            return (cost_fn * m.fn + cost_fp * m.fp) / m.n
        miss, alarm = 1 - m.sensitivity, 1 - m.specificity
        return prevalence * cost_fn * miss + (1 - prevalence) * cost_fp * alarm

    best = cost(ev_metrics.metrics_at_threshold(y, p, t))
    for u in np.r_[np.linspace(-0.01, 1.01, 205), np.unique(p)]:
        assert best <= cost(ev_metrics.metrics_at_threshold(y, p, u)) + 1e-12


def test_top_percent_flags_that_share():
    p = np.random.default_rng(3).random(200)
    t = thresholds.threshold_for_top_percent(p, 10)
    assert (p >= t).sum() == 20
    assert thresholds.threshold_for_top_percent(p, 100) == p.min()
    tied = p.round(1)  # ties: at least N%, and fewer than N% strictly above
    t = thresholds.threshold_for_top_percent(tied, 15)
    assert (tied >= t).sum() >= 30 > (tied > t).sum()
    rec = next(
        r
        for r in thresholds.recommend_thresholds((tied > 0.5).astype(int), tied)
        if r.name == "top_percent"
    )
    assert rec.met == ((tied >= rec.threshold).sum() == 20)


def test_intervals_contain_the_point_estimates(result):
    lo, hi = result.roc_auc_ci
    assert lo < result.roc_auc < hi
    assert result.pr_auc_ci[0] < result.pr_auc < result.pr_auc_ci[1]
    assert result.n_boot_used == 200
    out = result.intervals_at(0.45)
    for name in ("sensitivity", "specificity"):
        value = getattr(out, name)
        assert getattr(out, f"{name}_ci")[0] <= value <= getattr(out, f"{name}_ci")[1]
        assert getattr(out, f"{name}_wilson")[0] <= value <= getattr(out, f"{name}_wilson")[1]


def test_intervals_at_is_cached_per_count_interval(result):
    result._cache.clear()
    u = np.unique(result.y_prob)
    first = result.intervals_at(u[10])
    again = result.intervals_at((u[9] + u[10]) / 2)  # same counts as u[10]
    assert len(result._cache) == 1 and first.sensitivity_ci == again.sensitivity_ci


def test_intervals_narrow_as_n_grows():
    def widths(n):
        y, p = make_data(n, seed=n)
        auc = iv.bootstrap_auc_intervals(y, p, n_boot=200, seed=0)
        ss = iv.bootstrap_sens_spec_intervals(y, p, 0.45, n_boot=200, seed=0)
        return [hi - lo for lo, hi in (auc["roc_auc"], auc["pr_auc"], ss["sensitivity"])]

    for small, large in zip(widths(100), widths(2000)):
        assert large < small / 2


def test_patient_bootstrap_is_wider_when_images_of_a_patient_agree():
    y, p = make_data(60, seed=5)
    y4, p4, patient = np.repeat(y, 4), np.repeat(p, 4), np.repeat(np.arange(60), 4)
    by_image = iv.bootstrap_auc_intervals(y4, p4, n_boot=400, seed=0)["roc_auc"]
    by_patient = iv.bootstrap_auc_intervals(y4, p4, patient, n_boot=400, seed=0)["roc_auc"]
    assert by_patient[1] - by_patient[0] > 1.4 * (by_image[1] - by_image[0])
    ss_image = iv.bootstrap_sens_spec_intervals(y4, p4, 0.5, n_boot=400)["sensitivity"]
    ss_patient = iv.bootstrap_sens_spec_intervals(y4, p4, 0.5, patient, n_boot=400)["sensitivity"]
    assert ss_patient[1] - ss_patient[0] > 1.4 * (ss_image[1] - ss_image[0])


def test_weighted_aucs_equal_sklearn_on_the_resampled_data():
    y, p = make_data(80, seed=7, decimals=1)  # many ties
    weights = np.random.default_rng(0).integers(0, 3, size=(5, y.size))
    roc, ap = iv.weighted_aucs(y, p, weights)
    for row, w in enumerate(weights):
        ys, ps = np.repeat(y, w), np.repeat(p, w)
        assert roc[row] == pytest.approx(skm.roc_auc_score(ys, ps), abs=1e-12)
        assert ap[row] == pytest.approx(skm.average_precision_score(ys, ps), abs=1e-12)


def test_resamples_without_both_classes_are_skipped_and_seed_repeats():
    y, p = np.r_[1, np.zeros(9, int)], np.linspace(0.1, 0.9, 10)
    out = iv.bootstrap_auc_intervals(y, p, n_boot=300, seed=4)
    assert 0 < out["n_used"] < 300 and out == iv.bootstrap_auc_intervals(y, p, n_boot=300, seed=4)
    ss = iv.bootstrap_sens_spec_intervals(y, p, 0.5, n_boot=300, seed=4)
    assert ss["n_used"] == out["n_used"]  # the same resamples


def test_wilson_interval_known_values():
    assert iv.wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert iv.wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert np.isnan(iv.wilson_interval(0, 0)[0])


@pytest.fixture
def frame():
    return pd.DataFrame(
        {
            "patient_id": ["A", "A", "A", "A", "B", "B"],
            "laterality": ["L", "L", "R", "R", "", None],
            "label": [0, 0, 1, 1, 0, 0],
            "probability": [0.2, 0.4, 0.9, 0.5, 0.1, 0.3],
        }
    )


@pytest.mark.parametrize(
    "level, how, expected",
    [
        ("breast", "mean", [0.3, 0.7, 0.2]),
        ("breast", "max", [0.4, 0.9, 0.3]),
        ("patient", "mean", [0.5, 0.2]),
        ("patient", "max", [0.9, 0.3]),
        ("patient", None, [0.7, 0.2]),  # mean per breast, max over breasts
    ],
)
def test_aggregation(frame, level, how, expected):
    out = aggregation.aggregate_predictions_df(frame, level=level, how=how)
    np.testing.assert_allclose(out["probability"], expected)
    if level == "breast":
        assert out["laterality"].tolist() == ["L", "R", ""]
        assert out["label"].tolist() == [0, 1, 0] and out["n_images"].tolist() == [2, 2, 2]
    else:
        assert out["label"].tolist() == [1, 0] and out["n_images"].tolist() == [4, 2]


@pytest.mark.parametrize("strategy", ["quantile", "uniform"])
def test_calibration_and_brier_equal_sklearn(data, strategy):
    y, p = data
    df = ev_metrics.calibration_df(y, p, n_bins=8, strategy=strategy)
    frac, mean = calibration_curve(y, p, n_bins=8, strategy=strategy)
    np.testing.assert_allclose(df["fraction_positive"], frac)
    np.testing.assert_allclose(df["mean_predicted"], mean)
    assert df["count"].sum() == y.size and (df["count"] > 0).all()
    assert ev_metrics.brier_score(y, p) == pytest.approx(skm.brier_score_loss(y, p))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ev_metrics.metrics_at_threshold([0, 1, 1], [0.1, 0.2], 0.5), "3 labels but 2"),
        (lambda: ev_metrics.metrics_at_threshold([0, 1], [0.1, np.nan], 0.5), "not finite"),
        (lambda: ev_metrics.metrics_at_threshold([0, 2], [0.1, 0.2], 0.5), "Labels must be 0"),
        (lambda: ev_metrics.metrics_at_threshold([0, 1], [0.1, 1.2], 0.5), "between 0 and 1"),
        (lambda: ev_metrics.metrics_at_threshold([0, 1], [0.1, 0.2], 0.5, beta=0), "Beta must"),
        (lambda: thresholds.recommend_thresholds([0, 1], [0.1, 0.2], beta=-1), "Beta must"),
        (lambda: thresholds.threshold_for_top_percent([0.1, 0.2], 0), r"\(0, 100\]"),
        (lambda: thresholds.threshold_for_top_percent([0.1, 0.2], 101), r"\(0, 100\]"),
        (
            lambda: thresholds.choose_threshold([0, 1], [0.1, 0.2], "magic"),
            "Unknown threshold method",
        ),
        (
            lambda: thresholds.recommend_thresholds([0, 1], [0.1, 0.2], sensitivity_target=2),
            "target",
        ),
        (lambda: ev_result.evaluate([0, 1], [0.1, 0.2], ["a"]), "1 patient ids for 2"),
        (lambda: ev_result.evaluate([0, 1], [0.1, 0.2], n_boot=-1), "bootstrap resamples"),
        (lambda: ev_result.evaluate([], []), "no predictions"),
        (lambda: ev_metrics.calibration_df([0, 1], [0.1, 0.2], strategy="odd"), "Unknown binning"),
        (lambda: iv.wilson_interval(5, 3), "0 <= k <= n"),
        (lambda: iv.bootstrap_auc_intervals([0, 1], [0.1, 0.2], confidence=1), "confidence"),
    ],
)
def test_bad_inputs_raise_user_error(call, match):
    with pytest.raises(UserError, match=match):
        call()


def test_bad_aggregation_inputs_raise_user_error(frame):
    with pytest.raises(UserError, match="Unknown level"):
        aggregation.aggregate_predictions_df(frame, level="study")
    with pytest.raises(UserError, match="Unknown aggregation"):
        aggregation.aggregate_predictions_df(frame, how="median")
    with pytest.raises(UserError, match="lack the column"):
        aggregation.aggregate_predictions_df(frame.drop(columns="probability"))


def test_few_cancers_caution_counts_patients_with_cancer_not_images():
    rng = np.random.default_rng(0)

    def scored(n_cancer_patients: int, with_ids: bool = True):
        # three images per patient with cancer, two per patient without
        pid = [f"c{i}" for i in range(n_cancer_patients) for _ in range(3)]
        pid += [f"n{i}" for i in range(60) for _ in range(2)]
        y = np.array([1] * (3 * n_cancer_patients) + [0] * 120)
        p = np.clip(0.3 * y + rng.uniform(0, 0.7, y.size), 0, 1)
        return ev_result.evaluate(y, p, pid if with_ids else None, n_boot=20)

    few = scored(10)
    assert few.n_positive_patients == 10 and few.n_positive == 30
    assert few.few_cancers_caution().startswith("Only 10 patients with cancer validate")
    assert "rough guide" in few.few_cancers_caution()
    assert scored(10, with_ids=False).few_cancers_caution().startswith("Only 30 cancer images")
    bound = ev_result.FEW_CANCER_PATIENTS
    assert scored(bound - 1).few_cancers_caution() != ""
    assert scored(bound).few_cancers_caution() == ""
