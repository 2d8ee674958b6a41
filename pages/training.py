"""Page 3: configure a model, train it in the background, watch every epoch, stop, keep the best;
find past runs and name them."""

import streamlit as st

from bcp_core import settings
from bcp_core.access import Action
from bcp_core.config import (
    IMBALANCE_METHODS,
    MODEL_NAMES,
    MODEL_SPECS,
    TrainConfig,
)
from bcp_core.errors import UserError
from bcp_core.model.bundle import list_bundles_df
from bcp_core.model.meta import MAX_NAME_CHARS, MAX_NOTE_CHARS, RunLabel
from bcp_core.model.resources import weights_setting
from bcp_core.runs import bundle_name
from dashboard.admin import bundle_average, bundle_delete, bundle_export
from dashboard.auth import audit, identity, require
from dashboard.jobs import TrainingJob, registry
from dashboard.shared import bundles_dir, chosen_root, session_token, show_error
from dashboard.views.training import (
    backbone_choices,
    distribute_choice,
    label_editor,
    live_progress,
    load_recipe,
    metadata_columns_choice,
    set_start,
    split_and_members,
    start_choice,
    training_inputs,
    viewers_model,
)

require(Action.TRAIN, "Training needs the analyst role.")
st.title("Training")
jobs = registry()
defaults = TrainConfig()

# Outside the form, so that choosing a model loads its recipe into the form at once.
model = st.selectbox(
    "Model", MODEL_NAMES, MODEL_NAMES.index(defaults.model),
    format_func=lambda name: MODEL_SPECS[name].label, key="tr_model",
    on_change=load_recipe,
)  # fmt: skip
spec = MODEL_SPECS[model]
load_recipe(only_missing=True)
st.caption(
    f"Starts from {model}'s recipe: {spec.recipe.describe()}. Every setting below can be "
    "changed; what a run used is kept in its bundle."
)

with st.form("train_form"):
    c1, c2, c3, c4 = st.columns(4)
    height = c1.number_input("Image height", 32, 4096, step=32, key="tr_h")
    width = c2.number_input("Image width", 32, 4096, step=32, key="tr_w")
    epochs = c3.number_input("Epochs", 1, 500, key="tr_epochs")
    patience = c4.number_input(
        "Patience", 1, 500, key="tr_patience",
        help="Epochs without a better validation PR-AUC that end the run; the best epoch is kept.",
    )  # fmt: skip
    c1, c2, c3, c4 = st.columns(4)
    batch = c1.number_input("Batch size", 1, 512, defaults.batch_size, key="tr_batch")
    lr = c2.select_slider("Learning rate", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], key="tr_lr")
    imbalance = c3.selectbox(
        "Imbalance handling",
        IMBALANCE_METHODS,
        IMBALANCE_METHODS.index(defaults.imbalance),
        key="tr_imbalance",
        help="oversample: every batch about one cancer image in four (default); class_weight: "
        "both classes weigh the same in the loss; focal: focal loss.",
    )
    seed = c4.number_input(
        "Seed", 0, 2**31 - 1, defaults.seed, key="tr_seed",
        help="Seeds the start of the weights, the shuffling, the augmentation and, unless a "
        "split seed is given below, which patients are held out for validation.",
    )  # fmt: skip
    c1, c2, c3, c4 = st.columns(4)
    smoothing = c1.number_input("Label smoothing", 0.0, 0.49, 0.0, 0.05, key="tr_smooth")
    val_fraction = c2.slider("Validation share of patients", 0.05, 0.5, 0.2, 0.05, key="tr_val")
    weights, fine_tune, frozen_stages, batch_norm = backbone_choices(spec, c3, c4)
    c1, c2, c3, c4 = st.columns([1, 2, 1, 1])
    run_name = c1.text_input(
        "Run name (optional)", max_chars=MAX_NAME_CHARS, key="tr_name",
        help="A short title to find the run again; it can be changed later, below.",
    )  # fmt: skip
    run_note = c2.text_input("Note (optional)", max_chars=MAX_NOTE_CHARS, key="tr_note")
    split_seed, members = split_and_members(c3, c4)  # runs on one split, averaged
    start = start_choice(model)  # a trained model to go on from (optional)
    columns = metadata_columns_choice()  # workbook columns beside the image (optional)
    distribute = distribute_choice()  # shown only where a run can be spread
    submitted = st.form_submit_button("Start training", type="primary", key="tr_start")

if submitted:
    cfg = TrainConfig(
        model=model,
        image_size=(int(height), int(width)),
        epochs=int(epochs),
        batch_size=int(batch),
        learning_rate=float(lr),
        imbalance=imbalance,
        label_smoothing=float(smoothing),
        val_fraction=float(val_fraction),
        seed=int(seed),
        split_seed=split_seed,
        fine_tune=fine_tune,
        frozen_stages=frozen_stages,
        batch_norm=batch_norm,
        patience=int(patience),
        metadata_columns=tuple(columns),
        members=members,
    )
    try:
        # a file of the server's weights folder, never a typed path
        cfg.weights = weights_setting(weights, model, settings.weights_dir())
        set_start(cfg, start)  # a bundle of the server's folder, its input size and head
        out = bundles_dir() / bundle_name(cfg)
        job = TrainingJob(
            cfg, out, session_token(), user=identity().user, distribute=distribute,
            label=RunLabel(run_name, run_note),
        )  # fmt: skip
        job.data_root = chosen_root()
        job.request.check()  # settings, memory and the bundle quota, before any data is read
        manifest, job.metadata = training_inputs(job.request)  # leaks refused before any run
        jobs.start(job, manifest)
        audit("train_start", run=out.name, what=cfg.model)
    except UserError as exc:
        show_error(exc)


live_progress(jobs)

st.subheader("Past runs")
wanted = st.text_input(
    "Find runs", key="tr_runs_filter", placeholder="a word of the name, the note or the bundle"
)
runs = list_bundles_df(bundles_dir(), matching=wanted)
# a set width: the grid keeps its widths across reruns, sized to the names it had before
wide = {"bundle": st.column_config.TextColumn("bundle", width="medium")}
st.dataframe(runs.drop(columns="path"), hide_index=True, column_config=wide, key="tr_runs")
if wanted.strip() and runs.empty:
    st.caption("No run matches; clear the box to see them all.")
label_editor(jobs)
viewers_model()
bundle_export()
bundle_average()
bundle_delete()
