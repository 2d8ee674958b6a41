"""Page 4's threshold control: a slider and a number box kept in step, a zoom around the
operating point, or a share of images to flag; the applied value survives a change of level."""

from __future__ import annotations

import streamlit as st

from bcp_core.evaluation.thresholds import threshold_for_top_percent
from bcp_core.model.bundle import Bundle

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
