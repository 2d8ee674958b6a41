"""Guarded widgets: saving and restoring thresholds, deleting, exporting and averaging bundles."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import streamlit as st

from bcp_core import config
from bcp_core.access import Action
from bcp_core.config import method_label
from bcp_core.errors import UserError
from bcp_core.model.bundle import Bundle, delete_bundle, list_bundles_df, update_threshold
from bcp_core.output_safety import plain_markdown
from dashboard.auth import allowed, audit, denied, identity
from dashboard.shared import bundle_writable, bundles_dir, show_error


def _save(bundle: Bundle, value: float, method: str, note: str, action: str) -> None:
    if not (allowed(Action.SAVE_THRESHOLD) and bundle_writable(bundle.path)):
        denied(Action.SAVE_THRESHOLD, bundle=bundle.path.name)
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
        f"({plain_markdown(method_label(method))}); prediction uses it.",
        icon=":material/check:",
    )


def threshold_save(bundle: Bundle, value: float, method: str, level: str) -> None:
    """The save button of the threshold page (analysts, not the demo bundle), and the history
    of earlier thresholds with one-click restore."""
    may_save = allowed(Action.SAVE_THRESHOLD)
    writable = bundle_writable(bundle.path)
    if st.button(
        f"Save threshold {value:.4f} to the bundle",
        type="primary",
        key="thr_save",
        disabled=not (may_save and writable),
    ):
        _save(bundle, value, method, f"chosen on {level} level", "threshold_save")
    if not may_save:
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
                "Restore", key=f"thr_restore_{i}", disabled=not (may_save and writable)
            ):
                note = f"restored the choice of {old.chosen or 'training'}"
                _save(bundle, old.value, old.method, note, "threshold_restore")


def bundle_delete() -> None:
    """Admins delete bundles they no longer need (never the demo bundle)."""
    if not allowed(Action.DELETE_BUNDLE):
        return
    names = [n for n in list_bundles_df(bundles_dir())["bundle"] if n != config.DEMO_BUNDLE_NAME]
    if not names:
        return
    with st.expander("Delete a bundle (admin)"):
        # No default: a forged or stale choice falls back to none, never to some bundle.
        name = st.selectbox(
            "Bundle", names, index=None, placeholder="Choose the bundle to delete",
            key="adm_delete_pick",
        )  # fmt: skip
        typed = st.text_input(
            "Type the bundle's name to confirm (it is deleted for good)", key="adm_delete_typed"
        )
        confirmed = name is not None and typed.strip() == name
        if st.button("Delete", key="adm_delete", disabled=not confirmed):
            if not (confirmed and allowed(Action.DELETE_BUNDLE)):
                denied(Action.DELETE_BUNDLE, bundle=str(name))
                show_error("Name the bundle to delete and type its name to confirm.")
                return
            try:
                delete_bundle(bundles_dir(), Path(str(name)).name)
            except UserError as exc:
                show_error(exc)
                return
            audit("bundle_delete", bundle=name)
            st.success(f"Deleted {plain_markdown(name)}.", icon=":material/delete:")


def bundle_export() -> None:
    """Analysts download a bundle's model as ONNX or LiteRT with its preprocessing.json."""
    if not allowed(Action.TRAIN):
        return
    names = list(list_bundles_df(bundles_dir())["bundle"])
    if not names:
        return
    with st.expander("Export a model (ONNX or LiteRT)"):
        st.caption(
            "The file takes prepared images (N, height, width, 1) in [0, 1] and gives the "
            "probability of cancer; preprocessing.json says how to prepare them and the "
            "threshold to decide with. Checked against the model before it is offered."
        )
        name = st.selectbox("Bundle", names, key="exp_pick")
        fmt = st.radio("Format", ("onnx", "litert"), horizontal=True, key="exp_format")
        if st.button("Export", key="exp_go"):
            try:
                with st.spinner("Exporting..."):
                    data = export_zip(bundles_dir() / Path(str(name)).name, str(fmt))
            except UserError as exc:
                show_error(exc)
                return
            audit("bundle_export", bundle=name, what=fmt)
            st.download_button(
                "Download the export (zip)",
                data,
                file_name=f"{Path(str(name)).name}-{fmt}.zip",
                mime="application/zip",
                key="exp_download",
            )


def bundle_average() -> None:
    """Analysts average runs of one model on one patient split into one bundle
    (:func:`bcp_core.model.ensemble.combine_bundles`, as ``python -m bcp_core ensemble``)."""
    if not allowed(Action.TRAIN):
        return
    from bcp_core.model.ensemble import MAX_MEMBERS, MIN_MEMBERS, combine_bundles
    from bcp_core.settings import training_limits

    names = list(list_bundles_df(bundles_dir())["bundle"])
    if len(names) < MIN_MEMBERS:
        return
    with st.expander("Average runs into one model"):
        st.caption(
            "Runs of one model that differ only in their seed rank the films differently; "
            "their mean ranks more steadily than one run. Choose runs trained on the same data "
            "with the same split seed (so validated on the same patients); the new bundle "
            "decides at a threshold chosen on their mean, as a run's is."
        )
        picked = st.multiselect(
            "Runs", names, max_selections=MAX_MEMBERS, key="avg_pick",
            placeholder=f"Choose {MIN_MEMBERS} to {MAX_MEMBERS} runs",
        )  # fmt: skip
        chosen = [Path(str(n)).name for n in picked]
        if st.button("Average", key="avg_go", disabled=len(chosen) < MIN_MEMBERS):
            if not allowed(Action.TRAIN) or not set(chosen) <= set(names):
                denied(Action.TRAIN, bundle=",".join(chosen))
                show_error("Averaging runs needs the analyst role and runs of this server.")
                return
            out = bundles_dir() / f"{datetime.now():%Y%m%d-%H%M%S}-mean-of-{len(chosen)}-runs"
            try:
                with st.spinner("Averaging..."):
                    result = combine_bundles(
                        [bundles_dir() / n for n in chosen], out, limits=training_limits()
                    )
            except UserError as exc:
                show_error(exc)
                return
            audit("bundle_average", bundle=out.name, what=",".join(chosen))
            auc = result.metrics.roc_auc
            st.success(
                f"Wrote {plain_markdown(out.name)}: validation ROC-AUC {auc:.3f} (the runs: "
                + ", ".join(f"{m.val_roc_auc:.3f}" for m in result.members)
                + "). Choose it on the threshold and prediction pages.",
                icon=":material/check:",
            )


def export_zip(bundle: Path, fmt: str) -> bytes:
    """The export of ``bundle`` as ``fmt``, zipped in memory (model file, preprocessing.json and
    the NOTICE of pretrained weights when the model started from them)."""
    import io
    import tempfile
    import zipfile

    from bcp_core.model.export import export_bundle

    with tempfile.TemporaryDirectory(prefix="bcp-export-") as tmp:
        result = export_bundle(bundle, fmt, Path(tmp) / "export")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(Path(result.out).iterdir()):
                archive.write(path, path.name)
    return buffer.getvalue()
