"""Page 5: upload one image or many and get the probability of cancer, a decision, a heatmap."""

import hashlib
from pathlib import Path

import streamlit as st

from bcp_core import settings
from bcp_core.access import Action
from bcp_core.errors import UserError
from bcp_core.inference.explain import overlay_heatmap
from bcp_core.inference.predict import predict_files, predict_one
from bcp_core.inference.results import breast_results_df
from bcp_core.inference.shown import ShownCache, ShownPrediction
from bcp_core.output_safety import plain_markdown
from bcp_core.plots import plot_probability_gauge
from dashboard.auth import require
from dashboard.shared import current_bundle, shared_threshold, show_error, upload_pixel_limit
from dashboard.views.predict import (
    example_buttons,
    feedback_form,
    metadata_inputs,
    preview_url,
    results_table,
    seen_note,
    show_batch,
    test_time_passes,
    uncertainty_note,
    with_workbook_views,
)

require(Action.VIEW, "Prediction needs the viewer role.")
st.title("Prediction")
st.warning(
    "Research tool, not a medical device: never use it to decide about a patient's care.",
    icon=":material/health_and_safety:",
)
bundle = current_bundle()
if bundle is None:
    st.info("No model bundle yet: train one on the Training page.", icon=":material/info:")
    st.stop()
threshold, where = shared_threshold(bundle)
st.caption(
    f"Model {plain_markdown(bundle.path.name)} ({plain_markdown(bundle.meta.model_name)}, input "
    f"{bundle.spec.height} x {bundle.spec.width}); decision threshold **{threshold:.4f}**, "
    f"{where}."
)


@st.cache_resource
def shown_cache(max_bytes: int) -> ShownCache:
    """What the page shows of recent files, shared by all sessions, within a memory limit."""
    return ShownCache(max_bytes)


def predict_cached(bundle_key: str, name: str, data: bytes, cut: float, passes: int, row, pixels):
    def make() -> ShownPrediction:
        with st.spinner("Predicting..."):
            found = predict_one(
                bundle, data, name, threshold=cut, passes=passes, metadata=row,
                max_upload_pixels=pixels,
            )  # fmt: skip
            return ShownPrediction.of(found)

    key = (bundle_key, name, hashlib.sha256(data).hexdigest(), cut, passes, repr(row), pixels)
    return shown_cache(settings.prediction_cache_bytes()).get_or_make(key, make)


@st.cache_data(max_entries=8, show_spinner="Predicting...")
def predict_many_cached(bundle_key: str, files: tuple, cut: float, passes: int, values, pixels):
    # Cached so that choosing which heatmap to show does not predict every file again.
    return predict_files(
        bundle, files, threshold=cut, passes=passes, metadata=values, max_upload_pixels=pixels
    )


bundle_key = f"{bundle.path}:{bundle.meta.saved}"
passes = test_time_passes(bundle.meta.passes, bundle_key)
uploads = st.file_uploader(
    "Mammograms (JPG, PNG, TIFF, DICOM)",
    accept_multiple_files=True,
    key="pred_upload",  # any file: the server says in a sentence why one is not an image
)
example_buttons(bundle)  # validation images, for a first try without files of one's own

if len(uploads or []) > settings.max_upload_files():
    st.error(
        f"{len(uploads)} files chosen: at most {settings.max_upload_files()} are predicted at "
        "once. Remove some and predict the rest as another batch.",
        icon=":material/block:",
    )
    st.stop()
files = [(u.name, u.getvalue()) for u in uploads or []]
if not files and st.session_state.get("pred_example"):
    example = Path(st.session_state["pred_example"])
    files = [(example.name, example.read_bytes())]
values = metadata_inputs(bundle, [name for name, _ in files])  # None: an image-only model
if not files:
    st.stop()
pixels = upload_pixel_limit()  # BCP_MAX_UPLOAD_PIXELS, read only when there are files

if len(files) > 1:
    results = predict_many_cached(bundle_key, tuple(files), threshold, passes, values, pixels)
    results = with_workbook_views(results, files)
    table = results_table(results, passes)
    table.insert(0, "image", [preview_url(data, pixels) for _, data in files])
    show_batch(table)
    breasts = breast_results_df(results)
    if len(breasts) == 3:
        st.subheader("Per breast (mean of its views) and per woman (max over breasts)")
        st.dataframe(breasts, hide_index=True, key="pred_breasts")
    readable = [n for (n, _), r in zip(files, results) if r.ok]
    name = st.selectbox("Show the heatmap of", readable, key="pred_pick") if readable else None
    files = [f for f in files if f[0] == name]
    if not files:
        st.stop()

name, data = files[0]
try:
    row = values and values[name]
    shown = predict_cached(bundle_key, name, data, threshold, passes, row, pixels)
except UserError as exc:
    show_error(exc)
    st.stop()
left, mid, right = st.columns([1, 1, 1])
with left:
    (result,) = with_workbook_views([shown.prediction], [(name, data)])
    st.plotly_chart(plot_probability_gauge(result.probability, threshold), key="pred_gauge")
    decision = "**Cancer suspected**" if result.label else "**No cancer flagged**"
    st.markdown(f"{decision} at threshold {threshold:.4f} (probability {result.probability:.4f}).")
    uncertainty_note(result)
    seen_note(result)
    known = (("view", result.view), ("laterality", result.laterality))
    if any(value for _, value in known):
        st.caption(" · ".join(f"{what}: {plain_markdown(v)}" for what, v in known if v))
    alpha = st.slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="pred_alpha")
mid.image(shown.image, caption=plain_markdown(name))
right.image(
    overlay_heatmap(shown.image / 255.0, shown.heatmap / 255.0, alpha=alpha),
    caption="Grad-CAM: where the model looked (scaled to this image's strongest response, "
    "so it shows hot spots even when nothing is flagged)",
)
feedback_form(bundle, name, data, result.probability, threshold)
