"""Plotly figures built from results; layout only, no computation, no Streamlit.

Every ``plot_*`` function returns a ``plotly.graph_objects.Figure``. Plotly renders a subset of
HTML in labels, legends, titles and hover text: every text that comes from a workbook, a file
name or an image header passes :func:`~bcp_core.output_safety.plain_label` first.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bcp_core import config
from bcp_core.evaluation.compare import RunCurves
from bcp_core.evaluation.metrics import Metrics
from bcp_core.output_safety import plain_label

CLASS_COLORS = {"cancer": "#b03a63", "non-cancer": "#5b7fb0"}
STAGE_COLORS = ("#9aa5b1", "#5b7fb0", "#2f9e6f")
_LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), legend_title_text="", height=340)


def _labels(values) -> list[str]:
    """Category values (sheet names, views, ...) as text Plotly shows literally."""
    return [plain_label(v) for v in values]


def plot_match_funnel(stages: pd.DataFrame) -> go.Figure:
    """Rows -> keys matched -> images on disk, one funnel per sheet.

    Args:
        stages: columns ``sheet``, ``stage``, ``count`` (see ``balance.sheet_rows_df``).
    """
    sheets = list(dict.fromkeys(stages["sheet"]))
    fig = make_subplots(
        rows=1,
        cols=len(sheets),
        subplot_titles=_labels(sheets),
        specs=[[{"type": "funnel"}] * len(sheets)],
    )
    for i, sheet in enumerate(sheets, 1):
        part = stages[stages["sheet"] == sheet]
        fig.add_trace(
            go.Funnel(
                y=_labels(part["stage"]),
                x=part["count"],
                textinfo="value+percent initial",
                marker=dict(color=list(STAGE_COLORS)),
                name=plain_label(sheet),
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
                x=_labels(part[x] if x else part["class"]),
                y=part[y],
                name=plain_label(cls),
                marker_color=CLASS_COLORS[cls],
                text=part[y],
                textposition="outside",
            )
        )
    fig.update_layout(
        barmode="group", title=plain_label(title), yaxis_title=plain_label(y), **_LAYOUT
    )
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


def plot_training_curves(
    history: pd.DataFrame, epochs: int | None = None, best_epoch: int | None = None
) -> go.Figure:
    """Loss, ROC-AUC, PR-AUC and recall per epoch, training and validation.

    Args:
        history: one row per epoch with ``epoch`` and Keras-style columns (``loss``,
            ``val_loss``, ``roc_auc``, ``val_roc_auc``, ...).
        epochs: planned epochs, to fix the x axis while a run is going.
        best_epoch: the epoch whose weights are kept, marked on every chart.
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
    if best_epoch:
        for i in range(len(_CURVES)):
            row, col = divmod(i, 2)
            # one "kept" label, on the first chart (an annotation without text reads "new text")
            label = dict(annotation_text="kept", annotation_position="top") if i == 0 else {}
            fig.add_vline(
                x=best_epoch, line=dict(color="#b03a63", dash="dash", width=1),
                row=row + 1, col=col + 1, exclude_empty_subplots=False, **label,
            )  # fmt: skip
    if epochs:
        fig.update_xaxes(range=[0.5, epochs + 0.5], dtick=max(1, epochs // 10))
    fig.update_layout(margin=dict(l=10, r=10, t=40, b=10), height=480, legend_title_text="")
    return fig


# --- Threshold explorer --------------------------------------------------------------------

_OPERATING = dict(color="#b03a63", size=12, symbol="circle", line=dict(color="white", width=2))


def plot_confusion_matrix(m: Metrics) -> go.Figure:
    """2 x 2 heatmap of counts with the percentage of each true class, from a metrics dict."""
    counts = [[m.tn, m.fp], [m.fn, m.tp]]
    totals = [m.tn + m.fp, m.fn + m.tp]
    text = [
        [f"{c}<br>{c / t:.0%} of row" if t else f"{c}" for c in row]
        for row, t in zip(counts, totals)
    ]
    names = [f"true {config.CLASS_NAMES[0]}", f"true {config.CLASS_NAMES[1]}"]
    fig = go.Figure(go.Heatmap(
        z=[[c / t if t else 0 for c in row] for row, t in zip(counts, totals)],
        x=[f"called {config.CLASS_NAMES[0]}", f"called {config.CLASS_NAMES[1]}"], y=names,
        text=text, texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=1, showscale=False,
    ))  # fmt: skip
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=f"Confusion matrix at threshold {m.threshold:.3f}", **_LAYOUT)
    return fig


def plot_roc(fpr, tpr, auc: float, point: Metrics) -> go.Figure:
    """ROC curve with the operating point (1 - specificity, sensitivity) marked."""
    fig = go.Figure(
        go.Scatter(
            x=fpr, y=tpr, mode="lines", name=f"ROC (AUC {auc:.3f})", line=dict(color="#5b7fb0")
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="chance", line=dict(color="#c0c0c0", dash="dot")
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[1 - point.specificity],
            y=[point.sensitivity],
            mode="markers",
            name="operating point",
            marker=_OPERATING,
        )
    )
    fig.update_layout(
        title="ROC curve", xaxis_title="1 - specificity", yaxis_title="sensitivity", **_LAYOUT
    )
    return fig


def plot_pr(recall, precision, auc: float, prevalence: float, point: Metrics) -> go.Figure:
    """Precision-recall curve with the operating point and the prevalence baseline."""
    fig = go.Figure(
        go.Scatter(
            x=recall,
            y=precision,
            mode="lines",
            name=f"PR (AP {auc:.3f})",
            line=dict(color="#5b7fb0"),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[prevalence, prevalence],
            mode="lines",
            name="prevalence",
            line=dict(color="#c0c0c0", dash="dot"),
        )
    )
    ppv = point.precision
    if ppv == ppv:  # not NaN: something is flagged
        fig.add_trace(
            go.Scatter(
                x=[point.sensitivity],
                y=[ppv],
                mode="markers",
                name="operating point",
                marker=_OPERATING,
            )
        )
    fig.update_layout(
        title="Precision-recall curve",
        xaxis_title="recall (sensitivity)",
        yaxis_title="precision (PPV)",
        **_LAYOUT,
    )
    return fig


def plot_metrics_vs_threshold(curves: pd.DataFrame, threshold: float) -> go.Figure:
    """Sensitivity, specificity, PPV, NPV and F1 against the threshold, current one marked."""
    fig = go.Figure()
    colors = {
        "sensitivity": "#b03a63",
        "specificity": "#5b7fb0",
        "ppv": "#e0a030",
        "npv": "#2f9e6f",
        "f1": "#7a5cb0",
    }
    for col, color in colors.items():
        fig.add_trace(
            go.Scatter(
                x=curves["threshold"],
                y=curves[col],
                mode="lines",
                name=col,
                line=dict(color=color, shape="hv"),
            )
        )
    fig.add_vline(x=threshold, line=dict(color="#333", dash="dash"))
    fig.update_layout(
        title="Metrics against the threshold",
        xaxis_title="threshold",
        yaxis_range=[0, 1.02],
        **_LAYOUT,
    )
    return fig


def plot_probability_histogram(labels, probabilities, threshold: float) -> go.Figure:
    """Histograms of predicted probability per true class, threshold marked."""
    fig = go.Figure()
    labels = pd.Series(labels).to_numpy()
    probabilities = pd.Series(probabilities).to_numpy()
    for value, name in ((0, config.CLASS_NAMES[0]), (1, config.CLASS_NAMES[1])):
        fig.add_trace(
            go.Histogram(
                x=probabilities[labels == value],
                name=name,
                opacity=0.65,
                xbins=dict(start=0, end=1, size=0.025),
                marker_color=CLASS_COLORS[name],
            )
        )
    fig.add_vline(x=threshold, line=dict(color="#333", dash="dash"))
    fig.update_layout(
        barmode="overlay",
        title="Predicted probability per true class",
        xaxis_title="probability of cancer",
        yaxis_title="count",
        **_LAYOUT,
    )
    return fig


def plot_calibration(calibration: pd.DataFrame, brier: float) -> go.Figure:
    """Reliability diagram: fraction of cancers against mean predicted probability per bin."""
    fig = go.Figure(
        go.Scatter(
            x=calibration["mean_predicted"],
            y=calibration["fraction_positive"],
            mode="lines+markers",
            name="model",
            line=dict(color="#5b7fb0"),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="perfect", line=dict(color="#c0c0c0", dash="dot")
        )
    )
    fig.update_layout(
        title=f"Calibration (Brier score {brier:.3f})",
        xaxis_title="mean predicted probability",
        yaxis_title="fraction with cancer",
        **_LAYOUT,
    )
    return fig


def plot_probability_gauge(probability: float, threshold: float) -> go.Figure:
    """A gauge of the probability of cancer with the decision threshold marked."""
    color = CLASS_COLORS["cancer"] if probability >= threshold else CLASS_COLORS["non-cancer"]
    fig = go.Figure(go.Indicator(
        mode="gauge+number", value=probability * 100, number={"suffix": "%", "valueformat": ".1f"},
        title={"text": "probability of cancer"},
        gauge={"axis": {"range": [0, 100]}, "bar": {"color": color},
               "threshold": {"line": {"color": "#333", "width": 3}, "value": threshold * 100}},
    ))  # fmt: skip
    fig.update_layout(margin=dict(l=40, r=40, t=50, b=10), height=240)
    return fig


_RUN_COLORS = ("#5b7fb0", "#b03a63", "#2f9e6f", "#e0a030", "#7a5cb0", "#333333")


def plot_compare_roc(runs) -> go.Figure:
    """Every run's ROC curve on one chart, each run's saved threshold marked.

    Args:
        runs: :class:`~bcp_core.evaluation.compare.RunScores` (``Comparison.runs``).
    """
    fig = go.Figure()
    for i, run in enumerate(runs):
        r, color = run.result, _RUN_COLORS[i % len(_RUN_COLORS)]
        name = plain_label(f"{run.name} (AUC {r.roc_auc:.3f})")
        fig.add_trace(
            go.Scatter(x=r.roc_fpr, y=r.roc_tpr, mode="lines", name=name, line=dict(color=color))
        )
        fig.add_trace(
            go.Scatter(
                x=[1 - run.at.specificity], y=[run.at.sensitivity], mode="markers",
                marker=dict(_OPERATING, color=color), showlegend=False,
                name=plain_label(f"{run.name} at {run.threshold:.3f}"),
            )
        )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="chance", line=dict(color="#c0c0c0", dash="dot")
        )
    )
    fig.update_layout(
        title="ROC curves", xaxis_title="1 - specificity", yaxis_title="sensitivity", **_LAYOUT
    )
    return fig


def plot_compare_pr(runs) -> go.Figure:
    """Every run's precision-recall curve on one chart, with the prevalence baseline."""
    fig = go.Figure()
    for i, run in enumerate(runs):
        r, color = run.result, _RUN_COLORS[i % len(_RUN_COLORS)]
        name = plain_label(f"{run.name} (AP {r.pr_auc:.3f})")
        fig.add_trace(
            go.Scatter(
                x=r.pr_recall, y=r.pr_precision, mode="lines", name=name, line=dict(color=color)
            )
        )
    if runs:
        prevalence = runs[0].result.n_positive / max(runs[0].result.n, 1)
        fig.add_trace(
            go.Scatter(
                x=[0, 1], y=[prevalence, prevalence], mode="lines", name="prevalence",
                line=dict(color="#c0c0c0", dash="dot"),
            )
        )  # fmt: skip
    fig.update_layout(
        title="Precision-recall curves",
        xaxis_title="recall (sensitivity)",
        yaxis_title="precision (PPV)",
        **_LAYOUT,
    )
    return fig


#: The per-epoch metrics the Compare page overlays, in its order: history column, chart title.
RUN_CURVES = (
    ("val_roc_auc", "Validation ROC-AUC"),
    ("val_pr_auc", "Validation PR-AUC"),
    ("val_loss", "Validation loss"),
    ("loss", "Training loss"),
)


def plot_run_curves(runs: Sequence[RunCurves], column: str, title: str) -> go.Figure:
    """One per-epoch metric of several runs: a line per run, each run's kept epoch marked.

    Args:
        runs: the runs, in the comparison's order (a run keeps its colour of
            :func:`plot_compare_roc`); a run whose history lacks ``column`` is left out.
        column: the history column, e.g. ``val_pr_auc`` (see :data:`RUN_CURVES`).
        title: the chart's title.
    """
    fig = go.Figure()
    for i, run in enumerate(runs):
        if not run.has(column):
            continue
        h, color, name = run.history, _RUN_COLORS[i % len(_RUN_COLORS)], plain_label(run.name)
        fig.add_trace(
            go.Scatter(
                x=h["epoch"], y=h[column], mode="lines+markers", name=name, legendgroup=name,
                line=dict(color=color), marker=dict(size=5),
            )
        )  # fmt: skip
        kept = h[h["epoch"] == run.best_epoch]
        if not kept.empty:
            fig.add_trace(
                go.Scatter(
                    x=kept["epoch"], y=kept[column], mode="markers", legendgroup=name,
                    marker=dict(_OPERATING, color=color, symbol="diamond"), showlegend=False,
                    name=plain_label(f"{run.name}: epoch {run.best_epoch} kept"),
                )
            )  # fmt: skip
    fig.update_layout(title=plain_label(title), xaxis_title="epoch", **_LAYOUT)
    return fig
