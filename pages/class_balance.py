"""Page 2: how imbalanced the usable images are, and what accuracy would hide."""

import streamlit as st

from bcp_core.access import Action
from bcp_core.data.balance import balance_summary, counts_df, images_per_patient_df
from bcp_core.data.split import split_patients
from bcp_core.plots import plot_class_counts, plot_images_per_patient
from dashboard.auth import require
from dashboard.shared import load_match

require(Action.VIEW, "Class balance needs the viewer role.")
st.title("Class balance")
result = load_match()
manifest = result.manifest
summary = balance_summary(manifest)

cols = st.columns(4)
cols[0].metric("Cancer images", summary.cancer_images, help="Usable images (matched and on disk).")
cols[1].metric("Non-cancer images", summary.non_cancer_images)
cols[2].metric(
    "Imbalance", f"1 : {summary.imbalance_ratio:.1f}", help="Non-cancer images per cancer image."
)
cols[3].metric(
    "Accuracy of always 'no cancer'",
    f"{summary.always_negative_accuracy:.1%}",
    help="A model that never finds a cancer scores this accuracy.",
)
st.warning(
    f"A model that answers 'no cancer' for every image is **{summary.always_negative_accuracy:.1%} "
    f"accurate** here and finds **0 of {summary.cancer_images}** cancers. Judge models by "
    "sensitivity and specificity, ROC-AUC and PR-AUC, never by accuracy alone.",
    icon=":material/warning:",
)

measure = st.radio(
    "Count",
    ["images", "patients"],
    horizontal=True,
    key="balance_measure",
    help="Patients: women with at least one usable image of that class.",
)
left, right = st.columns(2)
left.plotly_chart(
    plot_class_counts(counts_df(manifest), None, measure, "Per class"), key="by_class"
)
right.plotly_chart(
    plot_class_counts(counts_df(manifest, "sheet"), "sheet", measure, "Per sheet"), key="by_sheet"
)
left.plotly_chart(
    plot_class_counts(counts_df(manifest, "view"), "view", measure, "Per view"), key="by_view"
)
right.plotly_chart(
    plot_class_counts(counts_df(manifest, "laterality"), "laterality", measure, "Per laterality"),
    key="by_laterality",
)

st.subheader("Patient-grouped split")
c1, c2 = st.columns(2)
val_fraction = c1.slider("Validation share of patients", 0.1, 0.5, 0.2, 0.05, key="balance_val")
seed = c2.number_input("Seed", 0, 2**31 - 1, 42, key="balance_seed")
with_split = manifest.assign(split=split_patients(manifest, val_fraction, seed=int(seed)))
left, right = st.columns(2)
left.plotly_chart(
    plot_class_counts(counts_df(with_split, "split"), "split", measure, "Per split"), key="by_split"
)
right.plotly_chart(plot_images_per_patient(images_per_patient_df(manifest)), key="per_patient")
st.caption(
    "Every woman's images stay on one side of the split, so no patient is in both the "
    "training and the validation data. Training uses the same split function."
)
