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


_CURVES = (("loss", "Loss"), ("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC"), ("recall", "Recall"))


def plot_training_curves(history: pd.DataFrame, epochs: int | None = None) -> go.Figure:
    """Loss, ROC-AUC, PR-AUC and recall per epoch, training and validation.

    Args:
        history: one row per epoch with ``epoch`` and Keras-style columns (``loss``,
            ``val_loss``, ``roc_auc``, ``val_roc_auc``, ...).
        epochs: planned epochs, to fix the x axis while a run is going.
    """
    fig = make_subplots(
        rows=2, cols=2, subplot_titles=[title for _, title in _CURVES], vertical_spacing=0.14
    )
    for i, (key, _) in enumerate(_CURVES):
        row, col = divmod(i, 2)
        for prefix, name, dash in (("", "train", "dot"), ("val_", "validation", "solid")):
            column = prefix + key
            if history.empty or column not in history:
                continue
            fig.add_trace(
                go.Scatter(
                    x=history["epoch"],
                    y=history[column],
                    name=name,
                    mode="lines+markers",
                    line=dict(dash=dash, color="#5b7fb0" if prefix else "#9aa5b1"),
                    legendgroup=name,
                    showlegend=i == 0,
                ),
                row=row + 1,
                col=col + 1,
            )
    if epochs:
        fig.update_xaxes(range=[0.5, epochs + 0.5])
    fig.update_layout(margin=dict(l=10, r=10, t=40, b=10), height=480, legend_title_text="")
    return fig
