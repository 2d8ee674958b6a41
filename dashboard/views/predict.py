"""Page 5's batch results: the table as a person reads it, and its CSV."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.widgets import csv_download


def show_batch(table: pd.DataFrame) -> None:
    """The results of several files: thumbnails, probability bars, whole-number decisions, the
    threshold to 4 decimals, each error in full; then the CSV (without the thumbnails)."""
    st.dataframe(
        table,
        hide_index=True,
        key="pred_table",
        column_config={
            "image": st.column_config.ImageColumn("image"),
            "probability": st.column_config.ProgressColumn(
                "probability", min_value=0, max_value=1, format="%.3f"
            ),
            "label": st.column_config.NumberColumn("cancer (1) at threshold", format="%d"),
            "threshold": st.column_config.NumberColumn("threshold", format="%.4f"),
            "error": st.column_config.TextColumn("error", width="large"),
        },
    )
    csv_download(
        "Download results (CSV)", table.drop(columns="image"), "predictions.csv", "pred_csv"
    )
