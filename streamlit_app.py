"""Breast Cancer Prediction dashboard: entry point (``streamlit run streamlit_app.py``)."""

import streamlit as st

from dashboard.shared import sidebar

st.set_page_config(
    page_title="Breast Cancer Prediction", page_icon=":material/radiology:", layout="wide"
)

PAGES = [
    st.Page(
        "pages/data_matching.py", title="Data matching", icon=":material/join_inner:", default=True
    ),
    st.Page("pages/class_balance.py", title="Class balance", icon=":material/balance:"),
    st.Page("pages/training.py", title="Training", icon=":material/model_training:"),
    st.Page("pages/threshold.py", title="Threshold explorer", icon=":material/tune:"),
    st.Page("pages/predict.py", title="Prediction", icon=":material/image_search:"),
]

navigation = st.navigation(PAGES)
sidebar()
navigation.run()
