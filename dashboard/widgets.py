"""Small Streamlit building blocks shared by pages (no computation beyond presentation)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from bcp_core import access, settings
from bcp_core.access import Action
from bcp_core.config import DEFAULT_TTA_PASSES, method_label
from bcp_core.data.attributes import image_values, workbook_columns
from bcp_core.data.datasource import data_root_signature
from bcp_core.data.roots import allowed_roots, hide_root, resolve_data_root
from bcp_core.errors import UserError
from bcp_core.evaluation.result import EvaluationResult
from bcp_core.evaluation.subgroups import subgroup_performance
from bcp_core.imaging.decode import read_gray
from bcp_core.inference.feedback import MARKS, MAX_NOTE_CHARS, read_marks, record, summarise
from bcp_core.inference.predict import Prediction, read_metadata_csv, results_df
from bcp_core.model.bundle import Bundle, bundle_card, record_subgroups
from bcp_core.model.resources import local_gpu_count
from bcp_core.output_safety import neutralised_df, plain_markdown
from bcp_core.runs import TrainRequest, read_training_data
from dashboard.auth import audit, can, denied, identity
from dashboard.shared import bundle_writable, data_root, load_match, masking, show_error


@st.cache_data(max_entries=512, show_spinner=False)
def thumbnail(path: str, max_side: int = 200) -> np.ndarray | None:
    """A small uint8 preview of an image file, or None when it cannot be read."""
    try:
        gray = read_gray(path, min_size=(max_side, max_side))
    except UserError:
        return None
    img = Image.fromarray((gray * 255).astype(np.uint8))
    img.thumbnail((max_side, max_side))
    return np.asarray(img)


def gallery(df: pd.DataFrame, *, columns: int = 6, limit: int = 18, caption: str = "") -> None:
    """Thumbnails of the ``file`` column with probability captions."""
    if df.empty:
        st.caption("None at this threshold.")
        return
    shown = df.head(limit)
    cols = st.columns(columns)
    for i, row in enumerate(shown.itertuples()):
        image = thumbnail(str(row.file))
        name = plain_markdown(Path(row.file).name)
        with cols[i % columns]:
            if image is None:
                st.caption(f"{name}: unreadable")
            else:
                st.image(image, caption=f"{name} · p={row.probability:.3f}")
    if len(df) > limit:
        st.caption(f"{caption}{len(df) - limit} more not shown.")


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


def recommendation_params() -> dict:
    """Targets and costs of the recommended thresholds, in an expander."""
    with st.expander("Targets and costs"):
        c = st.columns(5)
        return dict(
            sensitivity_target=c[0].number_input(
                "Sensitivity at least", 0.5, 1.0, 0.9, 0.01, key="thr_sens_target"
            ),
            specificity_target=c[1].number_input(
                "Specificity at least", 0.5, 1.0, 0.9, 0.01, key="thr_spec_target"
            ),
            cost_fn=c[2].number_input(
                "Cost of a missed cancer", 0.1, 1000.0, 10.0, key="thr_cost_fn"
            ),
            cost_fp=c[3].number_input("Cost of a false alarm", 0.1, 1000.0, 1.0, key="thr_cost_fp"),
            beta=c[4].number_input("F-beta's beta", 0.1, 10.0, 2.0, key="thr_beta"),
        )


def recommendation_rows(recs: pd.DataFrame, on_apply: Callable[[float, str], None]) -> None:
    """The recommended thresholds, one row each with an Apply button."""
    head = st.columns([3, 1.2, 1.2, 1.2, 4, 1])
    for col, title in zip(head, ("rule", "threshold", "sensitivity", "specificity", "how", "")):
        col.markdown(f"**{title}**")
    for i, rec in enumerate(recs.itertuples()):
        cols = st.columns([3, 1.2, 1.2, 1.2, 4, 1])
        cols[0].write(method_label(rec.name) + ("" if rec.met else " (target not reached)"))
        cols[1].write(f"{rec.threshold:.4f}")
        cols[2].write(_pct(rec.sensitivity))
        cols[3].write(_pct(rec.specificity))
        cols[4].caption(rec.description)
        cols[5].button(
            "Apply",
            key=f"apply_rec_{i}",
            on_click=on_apply,
            args=(float(rec.threshold), str(rec.name)),
        )


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{value:.1%}"


def metric_with_interval(
    col, label: str, value: float, interval: tuple | None, help: str = "", *, auc: bool = False
):
    """A metric card with its 95% interval: a proportion as a percentage, an AUC as a number
    (0.861), the way every page and table writes it."""
    shown = (lambda v: f"{v:.3f}") if auc else (lambda v: f"{v:.1%}")
    text = "n/a" if value != value else shown(value)
    detail = None
    if interval and interval[0] == interval[0]:
        low, high = interval
        detail = f"95% CI {low:.2f}-{high:.2f}" if auc else f"95% CI {low:.0%}-{high:.0%}"
    col.metric(label, text, delta=detail, delta_color="off", delta_arrow="off", help=help or None)


def png_data_url(image: np.ndarray) -> str:
    """A ``data:`` URL of a uint8 image (for image columns in tables)."""
    import base64
    import io

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def small_preview(gray: np.ndarray, max_side: int = 96) -> np.ndarray:
    """A uint8 thumbnail of a float grey image in [0, 1]."""
    img = Image.fromarray((np.clip(gray, 0, 1) * 255).astype(np.uint8))
    img.thumbnail((max_side, max_side))
    return np.asarray(img)


def preview_url(data: bytes, max_side: int = 96) -> str | None:
    """A ``data:`` URL thumbnail of an uploaded image, or None when it cannot be read."""
    try:
        gray = read_gray(data, min_size=(max_side, max_side))
    except UserError:
        return None
    return png_data_url(small_preview(gray, max_side))


@st.cache_data(max_entries=16, show_spinner=False)
def _card_text(path: str, version: str, _bundle: Bundle, _result: EvaluationResult | None) -> str:
    return bundle_card(_bundle, _result)


def model_card(bundle: Bundle, result: EvaluationResult | None = None) -> None:
    """The bundle's model card in an expander, made from its files (never read from
    ``MODEL_CARD.md``, and nothing written: viewers see it for bundles written before cards).
    ``result``: the per-image evaluation of its validation predictions when already computed."""
    version = f"{bundle.meta.saved} {bundle.meta.threshold.to_json()}"
    with st.expander("Model card"):
        st.markdown(_card_text(str(bundle.path), version, bundle, result))


#: Readers' marks per person, across sessions (a plain object: no client can clear it).
MARK_LIMIT = access.RateLimit(access.MARKS_PER_WINDOW, access.MARK_WINDOW_S)


def feedback_form(bundle: Bundle, name: str, data: bytes, probability: float, cut: float) -> None:
    """Page 5: the reader marks this prediction agree or disagree, with an optional note.

    The mark goes to the bundle's ``feedback.csv`` (:mod:`bcp_core.inference.feedback`): the
    file name only when this reader sees patient IDs, else the image's hash alone.
    """
    if not can(Action.FEEDBACK):
        if identity().mode == access.MODE_DEMO:
            st.caption("Readings are recorded by signed-in readers, not in the demo.")
        return
    with st.form("pred_feedback", clear_on_submit=True):
        mark = st.radio(
            "Your reading of this image",
            list(MARKS),
            index=None,  # nothing pre-selected: the reader says what they see
            format_func=lambda key: MARKS[key],
            horizontal=True,
            key="pred_mark",
        )
        note = st.text_input("Note (optional)", max_chars=MAX_NOTE_CHARS, key="pred_note")
        sent = st.form_submit_button("Record my reading")
    if not sent:
        return
    if mark is None:
        show_error("Choose your reading of this image first.")
        return
    if not can(Action.FEEDBACK):
        denied(Action.FEEDBACK)
        return
    if not MARK_LIMIT.allow(identity().user):
        show_error(
            f"You have recorded {access.MARKS_PER_WINDOW} readings in the last "
            f"{access.MARK_WINDOW_S // 60} minutes, the most this server takes; try again later."
        )
        return
    try:
        record(
            bundle.path,
            who=identity().user or "anonymous",
            file=name,
            image_sha256=hashlib.sha256(data).hexdigest(),
            probability=probability,
            threshold=cut,
            mark=str(mark),
            note=str(note or ""),
            keep_name=not masking(),
        )
    except UserError as exc:
        show_error(exc)
        return
    st.success(f"Recorded: {MARKS[str(mark)]}.", icon=":material/check:")


def feedback_line(bundle: Bundle) -> None:
    """Page 4: how many readers' marks the bundle has and how many agree, in one line."""
    try:
        summary = summarise(read_marks(bundle.path))
    except UserError as exc:
        show_error(exc)
        return
    if not summary.n:
        st.caption("Readers' marks (page 5): none yet for this bundle.")
        return
    st.caption(
        f"Readers' marks (page 5): {summary.n}, of which {summary.agree} agree "
        f"({summary.agreement_rate:.0%}); {summary.disagree_cancer} say it is cancer, "
        f"{summary.disagree_not_cancer} that it is not (`python -m bcp_core feedback`)."
    )


@st.cache_data(max_entries=8, show_spinner=False)
def _workbook_columns(root: str, signature: tuple, source: str) -> list[str]:
    return workbook_columns(root, source)


@st.cache_data(max_entries=16, show_spinner="Reading the column from the workbooks...")
def _column_cells(root: str, signature: tuple, bundle: str, saved: str, column: str, _match, _f):
    """The column's cells for the bundle's validation images (cached per bundle version)."""
    return image_values(root, _match, _f, column)


def subgroup_section(bundle: Bundle, threshold: float) -> None:
    """Page 4: sensitivity, specificity and ROC-AUC of the validation images per group of a
    workbook column (:mod:`bcp_core.evaluation.subgroups`). Aggregated figures only: a group
    is named after a workbook value only when 3 patients share it, so every role sees it.
    """
    st.subheader("Performance per subgroup")
    match, root = load_match(), resolve_data_root(data_root(), allowed_roots())
    signature = data_root_signature(root)
    files = bundle.val_predictions["file"].astype(str).tolist()
    try:  # a workbook gone or changed since the match: one sentence, the page above stays
        column = st.selectbox(
            "Group the validation images by a workbook column",
            _workbook_columns(str(root), signature, match.source),
            index=None,
            key="thr_subgroup_col",
        )
        if not column:
            return
        got = _column_cells(
            str(root), signature, str(bundle.path), bundle.meta.saved, column, match, files
        )
        table = subgroup_performance(
            bundle.val_predictions, got["value"], column, threshold, found=got["found"]
        )
        st.dataframe(table.display_df(), hide_index=True, key="thr_subgroups")
        st.caption(plain_markdown(table.describe()))
        csv_download("Download the table (CSV)", table.export_df(), "subgroups.csv", "thr_sub_csv")
        if can(Action.SAVE_THRESHOLD) and bundle_writable(bundle.path):
            if st.button("Add this table to the model card", key="thr_sub_card"):
                record_subgroups(bundle.path, table.to_json(), by=identity().user)
                audit("card_subgroups", bundle=Path(bundle.path).name, what=str(column))
                st.success(
                    f"Added to the model card of {plain_markdown(Path(bundle.path).name)}.",
                    icon=":material/check:",
                )
    except UserError as exc:
        show_error(hide_root(str(exc), root, allowed_roots()))


# --- Page 3: where a run trains ---------------------------------------------------------------

DISTRIBUTE_LABELS = {
    "none": "this process",
    "mirrored": "every GPU of this server",
    "multiworker": "the Ray cluster",
}


def distribute_choice() -> str:
    """Page 3's "Train on" choice, shown only where a run can be spread: more than one GPU
    here (mirrored), or a Ray cluster named by BCP_RAY_ADDRESS with Ray installed."""
    ways = ["none"]
    if local_gpu_count() > 1:
        ways.append("mirrored")
    if settings.ray_address() and importlib.util.find_spec("ray") is not None:
        ways.append("multiworker")
    if len(ways) == 1:
        return "none"
    return str(
        st.radio(
            "Train on",
            ways,
            format_func=DISTRIBUTE_LABELS.get,
            horizontal=True,
            key="tr_distribute",
            help="Every GPU of this server (mirrored), or the workers of the Ray cluster set by "
            "BCP_RAY_ADDRESS (multiworker). The batch size stays the global batch, split "
            "evenly between the GPUs or workers; the learning rate is not scaled.",
        )
    )


# --- Page 5: test-time passes ------------------------------------------------------------------


def test_time_passes() -> int:
    """Page 5's choice of test-time passes (bcp_core.imaging.tta)."""
    return int(
        st.select_slider(
            "Test-time passes",
            options=[1, 2, 4, 8],
            value=DEFAULT_TTA_PASSES,
            key="pred_passes",
            help="Score each image this many times on slightly changed copies (flipped "
            "up-down, shifted, zoomed) and report the mean probability with the range the "
            "passes spanned; a decision is called uncertain when that range crosses the "
            "threshold. Each pass costs one more model call.",
        )
    )


def results_table(results: list[Prediction], passes: int) -> pd.DataFrame:
    """Page 5's batch results as shown and downloaded: the range and "uncertain" with passes."""
    table = results_df(results)
    if passes == 1:
        return table.drop(columns=["probability_low", "probability_high", "passes"])
    table["uncertain"] = [r.uncertain for r in results]
    return table


def example_buttons(bundle: Bundle) -> None:
    """Page 5: one button per class for a validation image of the bundle; the chosen file's
    path goes to ``st.session_state["pred_example"]``."""
    examples = bundle.val_predictions.sort_values("file").groupby("label").head(1)
    cols = st.columns(max(len(examples), 1) + 1)
    cols[0].caption("Or try a validation image the model never trained on:")
    for col, row in zip(cols[1:], examples.itertuples()):
        name = plain_markdown(Path(str(row.file)).name)
        if Path(str(row.file)).is_file() and col.button(
            f"Example: {'cancer' if row.label else 'no cancer'} ({name})",
            key=f"pred_example_{row.label}",
        ):
            st.session_state["pred_example"] = row.file


def uncertainty_note(result: Prediction) -> None:
    """The passes' range under page 5's decision, and a warning when they disagree."""
    if result.passes > 1:
        st.caption(
            f"Mean of {result.passes} passes; they ranged from {result.probability_low:.4f} to "
            f"{result.probability_high:.4f}."
        )
    if result.uncertain:
        st.warning(
            "Uncertain: some passes fall on each side of the threshold, so small changes to "
            "the image change the decision. Read this image with extra care.",
            icon=":material/help:",
        )


# --- Page 3: workbook columns as model inputs --------------------------------------------------


def metadata_columns_choice() -> list[str]:
    """Page 3's optional workbook columns for a model on image plus columns (inside the form)."""
    match, root = load_match(), resolve_data_root(data_root(), allowed_roots())
    try:
        offered = _workbook_columns(str(root), data_root_signature(root), match.source)
    except UserError:
        return []
    return list(
        st.multiselect(
            "Workbook columns as inputs (optional)",
            offered,
            key="tr_metadata",
            help="The model also takes these columns of each image's workbook row (age, "
            "density, device...). Columns that give away the label (a finding, a diagnosis, "
            "a BI-RADS assessment, or any that alone separates the classes with ROC-AUC >= "
            "0.95 on the training split) are refused with the reason. Prediction then asks "
            "for them.",
        )
    )


def chosen_root() -> Path:
    """The sidebar's data root, resolved inside the allowed folders."""
    return resolve_data_root(data_root(), allowed_roots())


def training_inputs(request: TrainRequest) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Page 3: the run's manifest (from the page's cached match) and workbook values, with
    server paths hidden from any refusal."""
    try:
        return read_training_data(request, load_match())
    except UserError as exc:
        raise UserError(hide_root(str(exc), request.data_root, allowed_roots())) from None


# --- Page 5: the workbook values a model takes -------------------------------------------------


def metadata_inputs(bundle: Bundle, names: list[str]) -> dict[str, dict] | None:
    """Page 5: the workbook values of a model that takes them, per file name: the fields'
    values, or a file's row of an uploaded CSV (a ``file`` column and one per column).
    None for an image-only model."""
    encoder = bundle.metadata_encoder
    if encoder is None:
        return None
    st.markdown("**This model also takes workbook values.** Leave a field empty when unknown.")
    cols = st.columns(min(4, len(encoder.columns)))
    row: dict[str, object] = {}
    for i, column in enumerate(encoder.columns):
        where, label, key = cols[i % len(cols)], plain_markdown(column.name), f"pred_meta_{i}"
        if column.kind == "numeric":
            row[column.name] = where.number_input(label, value=None, key=key)
        else:
            row[column.name] = where.selectbox(label, column.categories, index=None, key=key)
    upload = st.file_uploader("Or, for a batch: a CSV of values", type=["csv"], key="pred_meta_csv")
    table: dict[str, dict] = {}
    if upload is not None:
        try:
            table = read_metadata_csv(io.BytesIO(upload.getvalue()))
        except UserError as exc:
            show_error(exc)
    return {name: table.get(name, row) for name in names}
