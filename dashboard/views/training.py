"""Page 3's live run: what it is doing now, Stop, the per-epoch charts, and when it ends, the
hand-off to the threshold explorer and prediction, with a word when it is no better than chance."""

from __future__ import annotations

import streamlit as st

from bcp_core.access import Action, can_stop
from bcp_core.errors import UserError
from bcp_core.evaluation.intervals import better_than_chance
from bcp_core.inference.assessment import evaluate_level
from bcp_core.model.bundle import load_bundle
from bcp_core.output_safety import plain_markdown
from bcp_core.plots import plot_training_curves
from dashboard.auth import audit, can, identity
from dashboard.jobs import JobRegistry
from dashboard.shared import KEY_BUNDLE, session_token, show_error, use_bundle


@st.cache_data(max_entries=16, show_spinner="Checking the run against chance...")
def _roc_auc_interval(path: str) -> tuple[float, float]:
    """The validation ROC-AUC's bootstrap interval over patients (image level)."""
    bundle = load_bundle(path, with_model=False)
    return evaluate_level(bundle.val_predictions, "image")[0].roc_auc_ci


def hand_off(path: str, roc_auc: float) -> None:
    """The end of a run: how good it is, and where to go with it."""
    try:
        low, high = _roc_auc_interval(path)
    except UserError as exc:
        show_error(exc)
        return
    if not better_than_chance((low, high)):
        st.warning(
            f"No better than chance: the validation ROC-AUC {roc_auc:.3f} has a 95% interval "
            f"of {low:.3f}-{high:.3f}, which includes 0.5. Do not use this model to decide; "
            "train longer, on more data, or with another model.",
            icon=":material/warning:",
        )
    if not can(Action.CHOOSE_BUNDLE):
        return
    chosen = st.session_state.get(KEY_BUNDLE) == path
    cols = st.columns([1.4, 2, 2, 3])
    if cols[0].button(
        "Using this model" if chosen else "Use this model", key="tr_use", type="primary",
        disabled=chosen,
        help="Makes it this session's model for the threshold explorer and prediction.",
    ):  # fmt: skip
        use_bundle(path)  # the sidebar takes it on the whole page's rerun
    if chosen:
        cols[1].page_link("pages/threshold.py", label="Tune its threshold", icon=":material/tune:")
        cols[2].page_link(
            "pages/predict.py", label="Predict with it", icon=":material/image_search:"
        )


def best_epoch(history) -> int | None:
    """The epoch the run keeps so far: the best validation PR-AUC (the runner's rule)."""
    if "val_pr_auc" not in history or history["val_pr_auc"].isna().all():
        return None
    return int(history.loc[history["val_pr_auc"].idxmax(), "epoch"])


def live_progress(jobs: JobRegistry) -> None:
    """The current run, polled every second while one runs."""
    running = bool(jobs.current and jobs.current.running)
    st.fragment(run_every=1.0 if running else None)(_live)(jobs)


def _live(jobs: JobRegistry) -> None:
    job = jobs.current
    if job is None:
        st.info("No training run yet on this server. Choose the settings and press Start.")
        return
    mine = "" if job.owner == session_token() else " (started by another session)"
    st.subheader(f"Run {plain_markdown(job.out_dir.name)}{mine}")
    b = job.last_batch
    done = len(job.epochs) + ((b.batch / max(b.steps, 1)) if b and job.running else 0)
    st.progress(min(done / job.cfg.epochs, 1.0), text=job.progress_text())
    me = identity()
    if job.running and st.button(
        "Stop", key="tr_stop", disabled=not can_stop(me.role, me.user, job.user),
        help="Ends at the next batch; the best bundle so far is kept. Only whoever started the "
        "run, or an admin, can stop it.",
    ):  # fmt: skip
        if can_stop(identity().role, identity().user, job.user):
            job.stop_event.set()
            audit("train_stop", run=job.out_dir.name)
    if job.epochs:
        history = job.history_df()
        best = job.result.best_epoch if job.result else best_epoch(history)
        st.plotly_chart(plot_training_curves(history, job.cfg.epochs, best), key="tr_curves")
    if job.status == "failed":
        show_error(job.message)
    elif not job.running and job.result and job.result.metrics:
        r, metrics = job.result, job.result.metrics
        st.success(
            f"{job.status.replace('_', ' ')}: best epoch {r.best_epoch} of {r.epochs_run}; "
            f"validation ROC-AUC {metrics.roc_auc:.3f}, PR-AUC {metrics.pr_auc:.3f}; "
            f"bundle {plain_markdown(job.out_dir.name)}.",
            icon=":material/check:",
        )
        hand_off(str(job.out_dir), metrics.roc_auc)
        if st.session_state.get("tr_seen_done") != job.out_dir.name:
            st.session_state["tr_seen_done"] = job.out_dir.name
            st.rerun()  # once, to stop polling and refresh the table of runs
