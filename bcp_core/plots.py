"""Plotly figures built from results; layout only, no computation, no Streamlit.

Every ``plot_*`` function returns a ``plotly.graph_objects.Figure``.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bcp_core import config

CLASS_COLORS = {"cancer": "#b03a63", "non-cancer": "#5b7fb0"}
STAGE_COLORS = ("#9aa5b1", "#5b7fb0", "#2f9e6f")
_LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), legend_title_text="", height=340)


def plot_match_funnel(stages: pd.DataFrame) -> go.Figure:
    """Rows -> keys matched -> images on disk, one funnel per sheet.

    Args:
        stages: columns ``sheet``, ``stage``, ``count`` (see ``balance.sheet_rows_df``).
    """
    sheets = list(dict.fromkeys(stages["sheet"]))
    fig = make_subplots(
        rows=1, cols=len(sheets), subplot_titles=sheets, specs=[[{"type": "funnel"}] * len(sheets)]
    )
    for i, sheet in enumerate(sheets, 1):
        part = stages[stages["sheet"] == sheet]
        fig.add_trace(
            go.Funnel(
                y=part["stage"],
                x=part["count"],
                textinfo="value+percent initial",
                marker=dict(color=list(STAGE_COLORS)),
                name=sheet,
                showlegend=False,
            ),
            row=1,
            col=i,
        )
    fig.update_layout(**_LAYOUT)
    return fig


def plot_class_counts(
    counts: pd.DataFrame, x: str | None = None, y: str = "images", title: str = ""
) -> go.Figure:
    """Bars of images (or patients) per class, grouped by ``x`` when given.

    Args:
        counts: output of ``balance.counts_df``.
        x: the grouping column (``view``, ``laterality``, ``split`` ...), or None for class only.
        y: ``images`` or ``patients``.
    """
    fig = go.Figure()
    for cls in config.CLASS_NAMES:
        part = counts[counts["class"] == cls]
        fig.add_trace(
            go.Bar(
                x=part[x] if x else part["class"],
                y=part[y],
                name=cls,
                marker_color=CLASS_COLORS[cls],
                text=part[y],
                textposition="outside",
            )
        )
    fig.update_layout(barmode="group", title=title, yaxis_title=y, **_LAYOUT)
    return fig


def plot_images_per_patient(per_patient: pd.DataFrame) -> go.Figure:
    """How many patients have 1, 2, 3 ... usable images."""
    fig = go.Figure(
        go.Bar(
            x=per_patient["images"].astype(str),
            y=per_patient["patients"],
            marker_color="#9aa5b1",
            text=per_patient["patients"],
            textposition="outside",
        )
    )
    fig.update_layout(
        xaxis_title="usable images per patient",
        xaxis_type="category",
        yaxis_title="patients",
        title="Images per patient",
        **_LAYOUT,
    )
    return fig
