"""Streamlit building blocks that two pages or more use (no computation beyond presentation).

What one page needs beyond its own file lives in that page's view, ``dashboard/views/<page>.py``;
``tests/test_architecture.py`` fails when a public name here has fewer than two users.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from bcp_core.output_safety import neutralised_df
from dashboard.auth import audit


def csv_download(label: str, df: pd.DataFrame, file_name: str, key: str) -> None:
    """A download button of ``df`` as CSV; no cell can run as a spreadsheet formula.

    Every CSV the dashboard offers goes through here: file names and workbook cells such as
    ``=HYPERLINK(...)`` are prefixed with a quote (:func:`bcp_core.output_safety.neutralised_df`).
    Each download is recorded in the audit log (the file's name, never its content).
    """
    data = neutralised_df(df).to_csv(index=False)
    st.download_button(
        label,
        data,
        file_name,
        "text/csv",
        key=key,
        on_click=audit,
        args=("export",),
        kwargs={"file": file_name, "what": f"{len(df)} rows"},
    )
