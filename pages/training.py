"""Page 3: configure a model, train it in the background, watch every epoch, stop, keep the best."""

import streamlit as st

from bcp_core.access import Action
from bcp_core.config import IMBALANCE_METHODS, MODEL_NAMES, MODEL_SPECS, TrainConfig
from bcp_core.errors import UserError
from bcp_core.model.bundle import list_bundles_df
from bcp_core.model.resources import weight_files, weights_setting
from bcp_core.runs import bundle_name
from dashboard.admin import bundle_delete, bundle_export
from dashboard.auth import audit, identity, require
from dashboard.jobs import TrainingJob, registry
from dashboard.shared import bundles_dir, session_token, show_error
from dashboard.views.training import live_progress
from dashboard.widgets import (
    chosen_root,
    distribute_choice,
    metadata_columns_choice,
    training_inputs,
)

require(Action.TRAIN, "Training needs the analyst role.")
st.title("Training")
jobs = registry()
defaults = TrainConfig()

with st.form("train_form"):
    c1, c2, c3, c4 = st.columns(4)
    model = c1.selectbox(
        "Model", MODEL_NAMES, MODEL_NAMES.index(defaults.model),
        format_func=lambda name: MODEL_SPECS[name].label, key="tr_model",
    )  # fmt: skip
    height = c2.number_input("Image height", 32, 4096, defaults.image_size[0], 32, key="tr_h")
    width = c3.number_input("Image width", 32, 4096, defaults.image_size[1], 32, key="tr_w")
    epochs = c4.number_input("Epochs", 1, 500, defaults.epochs, key="tr_epochs")
    c1, c2, c3, c4 = st.columns(4)
    batch = c1.number_input("Batch size", 1, 512, defaults.batch_size, key="tr_batch")
    lr = c2.select_slider(
        "Learning rate", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], defaults.learning_rate, key="tr_lr"
    )
    imbalance = c3.selectbox(
        "Imbalance handling",
        IMBALANCE_METHODS,
        IMBALANCE_METHODS.index(defaults.imbalance),
        key="tr_imbalance",
        help="oversample: every batch about one cancer image in four (default); class_weight: "
        "both classes weigh the same in the loss; focal: focal loss.",
    )
    seed = c4.number_input("Seed", 0, 2**31 - 1, defaults.seed, key="tr_seed")
    c1, c2, c3, c4 = st.columns(4)
    smoothing = c1.number_input("Label smoothing", 0.0, 0.49, 0.0, 0.05, key="tr_smooth")
    val_fraction = c2.slider("Validation share of patients", 0.05, 0.5, 0.2, 0.05, key="tr_val")
    weights = c3.selectbox(
        "Backbone weights",
        ["default", "none", "imagenet", *weight_files()],
        key="tr_weights",
        help="default: the model's own (ImageNet for EfficientNet-Lite, installed with the "
        "product; none for the others); imagenet for ResNet50, VGG19, InceptionV3 and "
        "EfficientNetB0 downloads (needs internet); or a file of the server's weights folder "
        "(BCP_WEIGHTS_DIR).",
    )
    fine_tune = c4.checkbox("Fine-tune backbone", key="tr_finetune")
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
        fine_tune=fine_tune,
        metadata_columns=tuple(columns),
    )
    try:
        cfg.weights = weights_setting(weights, model)  # a weights-folder file, never a typed path
        out = bundles_dir() / bundle_name(cfg)
        job = TrainingJob(cfg, out, session_token(), user=identity().user, distribute=distribute)
        job.data_root = chosen_root()
        job.request.check()  # settings, memory and the bundle quota, before any data is read
        manifest, job.metadata = training_inputs(job.request)  # leaks refused before any run
        jobs.start(job, manifest)
        audit("train_start", run=out.name, what=cfg.model)
    except UserError as exc:
        show_error(exc)


live_progress(jobs)

st.subheader("Past runs")
runs = list_bundles_df(bundles_dir())
st.dataframe(runs.drop(columns="path"), hide_index=True, key="tr_runs")
bundle_export()
bundle_delete()
