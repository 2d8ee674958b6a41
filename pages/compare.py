"""Page 6: compare runs trained on the same data, on the validation patients they share, and
how each got there (their training curves)."""

import pandas as pd
import streamlit as st

from bcp_core.access import Action
from bcp_core.errors import UserError
from bcp_core.formatting import defined, interval, number, with_interval
from bcp_core.inference.bundles_compared import compare_bundles
from bcp_core.output_safety import plain_markdown
from bcp_core.plots import plot_compare_pr, plot_compare_roc
from dashboard.auth import allowed, require
from dashboard.shared import bundle_version, comparable_bundle_paths, show_error
from dashboard.views.compare import curves_section, run_choices

require(Action.VIEW, "Comparing runs needs the viewer role.")
st.title("Compare runs")
paths = comparable_bundle_paths()
if len(paths) < 2:
    why = (
        ": train another one on the Training page."
        if allowed(Action.TRAIN)
        else "; viewers see the server's bundle only."
    )
    st.info(f"Comparing needs at least two bundles{why}", icon=":material/info:")
    st.stop()
choices = run_choices(paths)
chosen = st.multiselect(
    "Bundles to compare",
    paths,
    default=paths[:2],
    key="cmp_bundles",
    format_func=lambda p: choices[p],
    help="Bundles trained on the same data root; compared on the validation images they share.",
)
chosen = [p for p in chosen if p in paths]  # only bundles this session may read
if len(chosen) < 2:
    st.info("Choose two or more bundles.", icon=":material/info:")
    st.stop()


@st.cache_data(max_entries=8, show_spinner="Scoring the runs and the paired bootstrap...")
def comparison(chosen: tuple[str, ...], versions: tuple[float, ...]):
    return compare_bundles(list(chosen))


try:
    c = comparison(tuple(chosen), tuple(bundle_version(p) for p in chosen))
except UserError as exc:
    show_error(exc)
    st.stop()

dropped = ", ".join(f"{plain_markdown(k)} {v}" for k, v in c.dropped_images.items())
st.caption(
    f"Compared on {c.n_images} validation images of {c.n_patients} patients "
    f"({c.n_positive} with cancer) that every run scored; validation images left out per run: "
    f"{dropped}. Each run is scored at its own saved threshold."
)
left, right = st.columns(2)
left.plotly_chart(plot_compare_roc(c.runs), key="cmp_roc")
right.plotly_chart(plot_compare_pr(c.runs), key="cmp_pr")
curves_section(chosen)


def pct(value: float, ci: tuple[float, float]) -> str:
    return with_interval(value, *ci, as_percent=True)


def num(value: float, ci: tuple[float, float]) -> str:
    shown = number(value)
    return f"{shown} ({interval(ci)})" if defined(value) and defined(ci[0]) else shown


st.subheader("At each run's saved threshold")
table = pd.DataFrame(
    {
        "run": r.name,
        "threshold": round(r.threshold, 4),
        "sensitivity (95% CI)": pct(r.at.sensitivity, r.at.sensitivity_ci),
        "specificity (95% CI)": pct(r.at.specificity, r.at.specificity_ci),
        "ROC-AUC (95% CI)": num(r.result.roc_auc, r.result.roc_auc_ci),
        "PR-AUC (95% CI)": num(r.result.pr_auc, r.result.pr_auc_ci),
    }
    for r in c.runs
)
st.dataframe(table, hide_index=True, key="cmp_table")

st.subheader("Paired AUC differences")
pairs = pd.DataFrame(
    {
        "runs": f"{p.a} - {p.b}",
        "ROC-AUC difference (95% CI)": num(p.roc_auc_diff, p.roc_auc_diff_ci),
        "PR-AUC difference (95% CI)": num(p.pr_auc_diff, p.pr_auc_diff_ci),
        "p (two-sided)": number(p.p_value),
    }
    for p in c.pairs
)
st.dataframe(pairs, hide_index=True, key="cmp_pairs")
st.caption(
    f"Paired patient bootstrap: each of {c.pairs[0].n_boot} resamples draws the common patients "
    "with replacement and scores every run on the same draw; the interval is that of the "
    "difference, and p is twice the smaller share of resamples on either side of 0."
)

st.subheader("Settings that differ")
if c.differing:
    diff = pd.DataFrame(
        {r.name: [str(v[i]) for v in c.differing.values()] for i, r in enumerate(c.runs)},
        index=pd.Index(list(c.differing), name="setting"),
    )
    st.dataframe(diff, key="cmp_settings")
else:
    st.caption("The runs were trained with the same settings.")
