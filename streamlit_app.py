"""Breast Cancer Prediction dashboard: entry point (``streamlit run streamlit_app.py``; served
with its server-side guards by ``serve.py``)."""

import streamlit as st

from bcp_core.access import Action, can
from dashboard.auth import gate
from dashboard.shared import sidebar

st.set_page_config(
    page_title="Breast Cancer Prediction", page_icon=":material/radiology:", layout="wide"
)
me = gate()  # sign-in, or the sentence that refuses this session; stops the page

#: Every page: file, title, icon, and the action that opens it (each page checks it again).
PAGES = {
    "data_matching": ("pages/data_matching.py", "Data matching", "join_inner", Action.VIEW),
    "class_balance": ("pages/class_balance.py", "Class balance", "balance", Action.VIEW),
    "training": ("pages/training.py", "Training", "model_training", Action.TRAIN),
    "threshold": ("pages/threshold.py", "Threshold explorer", "tune", Action.VIEW),
    "predict": ("pages/predict.py", "Prediction", "image_search", Action.VIEW),
    "compare": ("pages/compare.py", "Compare", "compare_arrows", Action.VIEW),
    "audit": ("pages/audit.py", "Audit log", "policy", Action.READ_AUDIT),
}
#: Who trains starts at the data; who reads (viewers, the clinician demo) at prediction.
ORDER_ANALYST = ("data_matching", "class_balance", "training", "threshold", "predict", "compare")
ORDER_VIEWER = ("predict", "threshold", "data_matching", "class_balance", "compare")

order = ORDER_ANALYST if can(me.role, Action.TRAIN) else ORDER_VIEWER
# Pages the role may not open stay addressable but hidden: a typed address then meets the
# page's own refusal ("Training needs the analyst role.") instead of another page.
names = [*order, *(name for name in PAGES if name not in order)]
navigation = st.navigation(
    [
        st.Page(
            PAGES[name][0],
            title=PAGES[name][1],
            icon=f":material/{PAGES[name][2]}:",
            default=index == 0,
            visibility="visible" if can(me.role, PAGES[name][3]) else "hidden",
        )  # fmt: skip
        for index, name in enumerate(names)
    ]
)
sidebar()
navigation.run()
