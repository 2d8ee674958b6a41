"""Guarded widgets: saving and restoring thresholds, deleting bundles."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from bcp_core import config
from bcp_core.access import Action
from bcp_core.errors import UserError
from bcp_core.model.bundle import Bundle, delete_bundle, list_bundles_df, update_threshold
from bcp_core.output_safety import plain_markdown
from dashboard.auth import audit, can, identity
from dashboard.shared import bundle_writable, bundles_dir, show_error


def _save(bundle: Bundle, value: float, method: str, note: str, action: str) -> None:
    if not (can(Action.SAVE_THRESHOLD) and bundle_writable(bundle.path)):
        show_error("Saving a threshold needs the analyst role and a bundle other than the demo.")
        return
    try:
        update_threshold(bundle.path, value, method, note=note, by=identity().user)
    except UserError as exc:
        show_error(exc)
        return
    audit(action, bundle=bundle.path.name, threshold=round(float(value), 6), method=method)
    st.success(
        f"Saved: {plain_markdown(bundle.path.name)} now decides at {value:.4f} "
        f"({plain_markdown(method)}); prediction uses it.",
        icon=":material/check:",
    )


def threshold_save(bundle: Bundle, value: float, method: str, level: str) -> None:
    """The save button of the threshold page (analysts, not the demo bundle), and the history
    of earlier thresholds with one-click restore."""
    allowed = can(Action.SAVE_THRESHOLD)
    writable = bundle_writable(bundle.path)
    if st.button(
        f"Save threshold {value:.4f} to the bundle",
        type="primary",
        key="thr_save",
        disabled=not (allowed and writable),
    ):
        _save(bundle, value, method, f"chosen on {level} level", "threshold_save")
    if not allowed:
        st.caption("Viewers explore thresholds; saving one needs the analyst role.")
    elif not writable:
        st.caption("The demo bundle is read-only in the dashboard: save on a bundle you trained.")
    past = bundle.meta.threshold.past()
    if not past:
        return
    with st.expander(f"Threshold history ({len(past)} earlier)"):
        for i, old in reversed(list(enumerate(past))):
            cols = st.columns([1.2, 2, 2.5, 3, 1])
            cols[0].write(f"{old.value:.4f}")
            cols[1].write(plain_markdown(old.method) or "-")
            cols[2].write(plain_markdown(old.chosen) or "-")
            cols[3].write(plain_markdown(old.by or "training run"))
            if cols[4].button(
                "Restore", key=f"thr_restore_{i}", disabled=not (allowed and writable)
            ):
                note = f"restored the choice of {old.chosen or 'training'}"
                _save(bundle, old.value, old.method, note, "threshold_restore")


def bundle_delete() -> None:
    """Admins delete bundles they no longer need (never the demo bundle)."""
    if not can(Action.DELETE_BUNDLE):
        return
    names = [n for n in list_bundles_df(bundles_dir())["bundle"] if n != config.DEMO_BUNDLE_NAME]
    if not names:
        return
    with st.expander("Delete a bundle (admin)"):
        name = st.selectbox("Bundle", names, key="adm_delete_pick")
        sure = st.checkbox("I am sure: the folder is deleted for good", key="adm_delete_sure")
        if st.button("Delete", key="adm_delete", disabled=not sure) and can(Action.DELETE_BUNDLE):
            try:
                delete_bundle(bundles_dir(), Path(str(name)).name)
            except UserError as exc:
                show_error(exc)
                return
            audit("bundle_delete", bundle=name)
            st.success(f"Deleted {plain_markdown(name)}.", icon=":material/delete:")
