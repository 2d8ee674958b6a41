"""Page 4: decide how the model will be used: the threshold, what it costs, and saving it."""

import streamlit as st

from bcp_core.access import Action
from bcp_core.config import method_label
from bcp_core.inference.assessment import LEVELS, errors_df, evaluate_level
from bcp_core.output_safety import plain_markdown
from bcp_core.plots import (
    plot_calibration,
    plot_confusion_matrix,
    plot_metrics_vs_threshold,
    plot_pr,
    plot_probability_histogram,
    plot_roc,
)
from dashboard.admin import threshold_save
from dashboard.auth import allowed, require
from dashboard.shared import KEY_THRESHOLD, ChosenThreshold, current_bundle, shown
from dashboard.views.threshold import (
    apply,
    feedback_line,
    gallery,
    metric_with_interval,
    model_card,
    recommendation_params,
    recommendation_rows,
    subgroup_section,
    threshold_control,
)

require(Action.VIEW, "The threshold explorer needs the viewer role.")
st.title("Threshold explorer")
bundle = current_bundle()
if bundle is None:
    st.info("No model bundle yet: train one on the Training page.", icon=":material/info:")
    st.stop()


@st.cache_data(max_entries=8, show_spinner="Computing curves and bootstrap intervals...")
def evaluation(path: str, saved: str, level: str):
    return evaluate_level(bundle.val_predictions, level)


saved, name = bundle.meta.threshold, plain_markdown(bundle.path.name)
st.caption(
    f"Bundle {name} ({plain_markdown(bundle.meta.model_name)}): saved threshold "
    f"{saved.value:.4f} ({plain_markdown(method_label(saved.method))}). Validation predictions "
    "only: the patients the model was not trained on."
)
level = st.radio(
    "Score per",
    LEVELS,
    horizontal=True,
    key="thr_level",
    help="breast: mean of a breast's views; patient: max over her breasts.",
)
result, preds = evaluation(str(bundle.path), bundle.meta.saved, level)
model_card(bundle, result if level == "image" else None)  # the card is per image
feedback_line(bundle)

threshold, method = threshold_control(bundle, result.y_prob)
# Shared with the prediction page.
st.session_state[KEY_THRESHOLD] = ChosenThreshold(str(bundle.path), float(threshold), method)

m, ci = result.at(threshold), result.intervals_at(threshold)
cols = st.columns(6)
metric_with_interval(
    cols[0],
    "Sensitivity",
    m.sensitivity,
    ci.sensitivity_ci,
    f"{m.tp} of {m.tp + m.fn} cancers found",
)
metric_with_interval(
    cols[1],
    "Specificity",
    m.specificity,
    ci.specificity_ci,
    f"{m.fp} false alarm{'s' if m.fp != 1 else ''} among {m.tn + m.fp}",
)
metric_with_interval(cols[2], "PPV", m.precision, None, "Cancers among those flagged")
metric_with_interval(cols[3], "NPV", m.npv, None, "No cancer among those cleared")
metric_with_interval(cols[4], "ROC-AUC", result.roc_auc, result.roc_auc_ci, auc=True)
metric_with_interval(cols[5], "PR-AUC", result.pr_auc, result.pr_auc_ci, auc=True)
st.caption(
    f"{result.n} validation {level}s, {result.n_positive} with cancer. F1 {m.f1:.3f}, "
    f"MCC {m.mcc:.3f}, balanced accuracy {m.balanced_accuracy:.1%}, accuracy "
    f"{m.accuracy:.1%} (accuracy alone hides missed cancers). Intervals: bootstrap over "
    f"patients, {result.n_boot_used} resamples."
)
if caution := result.few_cancers_caution(advice=allowed(Action.TRAIN)):
    st.warning(caution, icon=":material/warning:")

left, right = st.columns(2)
left.plotly_chart(plot_confusion_matrix(m), key="thr_cm")
right.plotly_chart(plot_metrics_vs_threshold(result.curve_df(), threshold), key="thr_curves")
left.plotly_chart(plot_roc(result.roc_fpr, result.roc_tpr, result.roc_auc, m), key="thr_roc")
right.plotly_chart(
    plot_pr(result.pr_recall, result.pr_precision, result.pr_auc, result.n_positive / result.n, m),
    key="thr_pr",
)
left.plotly_chart(
    plot_probability_histogram(preds["label"], preds["probability"], threshold), key="thr_hist"
)
right.plotly_chart(plot_calibration(result.calibration, result.brier), key="thr_calibration")

st.subheader("Recommended thresholds")
recommendation_rows(result.recommendations(**recommendation_params()), apply)

st.subheader("Errors at this threshold")
tab_fn, tab_fp = st.tabs([f"Missed cancers ({m.fn})", f"False alarms ({m.fp})"])
for tab, kind in ((tab_fn, "fn"), (tab_fp, "fp")):
    with tab:
        errors = errors_df(preds, threshold, kind)
        if level == "image":
            gallery(errors)
        else:
            st.dataframe(shown(errors), hide_index=True, key=f"thr_errors_{kind}")

threshold_save(bundle, float(threshold), method, level)  # analysts; history and restore

subgroup_section(bundle, float(threshold))  # aggregated figures, every role that sees the page
