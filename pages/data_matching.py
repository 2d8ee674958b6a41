"""Page 1: how the workbooks were joined, what matched, and why every other row did not."""

import streamlit as st

from bcp_core.access import Action
from bcp_core.data.balance import sheet_rows_df
from bcp_core.data.matching import reason_counts_df
from bcp_core.output_safety import plain_markdown
from bcp_core.plots import plot_match_funnel
from dashboard.auth import require
from dashboard.shared import data_root_label, load_match, shown
from dashboard.widgets import csv_download

require(Action.VIEW, "Data matching needs the viewer role.")
st.title("Data matching")
result = load_match()
s = result.stats
st.caption(
    f"{plain_markdown(data_root_label())}, read from the {result.source}. Cancer rows are "
    "joined to the validation workbook on UniqueKey = "
    "InputFileName-StudyDate-StudyTime-PatientID.x."
)

cols = st.columns(6)
cols[0].metric("Cancer rows", s.cancer_rows, help="Rows in the sheet 'Cancer'.")
cols[1].metric(
    "Keys matched",
    s.cancer_key_matched,
    delta=f"{s.cancer_rows - s.cancer_key_matched} unmatched",
    delta_color="off",
    delta_arrow="off",
    help="Cancer rows whose UniqueKey has exactly one row in the validation workbook.",
)
cols[2].metric("Cancer images", s.cancer_images_found, help="Matched rows with an image on disk.")
cols[3].metric("Non-Cancer rows", s.non_cancer_rows, help="Rows in the sheet 'Non-Cancer'.")
cols[4].metric("Non-cancer images", s.non_cancer_images_found, help="Rows with an image on disk.")
cols[5].metric(
    "Validation rows",
    s.validation_rows,
    delta=f"{s.validation_matched} matched",
    delta_color="off",
    delta_arrow="off",
)

st.plotly_chart(plot_match_funnel(sheet_rows_df(s)), key="funnel")

left, right = st.columns(2)
with left:
    st.subheader("Normalisations the join needed")
    st.write(
        f"Joined on the keys exactly as written, **{s.cancer_key_matched_raw}** of "
        f"{s.cancer_rows} cancer rows would have matched; after normalising, "
        f"**{s.cancer_key_matched}** did."
    )
    st.dataframe(result.fixes, hide_index=True, key="fixes")
with right:
    st.subheader("Why rows did not match")
    st.dataframe(reason_counts_df(result.unmatched), hide_index=True, key="reasons")
    for note in result.notes:
        st.info(plain_markdown(note))

st.subheader(f"Unmatched rows ({len(result.unmatched)})")
unmatched = shown(result.unmatched)
st.dataframe(unmatched, hide_index=True, key="unmatched")

manifest = shown(result.manifest)
d1, d2 = st.columns(2)
with d1:
    csv_download("Download manifest (CSV)", manifest, "manifest.csv", "download_manifest")
with d2:
    csv_download("Download unmatched rows (CSV)", unmatched, "unmatched.csv", "download_unmatched")
st.caption(
    f"{s.images_in_manifest} usable images from {s.patients} patients; "
    f"{s.unreferenced_image_files} image files on disk are not referenced by a usable row."
)
