"""Page 3's sections: in the form, the workbook columns a model may take and where a run trains;
the run's inputs read with the leak guard; the live run: what it is doing now, Stop, the
per-epoch charts, and when it ends, the hand-off to the threshold explorer and prediction, with a
word when it is no better than chance; and the editor of a past run's name and note."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import streamlit as st

from bcp_core import settings
from bcp_core.access import Action, can_stop
from bcp_core.config import (
    BATCH_NORM_MODES,
    DEFAULT_MODEL,
    MAX_MEMBERS,
    MODEL_SPECS,
    WEIGHTS_DEFAULT,
    ModelSpec,
    TrainConfig,
    recipe_of,
)
from bcp_core.data.roots import hide_root
from bcp_core.errors import UserError
from bcp_core.evaluation.intervals import better_than_chance
from bcp_core.model.bundle import (
    MAX_REASON_CHARS,
    approve_for_viewers,
    list_bundles_df,
    read_bundle_meta,
    resolve_bundle_path,
    update_label,
)
from bcp_core.model.meta import MAX_NAME_CHARS, MAX_NOTE_CHARS
from bcp_core.model.resources import local_gpu_count, weight_files
from bcp_core.model.warm_start import start_settings
from bcp_core.output_safety import plain_markdown
from bcp_core.plots import plot_training_curves
from bcp_core.runs import TrainRequest, read_training_data
from dashboard.auth import allowed, audit, denied, identity
from dashboard.jobs import JobRegistry, TrainingJob
from dashboard.shared import (
    KEY_BUNDLE,
    allowed_roots,
    bundle_version,
    bundle_writable,
    bundles_dir,
    fixed_bundle_path,
    load_match,
    session_token,
    show_error,
    use_bundle,
    validation_check,
    viewer_refusal,
    workbook_column_names,
)

#: Page 3's form fields that a model's recipe fills: widget key -> recipe setting.
RECIPE_KEYS = {
    "tr_h": "height",
    "tr_w": "width",
    "tr_epochs": "epochs",
    "tr_patience": "patience",
    "tr_lr": "learning_rate",
    "tr_finetune": "fine_tune",
    "tr_frozen": "frozen_stages",
    "tr_bn": "batch_norm",
    "tr_members": "members",
}


def load_recipe(only_missing: bool = False) -> None:
    """Fill the training form with the chosen model's recipe (``only_missing``: only the
    fields not set yet, as on the page's first run)."""
    model = st.session_state.get("tr_model", DEFAULT_MODEL)
    recipe = recipe_of(model if model in MODEL_SPECS else DEFAULT_MODEL)
    values = {**asdict(recipe), "height": recipe.image_size[0], "width": recipe.image_size[1]}
    for key, name in RECIPE_KEYS.items():
        if not only_missing or key not in st.session_state:
            st.session_state[key] = values[name]


def backbone_choices(spec: ModelSpec, left, right) -> tuple[str, bool, int, str]:
    """In the form, for a pretrained backbone only: its weights (in ``left``), fine-tuning (in
    ``right``), batch norm and, for EfficientNet-Lite, frozen stages. Returns (weights choice,
    fine_tune, frozen_stages, batch_norm); a network trained from scratch has none of them and
    gets its recipe's."""
    recipe = spec.recipe
    if not spec.transfer:
        return WEIGHTS_DEFAULT, recipe.fine_tune, recipe.frozen_stages, recipe.batch_norm
    weights = left.selectbox(
        "Backbone weights",
        [WEIGHTS_DEFAULT, "none", "imagenet", *weight_files(settings.weights_dir())],
        key="tr_weights",
        help="default: the model's own (ImageNet for EfficientNet-Lite, installed with the "
        "product; none for the others); imagenet for ResNet50, VGG19, InceptionV3 and "
        "EfficientNetB0 downloads (needs internet); or a file of the server's weights folder "
        "(BCP_WEIGHTS_DIR).",
    )
    fine_tune = right.checkbox("Fine-tune backbone", key="tr_finetune")
    c1, c2, _, _ = st.columns(4)
    batch_norm = c1.selectbox(
        "Backbone batch norm", BATCH_NORM_MODES, key="tr_bn",
        help="When fine-tuning: train lets the batch-norm statistics learn from the films "
        "(measured better on real films); frozen keeps ImageNet's.",
    )  # fmt: skip
    frozen_stages = 0
    if spec.family == "packaged":
        frozen_stages = c2.number_input(
            "Frozen stages", 0, 7, key="tr_frozen",
            help="When fine-tuning: the stem and the first N of the 7 stages keep their "
            "ImageNet weights (faster epochs).",
        )  # fmt: skip
    return str(weights), bool(fine_tune), int(frozen_stages), str(batch_norm)


#: Page 3's "Start from" choice that keeps the weights chosen above.
NO_START = ""


def start_choice(model: str) -> str:
    """In the form: a trained model of this server's bundles folder to go on from (one run of
    ``model`` on images alone, not still training), or :data:`NO_START`. Returns the bundle's
    folder name (:func:`set_start` resolves it inside the bundles folder)."""
    runs = list_bundles_df(bundles_dir())
    fits = runs[(runs["model"] == model) & (runs["runs"] == 1) & (runs["status"] != "running")]
    labels = {NO_START: "the backbone weights above"}
    for row in fits.itertuples():
        auc = f", validation ROC-AUC {row.roc_auc:.3f}" if pd.notna(row.roc_auc) else ""
        labels[str(row.bundle)] = f"{row.bundle}" + (f" ({row.name})" if row.name else "") + auc
    chosen = st.selectbox(
        "Start from", list(labels), format_func=labels.__getitem__, key="tr_start_from",
        help="Go on training a model trained before (for instance on other mammograms), every "
        "weight of it, on this data: useful when your own films hold few cancers. The run "
        "takes that model's input size and head; it gets its own split, epochs and threshold.",
    )  # fmt: skip
    return str(chosen or NO_START)


def set_start(cfg: TrainConfig, start: str) -> None:
    """Make ``cfg`` go on from the bundle ``start`` of the bundles folder (a name offered by
    :func:`start_choice`, never a typed path), with the input size and head its model was
    built with (and its contrast step); nothing for :data:`NO_START`.

    Raises:
        UserError: a name that is not a bundle of the folder, or one that cannot be gone on
            from (:mod:`bcp_core.model.warm_start`).
    """
    if start == NO_START:
        return
    cfg.start_from = str(resolve_bundle_path(bundles_dir(), start))
    built = start_settings(cfg.start_from)
    cfg.image_size, cfg.head = built["image_size"], built["head"]
    cfg.contrast = built["contrast"]


def split_and_members(left, right) -> tuple[int | None, int]:
    """In the form: the optional split seed (in ``left``) and how many runs to average (in
    ``right``; the recipe's by default). Returns (split seed or None, runs)."""
    split_seed = left.number_input(
        "Split seed (optional)", 0, 2**31 - 1, None, key="tr_split_seed", placeholder="the seed",
        help="Seeds the patient split alone: runs with other seeds and this split seed are "
        "validated on the same patients, so they can be compared and averaged (below).",
    )  # fmt: skip
    members = right.number_input(
        "Runs to average", 1, MAX_MEMBERS, key="tr_members",
        help="Trains this many runs one after another (seeds: the seed, the seed + 1, ...) on "
        "one patient split and keeps their mean probability as one model: steadier than one "
        "run, at that many times the training time. Image-only models.",
    )  # fmt: skip
    return (None if split_seed is None else int(split_seed)), int(members)


#: The bundle chosen in the name-and-note editor, and the outcome of its last save.
KEY_LABEL_PICK, KEY_LABEL_SAVED = "tr_label_pick", "tr_label_saved"


def metadata_columns_choice() -> list[str]:
    """Page 3's optional workbook columns for a model on image plus columns (inside the form)."""
    try:
        offered = workbook_column_names()
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


def training_inputs(request: TrainRequest) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Page 3: the run's manifest (from the page's cached match) and workbook values, with
    server paths hidden from any refusal."""
    try:
        return read_training_data(request, load_match())
    except UserError as exc:
        raise UserError(hide_root(str(exc), request.data_root, allowed_roots())) from None


def hand_off(path: str, roc_auc: float) -> None:
    """The end of a run: how good it is, and where to go with it."""
    try:
        (low, high), caution = validation_check(path, bundle_version(path))
    except UserError as exc:
        show_error(exc)
        return
    if not better_than_chance((low, high)):
        st.warning(
            f"No better than chance: the validation ROC-AUC {roc_auc:.3f} has a 95% interval "
            f"of {low:.3f}-{high:.3f}, which includes 0.5. Do not use this model to decide; "
            "train longer, on more data, or with another model.",
            icon=":material/warning:",
        )
    if caution:
        st.warning(caution, icon=":material/warning:")
    if not allowed(Action.CHOOSE_BUNDLE):
        return
    chosen = st.session_state.get(KEY_BUNDLE) == path
    cols = st.columns([1.4, 2, 2, 3])
    if cols[0].button(
        "Using this model" if chosen else "Use this model", key="tr_use", type="primary",
        disabled=chosen,
        help="Makes it this session's model for the threshold explorer and prediction.",
    ):  # fmt: skip
        use_bundle(path)  # the sidebar takes it on the whole page's rerun
    if chosen:
        cols[1].page_link("pages/threshold.py", label="Tune its threshold", icon=":material/tune:")
        cols[2].page_link(
            "pages/predict.py", label="Predict with it", icon=":material/image_search:"
        )


def best_epoch(history) -> int | None:
    """The epoch the run keeps so far: the best validation PR-AUC (the runner's rule)."""
    if "val_pr_auc" not in history or history["val_pr_auc"].isna().all():
        return None
    return int(history.loc[history["val_pr_auc"].idxmax(), "epoch"])


def live_progress(jobs: JobRegistry) -> None:
    """The current run, polled every second while one runs."""
    running = bool(jobs.current and jobs.current.running)
    st.fragment(run_every=1.0 if running else None)(_live)(jobs)


def _live(jobs: JobRegistry) -> None:
    job = jobs.current
    if job is None:
        earlier = len(list_bundles_df(bundles_dir()))
        where = {0: "", 1: " The bundle already there (the demo model, say) is under Past runs."}
        st.info(
            "No run since this server started: choose the settings and press Start."
            + where.get(earlier, f" The {earlier} bundles already there are under Past runs.")
        )
        return
    mine = "" if job.owner == session_token() else " (started by another session)"
    st.subheader(f"Run {plain_markdown(job.out_dir.name)}{mine}")
    st.progress(min(job.epochs_done() / job.total_epochs, 1.0), text=job.progress_text())
    me = identity()
    if job.running and st.button(
        "Stop", key="tr_stop", disabled=not can_stop(me.role, me.user, job.user),
        help="Ends at the next batch; the best bundle so far is kept (of a run averaging "
        "several, the runs finished before it are averaged). Only whoever started the run, or "
        "an admin, can stop it.",
    ):  # fmt: skip
        if can_stop(identity().role, identity().user, job.user):
            job.stop_event.set()
            audit("train_stop", run=job.out_dir.name)
    _finished_members(job)
    # the run training now, or until its first epoch ends the one before it
    shown = job.member if not job.history_df(job.member).empty else max(job.kept, default=1)
    history = job.history_df(shown)
    if not history.empty:
        best: int | None = None
        if job.result and not job.result.members:
            best = job.result.best_epoch
        else:
            best = job.kept.get(shown) or best_epoch(history)
        if job.members > 1:
            seed = job.member_seeds.get(shown)
            st.caption(f"Run {shown} of {job.members} (seed {seed}), epoch by epoch:")
        st.plotly_chart(plot_training_curves(history, job.cfg.epochs, best), key="tr_curves")
    if job.status == "failed":
        show_error(job.message)
    elif not job.running and job.result and job.result.metrics:
        r, metrics = job.result, job.result.metrics
        if r.members:
            what = f"the mean of {len(r.members)} runs"
        else:
            what = f"best epoch {r.best_epoch} of {r.epochs_run}"
        st.success(
            f"{job.status.replace('_', ' ')}: {what}; "
            f"validation ROC-AUC {metrics.roc_auc:.3f}, PR-AUC {metrics.pr_auc:.3f}; "
            f"bundle {plain_markdown(job.out_dir.name)}.",
            icon=":material/check:",
        )
        hand_off(str(job.out_dir), metrics.roc_auc)
        if st.session_state.get("tr_seen_done") != job.out_dir.name:
            st.session_state["tr_seen_done"] = job.out_dir.name
            st.rerun()  # once, to stop polling and refresh the table of runs


def _finished_members(job: TrainingJob) -> None:
    """A run averaging several: one line per run it has finished (its kept epoch and its own
    validation ROC-AUC there)."""
    if job.members == 1:
        return
    for member, kept in sorted(job.kept.items()):
        history = job.history_df(member)
        at = history[history["epoch"] == kept] if "epoch" in history else history
        auc = at["val_roc_auc"].iloc[0] if "val_roc_auc" in at and len(at) else None
        auc_text = f"{auc:.3f}" if isinstance(auc, float) and auc == auc else "n/a"
        st.caption(
            f"Run {member} of {job.members} (seed {job.member_seeds.get(member)}): "
            f"kept epoch {kept}, validation ROC-AUC {auc_text}."
        )


def label_keys(bundle: str) -> tuple[str, str]:
    """The keys of the name and note boxes of ``bundle`` (each bundle keeps its own)."""
    return f"tr_label_name:{bundle}", f"tr_label_note:{bundle}"


def nameable_bundles(jobs: JobRegistry) -> list[str]:
    """The bundles whose name and note may be changed here: not the demo bundle (read-only in
    the dashboard), nor the bundle of the run going on (its next epoch kept is written over
    them)."""
    runs = list_bundles_df(bundles_dir())
    job = jobs.current
    busy = job.out_dir.resolve() if job is not None and job.running else None
    return [
        bundle
        for bundle, path in zip(runs["bundle"], runs["path"])
        if bundle_writable(path) and Path(path).resolve() != busy
    ]


def label_editor(jobs: JobRegistry) -> None:
    """Analysts give a past run a name and a note, kept in its ``bundle.json`` (saved by the
    form's callback, before the page above is drawn again, so the runs table shows them)."""
    if not allowed(Action.TRAIN):
        return
    bundles = nameable_bundles(jobs)
    if not bundles:
        return
    with st.expander("Name and note"):
        bundle = st.selectbox(
            "Bundle", bundles, index=None, placeholder="Choose the run to name",
            key=KEY_LABEL_PICK,
        )  # fmt: skip
        if bundle is not None:
            _label_form(jobs, bundle)
        saved = st.session_state.pop(KEY_LABEL_SAVED, None)
        if saved is not None:
            ok, message = saved
            if ok:
                st.success(plain_markdown(message), icon=":material/check:")
            else:
                show_error(message)


def _label_form(jobs: JobRegistry, bundle: str) -> None:
    try:
        label = read_bundle_meta(resolve_bundle_path(bundles_dir(), bundle)).label
    except UserError as exc:
        show_error(exc)
        return
    name_key, note_key = label_keys(bundle)
    with st.form("tr_label_form"):
        st.text_input(
            "Name", label.name, max_chars=MAX_NAME_CHARS, key=name_key,
            help="A short title for the run, shown in the runs table and on Compare.",
        )  # fmt: skip
        st.text_area(
            "Note", label.note, max_chars=MAX_NOTE_CHARS, key=note_key,
            help="What the run was for, and what it showed. Shown as plain text.",
        )  # fmt: skip
        st.form_submit_button(
            "Save name and note", key="tr_label_save", on_click=_save_label, args=(jobs, bundle)
        )


def _save_label(jobs: JobRegistry, bundle: str) -> None:
    """The form's callback: the guard again, then the atomic rewrite of ``bundle.json``."""
    if not allowed(Action.TRAIN):
        denied(Action.TRAIN, bundle=bundle)
        outcome = (False, "Naming a run needs the analyst role.")
    elif bundle not in nameable_bundles(jobs):
        outcome = (False, f"{bundle} cannot be named now: it is training, read-only or gone.")
    else:
        name_key, note_key = label_keys(bundle)
        name, note = (str(st.session_state.get(key) or "") for key in (name_key, note_key))
        try:
            update_label(resolve_bundle_path(bundles_dir(), bundle), name, note)
        except UserError as exc:
            outcome = (False, str(exc))
        else:
            audit("bundle_label", bundle=bundle)
            outcome = (True, f"Saved the name and note of {bundle}.")
    st.session_state[KEY_LABEL_SAVED] = outcome


def viewers_model() -> None:
    """Page 3, for analysts: the model viewers see, and the explicit, audited approval that lets
    them see one that is no better than chance on its validation patients."""
    path = fixed_bundle_path()
    if path is None or not allowed(Action.TRAIN):
        return
    refusal = viewer_refusal(path)
    approval = read_bundle_meta(path).viewer_approval
    name = Path(path).name
    with st.expander(f"The model viewers see: {name}", expanded=bool(refusal)):
        if approval:
            st.caption(
                f"No better than chance, approved for viewers by {plain_markdown(approval['by'])}"
                f" on {plain_markdown(approval['time'])}: {plain_markdown(approval['reason'])}"
            )
        if not refusal:
            if not approval:
                st.caption("Better than chance on its validation patients: viewers see it.")
            return
        st.warning(plain_markdown(refusal), icon=":material/block:")
        with st.form("tr_approve"):
            reason = st.text_input(
                "Why viewers may use it anyway (kept in the bundle and the audit log)",
                max_chars=MAX_REASON_CHARS, key="tr_approve_reason",
            )  # fmt: skip
            sure = st.checkbox(
                "I understand that this model ranks images no better than chance", key="tr_sure"
            )
            go = st.form_submit_button("Let viewers use it")
        if go:
            _approve(path, str(reason or ""), bool(sure))


def _approve(path: str, reason: str, sure: bool) -> None:
    if not allowed(Action.TRAIN):
        denied(Action.TRAIN, bundle=Path(path).name)
        show_error("Approving a model for viewers needs the analyst role.")
        return
    if not sure:
        show_error("Tick the box to say you understand what viewers will see.")
        return
    try:
        approve_for_viewers(path, identity().user or "local user", reason)
    except UserError as exc:
        show_error(exc)
        return
    audit("viewer_override", bundle=Path(path).name, reason=reason)
    st.success(f"Viewers now see {plain_markdown(Path(path).name)}.", icon=":material/check:")
