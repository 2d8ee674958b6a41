"""Page 5's sections: the test-time passes, the example buttons, the workbook values a model
takes; the results: what the data root knows of a file, whether the model saw it, how far the
passes agree, and the batch table as a person reads it (thumbnails), with its CSV; and the
reader's mark on a prediction."""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from bcp_core import access
from bcp_core.access import Action
from bcp_core.data.attributes import known_views
from bcp_core.errors import UserError
from bcp_core.imaging.decode import read_gray
from bcp_core.inference.feedback import MARKS, MAX_NOTE_CHARS, record
from bcp_core.inference.inputs import read_metadata_csv
from bcp_core.inference.results import Prediction, results_df
from bcp_core.model.bundle import Bundle
from bcp_core.output_safety import plain_markdown
from dashboard.auth import allowed, denied, identity
from dashboard.shared import load_match, masking, show_error
from dashboard.widgets import csv_download

#: Page 5's test-time passes, and the bundle they were set for.
KEY_PASSES, KEY_PASSES_FOR = "pred_passes", "pred_passes_bundle"
#: How page 5 names the split a file was seen in (``Prediction.seen_in``).
SEEN = {"train": "training split", "val": "validation split"}


def with_workbook_views(results: list[Prediction], files: list[tuple[str, bytes]]):
    """The results with the workbook's view and laterality filled in where the file itself is
    one of the data root's (same name and bytes) and the header or name did not say."""
    try:
        manifest = load_match().manifest
    except UserError:  # no readable data root: the results stand as they are
        return results
    out = []
    for result, known in zip(results, known_views(files, manifest), strict=True):
        view = result.view or known.get("view", "")
        laterality = result.laterality or known.get("laterality", "")
        out.append(replace(result, view=view, laterality=laterality))
    return out


def seen_note(result: Prediction) -> None:
    """Under page 5's decision: whether the model saw this very file while it was trained."""
    if result.seen_in == "train":
        st.warning(
            "This file is one the model trained on (the same bytes as a film of its training "
            "split): its probability says nothing about how the model does on new films.",
            icon=":material/school:",
        )
    elif result.seen_in == "val":
        st.info(
            "This file is in the model's validation split: the model did not train on it, but "
            "it helped choose the kept epoch and the threshold.",
            icon=":material/fact_check:",
        )


def show_batch(table: pd.DataFrame) -> None:
    """The results of several files: thumbnails, probability bars, whole-number decisions, the
    threshold to 4 decimals, each error in full, the split the model saw a file in; then the CSV
    (without the thumbnails)."""
    table = table.assign(seen_in=table["seen_in"].map(SEEN).fillna(""))
    # Whether the model saw the file belongs beside its result, before the wide error column.
    table = table[
        [*(c for c in table.columns if c not in ("seen_in", "error")), "seen_in", "error"]
    ]
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
            "seen_in": st.column_config.TextColumn("model saw it in"),
        },
    )
    csv_download(
        "Download results (CSV)", table.drop(columns="image"), "predictions.csv", "pred_csv"
    )


def test_time_passes(default: int, bundle_key: str) -> int:
    """Page 5's choice of test-time passes (bcp_core.imaging.tta), starting at ``default``:
    the bundle's, those its threshold was chosen with. Choosing another bundle (``bundle_key``)
    starts it again at that bundle's, so one model's choice never carries over to another."""
    if st.session_state.get(KEY_PASSES_FOR) != bundle_key:
        st.session_state[KEY_PASSES] = int(default)
        st.session_state[KEY_PASSES_FOR] = bundle_key
    return int(
        st.select_slider(
            "Test-time passes",
            options=sorted({1, 2, 4, 8, int(default)}),
            key=KEY_PASSES,
            help="Score each image this many times on slightly changed copies (flipped "
            "up-down, shifted, zoomed) and report the mean probability with the range the "
            "passes spanned; a decision is called uncertain when that range crosses the "
            "threshold. Each pass costs one more model call. It starts at the passes the "
            "model's threshold was chosen with.",
        )
    )


def example_buttons(bundle: Bundle) -> None:
    """Page 5: one button per class for a validation image of the bundle; the chosen file's
    path goes to ``st.session_state["pred_example"]``."""
    examples = bundle.val_predictions.sort_values("file").groupby("label").head(1)
    cols = st.columns(max(len(examples), 1) + 1)
    cols[0].caption("Or try a validation image the model never trained on:")
    for col, row in zip(cols[1:], examples.itertuples()):
        truth = "cancer" if row.label else "no cancer"
        name = plain_markdown(Path(str(row.file)).name)  # in the help: one name may be in both
        if Path(str(row.file)).is_file() and col.button(
            f"Example: {truth}",
            key=f"pred_example_{row.label}",
            help=f"{name}, a validation image labelled {truth} in the workbooks.",
        ):
            st.session_state["pred_example"] = row.file


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


def results_table(results: list[Prediction], passes: int) -> pd.DataFrame:
    """Page 5's batch results as shown and downloaded: the range and "uncertain" with passes."""
    table = results_df(results)
    if passes == 1:
        return table.drop(columns=["probability_low", "probability_high", "passes"])
    table["uncertain"] = [r.uncertain for r in results]
    return table


def png_data_url(image: np.ndarray) -> str:
    """A ``data:`` URL of a uint8 image (for image columns in tables)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def small_preview(gray: np.ndarray, max_side: int = 96) -> np.ndarray:
    """A uint8 thumbnail of a float grey image in [0, 1]."""
    img = Image.fromarray((np.clip(gray, 0, 1) * 255).astype(np.uint8))
    img.thumbnail((max_side, max_side))
    return np.asarray(img)


def preview_url(data: bytes, max_pixels: int, max_side: int = 96) -> str | None:
    """A ``data:`` URL thumbnail of an uploaded image, or None when it cannot be read (or
    declares more than ``max_pixels`` pixels, the upload limit)."""
    try:
        gray = read_gray(data, min_size=(max_side, max_side), max_upload_pixels=max_pixels)
    except UserError:
        return None
    return png_data_url(small_preview(gray, max_side))


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


#: Readers' marks per person, across sessions (a plain object: no client can clear it).
MARK_LIMIT = access.RateLimit(access.MARKS_PER_WINDOW, access.MARK_WINDOW_S)


def feedback_form(bundle: Bundle, name: str, data: bytes, probability: float, cut: float) -> None:
    """Page 5: the reader marks this prediction agree or disagree, with an optional note.

    The mark goes to the bundle's ``feedback.csv`` (:mod:`bcp_core.inference.feedback`): the
    file name only when this reader sees patient IDs, else the image's hash alone.
    """
    if not allowed(Action.FEEDBACK):
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
    if not allowed(Action.FEEDBACK):
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
