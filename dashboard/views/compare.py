"""Page 6's runs by their names, and their training curves overlaid: one chart per metric, a
line per run, each run's kept epoch marked."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from bcp_core.errors import UserError
from bcp_core.evaluation.compare import RunCurves
from bcp_core.inference.bundles_compared import training_curves
from bcp_core.model.bundle import list_bundles_df
from bcp_core.plots import RUN_CURVES, plot_run_curves
from dashboard.shared import bundle_version, bundles_dir, show_error


def run_choices(paths: list[str]) -> dict[str, str]:
    """How each bundle is offered for comparing: its folder's name, the run's name after it
    when it has one, and "no better than chance" when its validation says so (shown as plain
    text by the multiselect)."""
    runs = list_bundles_df(bundles_dir()).set_index("path")
    out = {}
    for path in paths:
        known = runs.loc[path] if path in runs.index else None
        parts = [Path(path).name]
        if known is not None and known["name"]:
            parts.append(str(known["name"]))
        if known is not None and known["vs_chance"] == "no better than chance":
            parts.append("no better than chance")
        out[path] = " · ".join(parts)
    return out


@st.cache_data(max_entries=8, show_spinner=False)
def _curves(chosen: tuple[str, ...], versions: tuple[float, ...]) -> list[RunCurves]:
    # ``versions`` is part of the cache key only: it changes when a bundle is written again.
    return training_curves(list(chosen))


def curves_section(chosen: list[str]) -> None:
    """The chosen runs' per-epoch metrics overlaid (those any of their histories holds)."""
    st.subheader("Training curves")
    try:
        runs = _curves(tuple(chosen), tuple(bundle_version(p) for p in chosen))
    except UserError as exc:
        show_error(exc)
        return
    drawn = [(column, title) for column, title in RUN_CURVES if any(r.has(column) for r in runs)]
    if not drawn:
        st.caption("The chosen bundles hold no per-epoch history.")
        return
    st.caption(
        "Each run epoch by epoch, named by its name or else its bundle; a diamond marks the "
        "epoch whose weights its bundle keeps."
    )
    columns = st.columns(2)
    for i, (column, title) in enumerate(drawn):
        figure = plot_run_curves(runs, column, title)
        columns[i % 2].plotly_chart(figure, key=f"cmp_curve_{column}")
