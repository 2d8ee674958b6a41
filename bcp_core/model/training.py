"""The training runner: split, pipelines, model, imbalance handling, validation, bundle.

One call, :func:`train_model`, does a whole run. The UI and the CLI follow it through typed
progress events (:mod:`bcp_core.model.events`) and can stop it through a ``threading.Event``;
the best model so far is written as a bundle after every epoch that improves validation PR-AUC,
so a stopped, crashed or killed run still leaves the best bundle it reached.

The parts are kept apart: :class:`ValidationScorer` scores the validation split after each
epoch, :class:`ImprovementTracker` only says which epoch improved, :func:`make_bundle_meta`
turns (settings, split, validation predictions) into the bundle's metadata, and
:func:`bcp_core.model.bundle.save_bundle` writes it atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from bcp_core.config import TrainConfig
from bcp_core.data.split import patient_overlap, split_patients
from bcp_core.errors import UserError
from bcp_core.evaluation.metrics import metrics_at_threshold, ranking_metrics
from bcp_core.evaluation.result import EvaluationResult
from bcp_core.evaluation.thresholds import choose_threshold
from bcp_core.imaging import tta
from bcp_core.imaging.cache import CacheSettings, PreparedCache
from bcp_core.model import pretrained as packaged
from bcp_core.model.architectures import BACKBONE_LAYER, build_model
from bcp_core.model.bundle import save_bundle
from bcp_core.model.card import card_evaluation
from bcp_core.model.columns import check_leakage, fit_encoder
from bcp_core.model.dataset import ReadFailures, balanced_dataset, class_weights, image_dataset
from bcp_core.model.events import (
    BatchEnded,
    EpochEnded,
    Finished,
    Phase,
    Started,
    TrainingEvent,
)
from bcp_core.model.losses import initial_bias, make_loss
from bcp_core.model.meta import (
    NO_LABEL,
    BundleMeta,
    MemberInfo,
    RunLabel,
    SplitInfo,
    StartSource,
    ThresholdChoice,
    ValidationMetrics,
    now_iso,
)
from bcp_core.model.optimizers import LayerwiseAdam
from bcp_core.model.provenance import split_files_df
from bcp_core.model.resources import TrainingLimits, check_training_resources
from bcp_core.model.strategy import Distribution, fit_custom, global_steps
from bcp_core.model.warm_start import apply_start, with_start_files
from bcp_core.model.weight_average import WeightAverage

EventSink = Callable[[TrainingEvent], None]


@dataclass
class TrainResult:
    """What a run produced (the bundle holds the rest)."""

    bundle: Path | None
    epochs_run: int
    best_epoch: int
    status: str
    metrics: ValidationMetrics | None
    threshold: float
    split: SplitInfo
    read_failures: dict[str, str] = field(default_factory=dict)
    #: A run averaging several (``TrainConfig.members``): its runs (``best_epoch`` is then 0,
    #: ``epochs_run`` their epochs together).
    members: tuple[MemberInfo, ...] = ()
    #: The trained model the run went on from (``TrainConfig.start_from``), else None.
    started_from: StartSource | None = None

    def to_json(self) -> dict:
        """The ``train --json`` object."""
        m = self.metrics
        more: dict[str, Any] = {}
        if self.members:
            more["members"] = [x.to_json() for x in self.members]
        if self.started_from is not None:
            more["started_from"] = self.started_from.to_json()
        return {
            "bundle": str(self.bundle) if self.bundle else None,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch or None,
            "status": self.status,
            "val_roc_auc": m.roc_auc if m else None,
            "val_pr_auc": m.pr_auc if m else None,
            "val_sensitivity": m.sensitivity if m else None,
            "val_specificity": m.specificity if m else None,
            "threshold": self.threshold,
            "train_patients": self.split.train_patients,
            "val_patients": self.split.val_patients,
            "patient_overlap": self.split.patient_overlap,
            "train_images": self.split.train_images,
            "val_images": self.split.val_images,
            "unreadable_images": len(self.read_failures),
            **more,
        }


# --- Callbacks --------------------------------------------------------------------------------


class ValidationScorer(keras.callbacks.Callback):
    """Predicts the validation split after each epoch and adds ``val_*`` metrics to the logs.

    Scoring here (rather than Keras' ``validation_data``) gives the per-image probabilities the
    bundle needs, computes ROC-AUC / PR-AUC exactly with scikit-learn, and skips nothing twice.
    ``probabilities`` and ``indices`` (rows of the validation manifest; unreadable images are
    left out) always hold the latest scoring.
    """

    def __init__(
        self,
        val_ds,
        labels: np.ndarray,
        emit: EventSink | None = None,
        batches: int = 0,
        stop_event: threading.Event | None = None,
    ) -> None:
        super().__init__()
        self.val_ds, self.labels = val_ds, labels
        self.emit, self.batches = emit or (lambda event: None), batches
        self.stop_event = stop_event or threading.Event()
        self.probabilities = np.array([])
        self.indices = np.array([], dtype=int)
        self.epoch = 0
        self.seconds = 0.0  # the last scoring's duration

    def score(self, passes: int = 1) -> None:
        """Predict the validation split with the model's current weights; with ``passes`` > 1
        each image's probability is the mean over that many test-time variants
        (:mod:`bcp_core.imaging.tta`), as prediction computes it."""
        probs, idx = [], []
        began = time.monotonic()
        self.emit(Phase("scoring", self.epoch, 0, self.batches))
        for inputs, index in self.val_ds:
            # one variant of the batch at a time: a call on all of them at once holds
            # ``passes`` times the activations (a Lite0 run at 320 x 256 peaked at 10.2 GB
            # instead of 3.7 GB scoring 4 passes in one call of 64 images)
            scores = np.stack(
                [
                    np.asarray(self.model(batch, training=False)).reshape(-1)
                    for batch in _variant_batches(inputs, passes)
                ],
                axis=1,
            )
            probs.append(scores.mean(axis=1))
            idx.append(index.numpy().astype(int))
            self.emit(Phase("scoring", self.epoch, len(probs), self.batches))
        # float64 so that the CSV round-trips exactly: a threshold equal to a stored
        # probability must classify that image the same way after reloading (>= convention).
        self.probabilities = (np.concatenate(probs) if probs else np.array([])).astype(np.float64)
        self.indices = np.concatenate(idx) if idx else np.array([], dtype=int)
        self.seconds = time.monotonic() - began

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch + 1
        if self.stop_event.is_set():
            return  # stopped: the run ends now, with the best epoch already scored and kept
        self.score()
        y = self.labels[self.indices]
        p = np.clip(self.probabilities, 1e-7, 1 - 1e-7)
        ranks = ranking_metrics(y, p)
        at_half = metrics_at_threshold(y, p, 0.5)
        if logs is not None:
            logs["val_loss"] = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
            logs["val_roc_auc"] = ranks["roc_auc"]
            logs["val_pr_auc"] = ranks["pr_auc"]
            logs["val_recall"] = at_half.sensitivity
            logs["val_precision"] = at_half.precision


class ProgressReporter(keras.callbacks.Callback):
    """Emits :class:`BatchEnded` (throttled) and :class:`EpochEnded` events with an ETA.

    The ETA comes from measured times: an epoch's duration (its steps, its validation scoring
    and, when it improved, the bundle write) times the epochs left, less the time already spent
    in the current one, plus :attr:`tail_s`, the last bundle write (the run ends with one).
    An epoch's duration is the median of the epochs after the first; after the first alone,
    that epoch less the extra time of its first step (which builds the graph); before any, the
    mean step time after the first step over the steps left. Early stopping can end a run
    sooner: the ETA is for the full number of epochs (``bench/bench_eta.py`` measures it).
    """

    def __init__(self, emit: EventSink, epochs: int, steps: int, interval: float = 0.5) -> None:
        super().__init__()
        self.emit, self.epochs, self.steps, self.interval = emit, epochs, steps, interval
        self.start = time.monotonic()
        self._last = 0.0
        self.epoch = 0
        self.epoch_start = self.start
        self.epoch_s: list[float] = []
        self.first_step_end: float | None = None
        self.first_step_excess = 0.0  # the first step's time beyond a typical step's
        self.last_step_end = self.start
        #: Seconds of the last bundle write: the run's end adds one more (set by the runner).
        self.tail_s = 0.0

    def per_epoch_s(self) -> float | None:
        """The expected duration of one more epoch (None before one has ended)."""
        if not self.epoch_s:
            return None
        if len(self.epoch_s) == 1:
            return max(self.epoch_s[0] - self.first_step_excess, 0.0)
        return float(np.median(self.epoch_s[1:]))

    def _eta(self, epoch: int, batch_done: int) -> float:
        now = time.monotonic()
        per_epoch = self.per_epoch_s()
        if per_epoch is not None:
            left = per_epoch * (self.epochs - epoch) - (now - self.epoch_start)
            return max(left, 0.0) + self.tail_s
        if self.first_step_end is None or batch_done < 3:
            return float("nan")
        per_step = (now - self.first_step_end) / (batch_done - 1)
        return per_step * (self.epochs * self.steps - batch_done)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch
        self.epoch_start = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.monotonic()
        if self.first_step_end is None:
            self.first_step_end = now
        self.last_step_end = now
        if now - self._last < self.interval and batch + 1 < self.steps:
            return
        self._last = now
        loss = _num((logs or {}).get("loss"))
        eta = self._eta(self.epoch, self.epoch * self.steps + batch + 1)
        self.emit(BatchEnded(self.epoch + 1, self.epochs, batch + 1, self.steps, loss, eta))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.monotonic()
        if not self.epoch_s and self.first_step_end is not None and self.steps > 1:
            typical = (self.last_step_end - self.first_step_end) / (self.steps - 1)
            self.first_step_excess = max(self.first_step_end - self.epoch_start - typical, 0.0)
        self.epoch_s.append(now - self.epoch_start)  # steps, validation scoring, any write
        per_epoch = self.per_epoch_s() or 0.0
        self.emit(
            EpochEnded(
                epoch=epoch + 1,
                epochs=self.epochs,
                metrics={k: _num(v) for k, v in (logs or {}).items()},
                eta_s=per_epoch * (self.epochs - epoch - 1) + self.tail_s,
                elapsed_s=now - self.start,
            )
        )


class StopOnEvent(keras.callbacks.Callback):
    """Ends training at the next batch once ``event`` is set (the UI's Stop button)."""

    def __init__(self, event: threading.Event) -> None:
        super().__init__()
        self.event = event
        self.stopped = False

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.event.is_set():
            self.stopped = True
            self.model.stop_training = True


class ScoredEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' early stopping, on epochs that were scored: an epoch ended by Stop has no
    validation scores, and Keras would warn on the terminal that its metric is missing."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.monitor in logs:
            super().on_epoch_end(epoch, logs)


class ImprovementTracker(keras.callbacks.Callback):
    """Keeps the history and the best weights by validation PR-AUC; says when an epoch improved.

    ``on_improved(epoch)`` (1-based) is called after each improving epoch; what to do then
    (write the bundle) is the runner's business. Epochs before ``keep_from`` (1-based) are
    kept only until it: that epoch counts as an improvement whatever its score, so the best
    is chosen among it and the later ones.
    """

    def __init__(self, on_improved: Callable[[int], None], keep_from: int = 1) -> None:
        super().__init__()
        self.on_improved = on_improved
        self.keep_from = keep_from
        self.best = -math.inf
        self.best_epoch = 0
        self.best_weights: list | None = None
        self.history: list[dict] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.history.append({"epoch": epoch + 1, **{k: _num(v) for k, v in logs.items()}})
        score = logs.get("val_pr_auc", float("nan"))
        score = -1.0 if score is None or math.isnan(score) else score
        if epoch + 1 == self.keep_from:
            self.best = -math.inf  # the earlier epochs were kept only until now
        if score > self.best:
            self.best, self.best_epoch = score, epoch + 1
            self.best_weights = self.model.get_weights()
            self.on_improved(epoch + 1)


def _num(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


# --- Bundle metadata ---------------------------------------------------------------------------


def data_fingerprint(manifest: pd.DataFrame) -> str:
    """A short hash of which images (relative paths) with which labels were used."""
    rows = sorted(zip(manifest["relpath"].astype(str), manifest["label"].astype(int)))
    return hashlib.sha256(repr(rows).encode("utf-8")).hexdigest()[:16]


def _variant_batches(inputs, passes: int):
    """A validation batch as ``passes`` batches of the same size, the k-th holding test-time
    variant k of each image (:func:`bcp_core.imaging.tta.variant`; the first is the batch as
    it is), with the workbook values of a model that takes them alongside each."""
    if passes == 1:
        yield inputs
        return
    images, values = inputs if isinstance(inputs, tuple) else (inputs, None)
    arr = np.asarray(images)
    for k in range(tta.check_passes(passes)):
        batch = np.stack([tta.variant(x, k) for x in arr])
        yield batch if values is None else (batch, np.asarray(values))


def val_predictions_df(
    val: pd.DataFrame, indices: np.ndarray, probabilities: np.ndarray
) -> pd.DataFrame:
    """The bundle's ``val_predictions.csv`` from scored rows of the validation manifest.

    Returns:
        Columns ``file``, ``patient_id``, ``label``, ``probability``, ``laterality``, ``view``.
    """
    return pd.DataFrame({
        "file": val.loc[indices, "path"].to_numpy(),
        "patient_id": val.loc[indices, "patient_id"].to_numpy(),
        "label": val.loc[indices, "label"].astype(int).to_numpy(),
        # float64, so the file holds every digit and reads back as the values scored here.
        "probability": np.asarray(probabilities, dtype=np.float64),
        "laterality": val.loc[indices, "laterality"].to_numpy(),
        "view": val.loc[indices, "view"].to_numpy(),
    })  # fmt: skip


def make_bundle_meta(
    cfg: TrainConfig,
    split: SplitInfo,
    fingerprint: str,
    predictions: pd.DataFrame,
    best_epoch: int,
    status: str,
    label: RunLabel = NO_LABEL,
    passes: int = 1,
    evaluated: EvaluationResult | None = None,
) -> BundleMeta:
    """The bundle's metadata: the threshold chosen on validation and the metrics there (the
    ``predictions`` scored with ``passes`` test-time passes), the run's name and note
    (``label``), and which packaged pretrained weights the model started from, when it did.
    ``evaluated``: the card's evaluation of ``predictions`` when already made (its ROC-AUC
    interval is kept for "vs chance")."""
    threshold, metrics = scored_on_validation(
        predictions, cfg.threshold_method, best_epoch, evaluated
    )
    meta = BundleMeta(
        model_name=cfg.model,
        preprocessing=cfg.spec,
        threshold=threshold,
        training=cfg.to_dict(),
        split=split,
        data_fingerprint=fingerprint,
        metrics=metrics,
        status=status,
        label=label,
        passes=passes,
    )
    if meta.from_packaged_weights:
        meta = replace(meta, pretrained=packaged.installed_source(cfg.model))
    return meta


def scored_on_validation(
    predictions: pd.DataFrame,
    method: str,
    best_epoch: int | None,
    evaluated: EvaluationResult | None = None,
) -> tuple[ThresholdChoice, ValidationMetrics]:
    """The threshold ``method`` chooses on the validation ``predictions`` (columns ``label``,
    ``probability``) and the metrics there; ``evaluated``: their card evaluation, when made
    (its ROC-AUC interval is kept for "vs chance")."""
    y, p = predictions["label"].to_numpy(), predictions["probability"].to_numpy()
    threshold = choose_threshold(y, p, method)
    ranks = ranking_metrics(y, p)
    if evaluated is None:
        evaluated = card_evaluation(predictions)
    metrics = ValidationMetrics(
        ranks["roc_auc"],
        ranks["pr_auc"],
        best_epoch,
        metrics_at_threshold(y, p, threshold),
        roc_auc_ci=evaluated.roc_auc_ci if evaluated is not None else None,
    )
    return ThresholdChoice(threshold, method, now_iso(), on="validation images"), metrics


# --- The run ---------------------------------------------------------------------------------


def check_writable(folder: Path) -> None:
    """Fail before training, not after the first epoch, when bundles cannot be written.

    Raises:
        UserError: when ``folder`` cannot be created or written to.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise UserError(
            f"Cannot write the bundle to {folder}: {exc.strerror or exc}. Choose a folder you "
            "can write to, or free disk space."
        ) from exc


def plan_split(manifest: pd.DataFrame, cfg: TrainConfig) -> tuple[pd.Series, SplitInfo]:
    """Split by patient and check that both classes are on both sides."""
    if manifest.empty:
        raise UserError("The manifest has no usable images; check the data-matching page.")
    split = split_patients(manifest, cfg.val_fraction, seed=cfg.patient_split_seed)
    counts: dict[str, int] = {}
    for part in ("train", "val"):
        sel = manifest[split == part]
        counts[f"{part}_images"] = len(sel)
        counts[f"{part}_patients"] = int(sel["patient_id"].nunique())
        counts[f"{part}_positives"] = int(sel["label"].sum())
        if sel["label"].nunique() < 2:
            raise UserError(
                f"The {part} split has no {'cancer' if sel['label'].sum() == 0 else 'non-cancer'} "
                "images; more patients of each class are needed (or a larger validation share)."
            )
    info = SplitInfo(
        seed=cfg.patient_split_seed,
        val_fraction=cfg.val_fraction,
        patient_overlap=patient_overlap(manifest, split),
        **counts,
    )
    return split, info


def train_model(
    manifest: pd.DataFrame,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    on_event: EventSink | None = None,
    stop_event: threading.Event | None = None,
    extra_callbacks: Iterable[keras.callbacks.Callback] = (),
    distribution: Distribution | None = None,
    metadata: pd.DataFrame | None = None,
    label: RunLabel = NO_LABEL,
    limits: TrainingLimits | None = None,
    image_cache: CacheSettings | None = None,
) -> TrainResult:
    """Train a model on ``manifest`` and write the best one as a bundle in ``out_dir``, with the
    run's name and note (``label``) from its first write.

    With ``cfg.metadata_columns``, ``metadata`` holds those workbook columns' cells, one row per
    manifest row in order (:func:`bcp_core.data.attributes.metadata_frame`): they are checked
    for leaks of the label and encoded on the training split (:mod:`bcp_core.model.columns`),
    and the model takes them beside the image.

    ``distribution`` (:mod:`bcp_core.model.strategy`) says how this process takes part in a
    distributed run; everything else (split, pipelines, imbalance handling, validation scoring,
    early stopping, threshold, bundle) is the same in every mode. Only the chief writes the
    bundle; every worker scores the whole validation split, so all take the same early-stopping
    decision.

    ``limits`` is what the server lets the run take, which the entry points read from the
    settings (:class:`~bcp_core.model.resources.TrainingLimits`; None: the defaults).

    ``image_cache`` keeps each image's prepared input on disk after its first read, so later
    epochs (and validation scoring) decode nothing (:mod:`bcp_core.imaging.cache`; None: every
    read decodes the file).

    This is one run: ``cfg.members`` is not read (:func:`bcp_core.runs.run_training` trains
    the runs of an averaging run one by one through here, and averages them).

    Raises:
        UserError: for invalid settings or data, a run that needs more memory than the server
            allows or a full bundles folder (:mod:`bcp_core.model.resources`), before anything
            is trained.
    """
    cfg = replace(cfg, members=1).validate()
    dist = distribution or Distribution()
    dist.worker_batch(cfg.batch_size)  # refuses a batch that does not divide between workers
    out_dir = Path(out_dir)
    if dist.is_chief:
        check_training_resources(cfg, out_dir, limits or TrainingLimits())
        check_writable(out_dir.parent)
    emit: EventSink = on_event or (lambda event: None)
    emit(Phase("preparing"))
    split, info = plan_split(manifest, cfg)
    fingerprint = data_fingerprint(manifest)
    # Hashes of the split's files, so prediction can say when a file is one the model saw.
    seen = split_files_df(manifest["path"], split) if dist.is_chief else None
    keras.utils.set_random_seed(cfg.seed)
    failures = ReadFailures()
    cache = PreparedCache(image_cache, cfg.spec) if image_cache is not None else None
    train = manifest[split == "train"]
    val = manifest[split == "val"].reset_index(drop=True)
    encoder, train_values, val_values = _metadata_inputs(cfg, metadata, split, train["label"])
    steps = global_steps(len(train), cfg.batch_size)
    weights = class_weights(train["label"]) if cfg.imbalance == "class_weight" else None
    val_ds = image_dataset(
        val["path"],
        np.arange(len(val)),
        cfg.spec,
        batch_size=cfg.batch_size,
        failures=failures,
        metadata=val_values,
        cache=cache,
    )
    val_ds = val_ds.map(lambda x, i: (x, keras.ops.cast(i, "int32")))
    with dist.scope():
        width = encoder.width if encoder is not None else 0
        model = compile_model(cfg, float(train["label"].mean()), metadata_width=width)
        started = apply_start(model, cfg) if cfg.start_from else None
    if started is not None and seen is not None:
        seen, val_seen = with_start_files(seen, cfg)
        started = replace(started, val_seen=val_seen)
    stop = stop_event or threading.Event()
    scorer = ValidationScorer(
        val_ds, val["label"].astype(int).to_numpy(), emit,
        batches=math.ceil(len(val) / cfg.batch_size), stop_event=stop,
    )  # fmt: skip
    written: list[BundleMeta] = []
    best_preds: list[pd.DataFrame] = []  # the validation predictions of the best epoch

    def write(best_epoch: int, status: str) -> None:
        emit(Phase("writing", best_epoch))
        began = time.monotonic()
        passes = 1
        if status == "running":  # an improving epoch: its predictions are the best so far
            best_preds[:] = [val_predictions_df(val, scorer.indices, scorer.probabilities)]
        elif cfg.tta_passes > 1 and status != "stopped":
            # The finished model, scored as prediction will score it: the threshold is chosen
            # on those scores. A stopped run keeps its one-pass scores (Stop ends it now).
            scorer.score(cfg.tta_passes)
            best_preds[:] = [val_predictions_df(val, scorer.indices, scorer.probabilities)]
            passes = cfg.tta_passes
        preds = best_preds[0]
        evaluated = card_evaluation(preds)  # one bootstrap for bundle.json and the card
        meta = make_bundle_meta(
            cfg, info, fingerprint, preds, best_epoch, status, label, passes, evaluated
        )
        if encoder is not None:
            meta = replace(meta, metadata=encoder.to_json())
        if started is not None:
            meta = replace(meta, started_from=started)
        if dist.mode != "none":
            meta.training["distribute"] = {"mode": dist.mode, "workers": dist.workers}
        if dist.is_chief:
            save_bundle(out_dir, model, meta, pd.DataFrame(tracker.history), preds, seen, evaluated)
        written.append(meta)
        # The run's last write will take about this, and scoring with test-time passes first.
        progress.tail_s = time.monotonic() - began
        if cfg.tta_passes > 1:
            progress.tail_s += scorer.seconds * cfg.tta_passes

    keep_from = cfg.first_kept_epoch
    tracker = ImprovementTracker(lambda epoch: write(epoch, "running"), keep_from)
    stopper = StopOnEvent(stop)
    early = ScoredEarlyStopping(
        monitor="val_pr_auc", mode="max", patience=cfg.patience, start_from_epoch=keep_from - 1
    )
    progress = ProgressReporter(emit, cfg.epochs, steps)
    # The moving average of the weights, if kept, goes first: the callbacks after it see it.
    averaged = [WeightAverage(cfg.weight_ema)] if cfg.weight_ema else []
    callbacks = [
        *averaged,
        scorer,
        tracker,
        progress,
        stopper,
        early,
        *extra_callbacks,
    ]
    emit(Started(epochs=cfg.epochs, steps=steps, split=info, config=cfg.to_dict()))
    train_ds = None
    epochs_run = 0
    for first, end, head_only in fit_phases(cfg):
        if stopper.stopped or model.stop_training:
            break  # stopped, or stopped early, before the phase began
        with dist.scope(), backbone_frozen(model, head_only):
            # Each phase trains other weights (and may decay its rate): compiled for it.
            recompile(model, cfg, steps * (end - first), head_only=head_only)
        with backbone_frozen(model, head_only):
            if dist.custom_loop:

                def worker_data(context):
                    per_replica = context.get_per_replica_batch_size(cfg.batch_size)
                    shard = (context.input_pipeline_id, context.num_input_pipelines)
                    return training_pipeline(
                        train, cfg, failures, batch_size=per_replica, shard=shard,
                        metadata=train_values, cache=cache,
                    )[0]  # fmt: skip

                epochs_run += fit_custom(
                    model,
                    worker_data,
                    distribution=dist,
                    epochs=end,
                    initial_epoch=first,
                    steps=steps,
                    class_weight=weights,
                    callbacks=callbacks,
                )
            else:
                if train_ds is None:
                    train_ds = training_pipeline(
                        train, cfg, failures, metadata=train_values, cache=cache
                    )[0]
                history = model.fit(
                    train_ds,
                    epochs=end,
                    initial_epoch=first,
                    steps_per_epoch=steps,
                    callbacks=callbacks,
                    class_weight=weights,
                    shuffle=False,  # the pipeline shuffles
                    verbose=0,
                )
                epochs_run += len(history.epoch)
    status = (
        "stopped"
        if stopper.stopped
        else ("early_stopped" if epochs_run < cfg.epochs else "completed")
    )
    if tracker.best_weights is not None:
        model.set_weights(tracker.best_weights)
        write(tracker.best_epoch, status)  # with the predictions scored at the best epoch
    final = written[-1] if written else None
    result = TrainResult(
        bundle=out_dir if final else None,
        epochs_run=epochs_run,
        best_epoch=tracker.best_epoch,
        status=status,
        metrics=final.metrics if final else None,
        threshold=final.threshold.value if final else float("nan"),
        split=info,
        read_failures=dict(failures.messages),
        started_from=final.started_from if final else None,
    )
    emit(Finished(status, epochs_run, tracker.best_epoch, str(out_dir) if final else None))
    return result


def training_pipeline(
    train: pd.DataFrame,
    cfg: TrainConfig,
    failures: ReadFailures,
    *,
    batch_size: int | None = None,
    shard: tuple[int, int] = (0, 1),
    metadata: np.ndarray | None = None,
    cache: PreparedCache | None = None,
):
    """Training pipeline (repeating), steps per epoch and class weights for the chosen
    imbalance method (``metadata``: the encoded workbook values of ``train``'s rows;
    ``cache``: prepared images kept on disk, see :func:`image_dataset`).

    ``batch_size`` (default ``cfg.batch_size``) and ``shard`` give one worker's part of a
    distributed run (:mod:`bcp_core.model.strategy`); steps and class weights are always
    those of the whole split at ``cfg.batch_size``.
    """
    paths, labels = train["path"].tolist(), train["label"].astype(int).tolist()
    batch = cfg.batch_size if batch_size is None else batch_size
    steps = global_steps(len(paths), cfg.batch_size)
    common: dict[str, Any] = {
        "batch_size": batch, "seed": cfg.seed, "augment": cfg.augment, "failures": failures,
        "shard": shard, "metadata": metadata, "cache": cache,
    }  # fmt: skip
    if cfg.imbalance == "oversample":
        ds, _ = balanced_dataset(paths, labels, cfg.spec, **common)
        return ds, steps, None
    ds = image_dataset(paths, labels, cfg.spec, training=True, **common)
    weights = class_weights(labels) if cfg.imbalance == "class_weight" else None
    return ds.repeat(), steps, weights


def _metadata_inputs(cfg: TrainConfig, metadata: pd.DataFrame | None, split, train_labels):
    """(encoder, training values, validation values) of a run on image plus workbook
    columns, or (None, None, None) for an image-only run.

    Raises:
        UserError: values missing or misaligned, or a column that leaks the label.
    """
    if not cfg.metadata_columns:
        return None, None, None
    columns = list(cfg.metadata_columns)
    if metadata is None or len(metadata) != len(split) or set(columns) - set(metadata.columns):
        raise UserError(
            "Training on workbook columns needs their values for every image "
            f"({', '.join(columns)}); they were not read."
        )
    values = metadata[columns].reset_index(drop=True)
    in_train = (split == "train").to_numpy()
    train_values, val_values = values[in_train], values[(split == "val").to_numpy()]
    check_leakage(train_values, train_labels.astype(int).tolist())
    encoder = fit_encoder(train_values)
    return encoder, encoder.encode(train_values), encoder.encode(val_values)


def compile_model(
    cfg: TrainConfig, positive_fraction: float, *, metadata_width: int = 0
) -> keras.Model:
    """The run's model, built for ``cfg`` and compiled with its loss, optimiser and metrics
    (``metadata_width``: encoded workbook values it takes beside the image, 0 for none)."""
    # Unbalanced losses start at the data's prior, so the first epoch is not spent learning it.
    # Class weights make both classes weigh the same (prior 0.5); oversampled batches hold about
    # one cancer image in four, and start from 0.5 as well: that is the setting benchmarked.
    prior = positive_fraction if cfg.imbalance in ("none", "focal") else 0.5
    # A backbone without pretrained weights has nothing worth freezing: train all of it.
    fine_tune = cfg.fine_tune or cfg.weights == "none"
    model = build_model(
        cfg.model,
        tuple(cfg.image_size),
        weights=cfg.weights,
        fine_tune=fine_tune,
        output_bias=initial_bias(prior),
        seed=cfg.seed,
        metadata_width=metadata_width,
        frozen_stages=cfg.frozen_stages,
        batch_norm=cfg.batch_norm,
        head=cfg.head,
    )
    recompile(model, cfg)
    return model


def recompile(
    model: keras.Model, cfg: TrainConfig, decay_steps: int = 0, *, head_only: bool = False
) -> None:
    """Compile ``model`` with the run's loss, metrics and a fresh Adam: at the recipe's rate
    for the head alone or a constant schedule, else decaying along ``cfg.schedule`` over
    ``decay_steps`` steps; with ``cfg.rate_decay`` below 1, the backbone's weights at
    their layer-wise share of it (:class:`LayerwiseAdam`). A phase that changes the
    trainable weights compiles again, so its optimiser and train step cover exactly those
    weights."""
    rate: Any = cfg.learning_rate
    if cfg.schedule == "cosine" and not head_only and decay_steps > 0:
        rate = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps)
    loss = make_loss(
        "focal" if cfg.imbalance == "focal" else "bce", label_smoothing=cfg.label_smoothing
    )
    backbone = _backbone(model)
    if cfg.rate_decay != 1 and not head_only and backbone is not None:
        factors = packaged.rate_factors(backbone, cfg.rate_decay)
        optimizer: keras.optimizers.Optimizer = LayerwiseAdam(rate, rate_factors=factors)
    else:
        optimizer = keras.optimizers.Adam(rate)
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=[
            keras.metrics.AUC(name="roc_auc"),
            keras.metrics.AUC(curve="PR", name="pr_auc"),
            keras.metrics.Recall(name="recall"),
            keras.metrics.Precision(name="precision"),
        ],
    )


def fit_phases(cfg: TrainConfig) -> list[tuple[int, int, bool]]:
    """The run's phases as (first epoch, end epoch, head alone): the head's warm-up
    (:attr:`TrainConfig.warm_up_epochs`), if any, then the rest of the epochs."""
    head = cfg.warm_up_epochs
    return ([(0, head, True)] if head else []) + [(head, cfg.epochs, False)]


def _backbone(model: keras.Model) -> keras.Model | None:
    """The pretrained backbone nested in ``model`` (:data:`BACKBONE_LAYER`), or None."""
    names = {layer.name for layer in model.layers}
    return model.get_layer(BACKBONE_LAYER) if BACKBONE_LAYER in names else None


@contextlib.contextmanager
def backbone_frozen(model: keras.Model, frozen: bool = True):
    """Within the block, the pretrained backbone of ``model`` is frozen: no gradients, and its
    batch norm runs on its stored statistics. On leaving, every layer's own setting (stages
    frozen by the recipe, batch norm frozen or learning) is as it was. Does nothing when
    ``frozen`` is False or the model has no backbone."""
    backbone = _backbone(model)
    if not frozen or backbone is None:
        yield
        return
    before = [(layer, layer.trainable) for layer in backbone.layers]
    was = backbone.trainable
    backbone.trainable = False
    try:
        yield
    finally:
        backbone.trainable = was  # propagates to every layer: now each one's own setting
        for layer, trainable in before:
            layer.trainable = trainable
