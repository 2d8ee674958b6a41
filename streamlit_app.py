"""Breast Cancer Prediction dashboard: entry point (``streamlit run streamlit_app.py``)."""

import streamlit as st

from bcp_core.access import Action, can
from dashboard.auth import gate
from dashboard.shared import sidebar

st.set_page_config(
    page_title="Breast Cancer Prediction", page_icon=":material/radiology:", layout="wide"
)
me = gate()  # sign-in, or the sentence that refuses this session; stops the page

PAGES = [
    st.Page(
        "pages/data_matching.py", title="Data matching", icon=":material/join_inner:", default=True
    ),
    st.Page("pages/class_balance.py", title="Class balance", icon=":material/balance:"),
    st.Page("pages/training.py", title="Training", icon=":material/model_training:"),
    st.Page("pages/threshold.py", title="Threshold explorer", icon=":material/tune:"),
    st.Page("pages/predict.py", title="Prediction", icon=":material/image_search:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
]
if not can(me.role, Action.TRAIN):  # viewers: pages 1, 2, 4 and 6 read-only, and prediction
    PAGES.pop(2)
if can(me.role, Action.READ_AUDIT):
    PAGES.append(st.Page("pages/audit.py", title="Audit log", icon=":material/policy:"))

navigation = st.navigation(PAGES)
sidebar()
navigation.run()
