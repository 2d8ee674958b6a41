"""Page 4's sections: the threshold control (a slider and a number box kept in step, a zoom
around the operating point, or a share of images to flag; the applied value survives a change of
level), the metric cards with their intervals, the recommended thresholds, the gallery of errors,
the model card, the readers' marks, and the performance per subgroup."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from bcp_core.access import Action
from bcp_core.config import method_label
from bcp_core.data.attributes import image_values
from bcp_core.data.datasource import data_root_signature
from bcp_core.data.roots import hide_root
from bcp_core.errors import UserError
from bcp_core.evaluation.result import EvaluationResult
from bcp_core.evaluation.subgroups import subgroup_performance
from bcp_core.evaluation.thresholds import threshold_for_top_percent
from bcp_core.formatting import percent
from bcp_core.imaging.decode import read_gray
from bcp_core.inference.feedback import read_marks, summarise
from bcp_core.model.bundle import Bundle, bundle_card, record_subgroups
from bcp_core.output_safety import plain_markdown
from dashboard.auth import allowed, audit, identity
from dashboard.shared import (
    allowed_roots,
    bundle_writable,
    chosen_root,
    load_match,
    show_error,
    workbook_column_names,
)
from dashboard.widgets import csv_download

#: Half the width of the zoomed slider's range.
ZOOM_HALF_WIDTH = 0.02
KEY_VALUE, KEY_BOX, KEY_METHOD, KEY_FOR = "thr_value", "thr_box", "thr_method", "thr_for"


def _set(value: float, method: str) -> None:
    value = min(max(float(value), 0.0), 1.0)  # not rounded: a saved threshold stays exact
    st.session_state[KEY_VALUE] = st.session_state[KEY_BOX] = value
    st.session_state[KEY_METHOD] = method


def apply(value: float, method: str) -> None:
    """Apply a recommended threshold (a button's callback)."""
    _set(value, method)
    st.session_state["thr_mode"] = "threshold"


def _from_slider() -> None:
    _set(st.session_state[KEY_VALUE], "manual")


def _from_box() -> None:
    _set(st.session_state[KEY_BOX], "manual")


def threshold_control(bundle: Bundle, y_prob) -> tuple[float, str]:
    """The threshold and how it was chosen. It starts at the bundle's saved threshold, and
    again only when the bundle changes (not the level: an applied value is kept)."""
    if st.session_state.get(KEY_FOR) != str(bundle.path):
        st.session_state[KEY_FOR] = str(bundle.path)
        _set(bundle.threshold, bundle.meta.threshold.method or "saved")
    mode = st.radio("Choose by", ["threshold", "flag the top N%"], horizontal=True, key="thr_mode")
    if mode != "threshold":
        top = st.slider("Flag the top N% of images", 1.0, 50.0, 10.0, 0.5, key="thr_top")
        return threshold_for_top_percent(y_prob, top), f"top {top:g}%"
    current = float(st.session_state[KEY_VALUE])
    slide, box, zoom = st.columns([6, 2, 1.4], vertical_alignment="bottom")
    zoomed = zoom.toggle("Zoom", key="thr_zoom", help=f"The slider spans +-{ZOOM_HALF_WIDTH}.")
    low, high = (0.0, 1.0)
    if zoomed:
        low = max(0.0, round(current - ZOOM_HALF_WIDTH, 4))
        high = min(1.0, round(current + ZOOM_HALF_WIDTH, 4))
    st.session_state[KEY_VALUE] = current  # a changed range would reset the slider otherwise
    slide.slider(
        "Threshold (cancer when probability >= threshold)", low, high, step=0.0001,
        format="%.4f", key=KEY_VALUE, on_change=_from_slider,
    )  # fmt: skip
    box.number_input(
        "Type a value", 0.0, 1.0, step=0.0001, format="%.4f", key=KEY_BOX, on_change=_from_box
    )
    return float(st.session_state[KEY_VALUE]), str(st.session_state[KEY_METHOD])


def metric_with_interval(
    col, label: str, value: float, interval: tuple | None, help: str = "", *, auc: bool = False
):
    """A metric card with its 95% interval: a proportion as a percentage, an AUC as a number
    (0.861), the way every page and table writes it."""
    shown = (lambda v: f"{v:.3f}") if auc else (lambda v: f"{v:.1%}")
    text = "n/a" if value != value else shown(value)
    detail = None
    if interval and interval[0] == interval[0]:
        low, high = interval
        detail = f"95% CI {low:.2f}-{high:.2f}" if auc else f"95% CI {low:.0%}-{high:.0%}"
    col.metric(label, text, delta=detail, delta_color="off", delta_arrow="off", help=help or None)


def recommendation_params() -> dict:
    """Targets and costs of the recommended thresholds, in an expander."""
    with st.expander("Targets and costs"):
        c = st.columns(5)
        return dict(
            sensitivity_target=c[0].number_input(
                "Sensitivity at least", 0.5, 1.0, 0.9, 0.01, key="thr_sens_target"
            ),
            specificity_target=c[1].number_input(
                "Specificity at least", 0.5, 1.0, 0.9, 0.01, key="thr_spec_target"
            ),
            cost_fn=c[2].number_input(
                "Cost of a missed cancer", 0.1, 1000.0, 10.0, key="thr_cost_fn"
            ),
            cost_fp=c[3].number_input("Cost of a false alarm", 0.1, 1000.0, 1.0, key="thr_cost_fp"),
            beta=c[4].number_input("F-beta's beta", 0.1, 10.0, 2.0, key="thr_beta"),
        )


def recommendation_rows(recs: pd.DataFrame, on_apply: Callable[[float, str], None]) -> None:
    """The recommended thresholds, one row each with an Apply button."""
    head = st.columns([3, 1.2, 1.2, 1.2, 4, 1])
    for col, title in zip(head, ("rule", "threshold", "sensitivity", "specificity", "how", "")):
        col.markdown(f"**{title}**")
    for i, rec in enumerate(recs.itertuples()):
        cols = st.columns([3, 1.2, 1.2, 1.2, 4, 1])
        cols[0].write(method_label(rec.name) + ("" if rec.met else " (target not reached)"))
        cols[1].write(f"{rec.threshold:.4f}")
        cols[2].write(percent(rec.sensitivity))
        cols[3].write(percent(rec.specificity))
        cols[4].caption(rec.description)
        cols[5].button(
            "Apply",
            key=f"apply_rec_{i}",
            on_click=on_apply,
            args=(float(rec.threshold), str(rec.name)),
        )


@st.cache_data(max_entries=512, show_spinner=False)
def thumbnail(path: str, max_side: int = 200) -> np.ndarray | None:
    """A small uint8 preview of an image file, or None when it cannot be read."""
    try:
        gray = read_gray(path, min_size=(max_side, max_side))
    except UserError:
        return None
    img = Image.fromarray((gray * 255).astype(np.uint8))
    img.thumbnail((max_side, max_side))
    return np.asarray(img)


def gallery(df: pd.DataFrame, *, columns: int = 6, limit: int = 18, caption: str = "") -> None:
    """Thumbnails of the ``file`` column with probability captions."""
    if df.empty:
        st.caption("None at this threshold.")
        return
    shown = df.head(limit)
    cols = st.columns(columns)
    for i, row in enumerate(shown.itertuples()):
        image = thumbnail(str(row.file))
        name = plain_markdown(Path(row.file).name)
        with cols[i % columns]:
            if image is None:
                st.caption(f"{name}: unreadable")
            else:
                st.image(image, caption=f"{name} · p={row.probability:.3f}")
    if len(df) > limit:
        st.caption(f"{caption}{len(df) - limit} more not shown.")


@st.cache_data(max_entries=16, show_spinner=False)
def _card_text(path: str, version: str, _bundle: Bundle, _result: EvaluationResult | None) -> str:
    return bundle_card(_bundle, _result)


def model_card(bundle: Bundle, result: EvaluationResult | None = None) -> None:
    """The bundle's model card in an expander, made from its files (never read from
    ``MODEL_CARD.md``, and nothing written: viewers see it for bundles written before cards).
    ``result``: the per-image evaluation of its validation predictions when already computed."""
    version = f"{bundle.meta.saved} {bundle.meta.threshold.to_json()}"
    with st.expander("Model card"):
        st.markdown(_card_text(str(bundle.path), version, bundle, result))


def feedback_line(bundle: Bundle) -> None:
    """Page 4: how many readers' marks the bundle has and how many agree, in one line."""
    try:
        summary = summarise(read_marks(bundle.path))
    except UserError as exc:
        show_error(exc)
        return
    if not summary.n:
        st.caption("Readers' marks (page 5): none yet for this bundle.")
        return
    st.caption(
        f"Readers' marks (page 5): {summary.n}, of which {summary.agree} agree "
        f"({summary.agreement_rate:.0%}); {summary.disagree_cancer} say it is cancer, "
        f"{summary.disagree_not_cancer} that it is not (`python -m bcp_core feedback`)."
    )


@st.cache_data(max_entries=16, show_spinner="Reading the column from the workbooks...")
def _column_cells(root: str, signature: tuple, bundle: str, saved: str, column: str, _match, _f):
    """The column's cells for the bundle's validation images (cached per bundle version)."""
    return image_values(root, _match, _f, column)


def subgroup_section(bundle: Bundle, threshold: float) -> None:
    """Page 4: sensitivity, specificity and ROC-AUC of the validation images per group of a
    workbook column (:mod:`bcp_core.evaluation.subgroups`). Aggregated figures only: a group
    is named after a workbook value only when 3 patients share it, so every role sees it.
    """
    st.subheader("Performance per subgroup")
    match, root = load_match(), chosen_root()
    signature = data_root_signature(root)
    files = bundle.val_predictions["file"].astype(str).tolist()
    try:  # a workbook gone or changed since the match: one sentence, the page above stays
        column = st.selectbox(
            "Group the validation images by a workbook column",
            workbook_column_names(),
            index=None,
            key="thr_subgroup_col",
        )
        if not column:
            return
        got = _column_cells(
            str(root), signature, str(bundle.path), bundle.meta.saved, column, match, files
        )
        table = subgroup_performance(
            bundle.val_predictions, got["value"], column, threshold, found=got["found"]
        )
        st.dataframe(table.display_df(), hide_index=True, key="thr_subgroups")
        st.caption(plain_markdown(table.describe()))
        csv_download("Download the table (CSV)", table.export_df(), "subgroups.csv", "thr_sub_csv")
        if allowed(Action.SAVE_THRESHOLD) and bundle_writable(bundle.path):
            if st.button("Add this table to the model card", key="thr_sub_card"):
                record_subgroups(bundle.path, table.to_json(), by=identity().user)
                audit("card_subgroups", bundle=Path(bundle.path).name, what=str(column))
                st.success(
                    f"Added to the model card of {plain_markdown(Path(bundle.path).name)}.",
                    icon=":material/check:",
                )
    except UserError as exc:
        show_error(hide_root(str(exc), root, allowed_roots()))
