"""The training runner: split, pipelines, model, imbalance handling, callbacks, bundle.

One call, :func:`train_model`, does a whole run. The UI and the CLI follow it through progress
events (plain dicts passed to ``on_event``) and can stop it through a ``threading.Event``; the
best model so far is written as a bundle after every epoch that improves validation PR-AUC, so a
stopped, crashed or killed run still leaves the best bundle it reached.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from bcp_core import config
from bcp_core.config import TrainConfig
from bcp_core.data.split import patient_overlap, split_patients
from bcp_core.errors import UserError
from bcp_core.evaluation.metrics import metrics_at_threshold, ranking_metrics
from bcp_core.evaluation.thresholds import choose_threshold
from bcp_core.model.architectures import build_model
from bcp_core.model.bundle import now_iso, save_bundle
from bcp_core.model.dataset import ReadFailures, balanced_dataset, class_weights, image_dataset
from bcp_core.model.losses import initial_bias, make_loss

Event = dict
EventSink = Callable[[Event], None]


@dataclass
class TrainResult:
    """What a run produced (the bundle holds the rest)."""

    bundle: Path | None
    epochs_run: int
    best_epoch: int
    status: str
    metrics: dict
    threshold: float
    split: dict
    read_failures: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "bundle": str(self.bundle) if self.bundle else None,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "status": self.status,
            "val_roc_auc": self.metrics.get("roc_auc"),
            "val_pr_auc": self.metrics.get("pr_auc"),
            "val_sensitivity": self.metrics.get("sensitivity"),
            "val_specificity": self.metrics.get("specificity"),
            "threshold": self.threshold,
            **{
                k: self.split[k]
                for k in (
                    "train_patients",
                    "val_patients",
                    "patient_overlap",
                    "train_images",
                    "val_images",
                )
            },
            "unreadable_images": len(self.read_failures),
        }


# --- Callbacks --------------------------------------------------------------------------------


class ValidationScorer(keras.callbacks.Callback):
    """Predicts the validation split after each epoch and adds ``val_*`` metrics to the logs.

    Scoring here (rather than Keras' ``validation_data``) gives the per-image probabilities the
    bundle needs, computes ROC-AUC / PR-AUC exactly with scikit-learn, and skips nothing twice.
    """

    def __init__(self, val_ds, labels: np.ndarray) -> None:
        super().__init__()
        self.val_ds, self.labels = val_ds, labels
        self.probabilities = np.array([])
        self.indices = np.array([], dtype=int)

    def score(self) -> tuple[np.ndarray, np.ndarray]:
        probs, idx = [], []
        for images, index in self.val_ds:
            probs.append(np.asarray(self.model(images, training=False)).reshape(-1))
            idx.append(index.numpy().astype(int))
        return np.concatenate(probs) if probs else np.array([]), (
            np.concatenate(idx) if idx else np.array([], dtype=int)
        )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        probabilities, self.indices = self.score()
        # float64 so that the CSV round-trips exactly: a threshold equal to a stored
        # probability must classify that image the same way after reloading (>= convention).
        self.probabilities = probabilities.astype(np.float64)
        y = self.labels[self.indices]
        p = np.clip(self.probabilities, 1e-7, 1 - 1e-7)
        ranks = ranking_metrics(y, p)
        at_half = metrics_at_threshold(y, p, 0.5)
        if logs is not None:
            logs["val_loss"] = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
            logs["val_roc_auc"] = ranks["roc_auc"]
            logs["val_pr_auc"] = ranks["pr_auc"]
            logs["val_recall"] = at_half["sensitivity"]
            logs["val_precision"] = at_half["precision"]


class ProgressReporter(keras.callbacks.Callback):
    """Emits ``batch`` events (throttled) and ``epoch`` events with metrics and an ETA."""

    def __init__(self, emit: EventSink, epochs: int, steps: int, interval: float = 0.5) -> None:
        super().__init__()
        self.emit, self.epochs, self.steps, self.interval = emit, epochs, steps, interval
        self.start = time.monotonic()
        self._last = 0.0
        self.epoch = 0

    def _eta(self, done_steps: int) -> float:
        elapsed = time.monotonic() - self.start
        total = self.epochs * self.steps
        return elapsed / done_steps * (total - done_steps) if done_steps else float("nan")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.monotonic()
        if now - self._last < self.interval and batch + 1 < self.steps:
            return
        self._last = now
        done = self.epoch * self.steps + batch + 1
        self.emit(
            {
                "kind": "batch",
                "epoch": self.epoch + 1,
                "epochs": self.epochs,
                "batch": batch + 1,
                "steps": self.steps,
                "loss": _num((logs or {}).get("loss")),
                "eta_s": self._eta(done),
            }
        )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        done = (epoch + 1) * self.steps
        self.emit(
            {
                "kind": "epoch",
                "epoch": epoch + 1,
                "epochs": self.epochs,
                "metrics": {k: _num(v) for k, v in (logs or {}).items()},
                "eta_s": self._eta(done),
                "elapsed_s": time.monotonic() - self.start,
            }
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


class BestBundleWriter(keras.callbacks.Callback):
    """Keeps the best weights by validation PR-AUC and writes the bundle at each improvement."""

    def __init__(self, run: _Run) -> None:
        super().__init__()
        self.run = run
        self.best = -math.inf
        self.best_epoch = 0
        self.best_weights = None
        self.history: list[dict] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.history.append({"epoch": epoch + 1, **{k: _num(v) for k, v in logs.items()}})
        score = logs.get("val_pr_auc", float("nan"))
        score = -1.0 if score is None or math.isnan(score) else score
        if score > self.best:
            self.best, self.best_epoch = score, epoch + 1
            self.best_weights = self.model.get_weights()
            self.run.write_bundle(self.model, self.history, epoch + 1, status="running")


def _num(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


# --- The run ---------------------------------------------------------------------------------


def data_fingerprint(manifest: pd.DataFrame) -> str:
    """A short hash of which images (relative paths) with which labels were used."""
    rows = sorted(zip(manifest["relpath"].astype(str), manifest["label"].astype(int)))
    return hashlib.sha256(repr(rows).encode("utf-8")).hexdigest()[:16]


@dataclass
class _Run:
    """State shared by the runner and its callbacks."""

    manifest: pd.DataFrame
    cfg: TrainConfig
    out_dir: Path
    split: pd.Series
    split_info: dict
    scorer: ValidationScorer | None = None
    bundle_written: Path | None = None

    def val_predictions(self) -> pd.DataFrame:
        val = self.manifest[self.split == "val"].reset_index(drop=True)
        idx = self.scorer.indices
        return pd.DataFrame({
            "file": val.loc[idx, "path"].to_numpy(),
            "patient_id": val.loc[idx, "patient_id"].to_numpy(),
            "label": val.loc[idx, "label"].astype(int).to_numpy(),
            "probability": self.scorer.probabilities,
            "laterality": val.loc[idx, "laterality"].to_numpy(),
            "view": val.loc[idx, "view"].to_numpy(),
        })  # fmt: skip

    def write_bundle(self, model, history: list[dict], epoch: int, status: str) -> Path:
        preds = self.val_predictions()
        y, p = preds["label"].to_numpy(), preds["probability"].to_numpy()
        threshold = choose_threshold(y, p, self.cfg.threshold_method)
        at = metrics_at_threshold(y, p, threshold)
        meta = {
            "model_name": self.cfg.model,
            "input": {"height": self.cfg.spec.height, "width": self.cfg.spec.width, "channels": 1},
            "preprocessing": self.cfg.spec.to_dict(),
            "class_names": list(config.CLASS_NAMES),
            "threshold": {
                "value": threshold,
                "method": self.cfg.threshold_method,
                "chosen": now_iso(),
                "on": "validation images",
            },
            "training": self.cfg.to_dict(),
            "split": self.split_info,
            "data_fingerprint": data_fingerprint(self.manifest),
            "metrics": {**ranking_metrics(y, p), **at, "best_epoch": epoch},
            "status": status,
        }
        self.bundle_written = save_bundle(self.out_dir, model, meta, pd.DataFrame(history), preds)
        return self.bundle_written


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


def plan_split(manifest: pd.DataFrame, cfg: TrainConfig) -> tuple[pd.Series, dict]:
    """Split by patient and check that both classes are on both sides."""
    if manifest.empty:
        raise UserError("The manifest has no usable images; check the data-matching page.")
    split = split_patients(manifest, cfg.val_fraction, seed=cfg.seed)
    info = {
        "seed": cfg.seed,
        "val_fraction": cfg.val_fraction,
        "patient_overlap": patient_overlap(manifest, split),
    }
    for part in ("train", "val"):
        sel = manifest[split == part]
        info[f"{part}_images"] = len(sel)
        info[f"{part}_patients"] = int(sel["patient_id"].nunique())
        info[f"{part}_positives"] = int(sel["label"].sum())
        if sel["label"].nunique() < 2:
            raise UserError(
                f"The {part} split has no {'cancer' if sel['label'].sum() == 0 else 'non-cancer'} "
                "images; more patients of each class are needed (or a larger validation share)."
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
) -> TrainResult:
    """Train a model on ``manifest`` and write the best one as a bundle in ``out_dir``.

    Raises:
        UserError: for invalid settings or data, before anything is trained.
    """
    cfg.validate()
    check_writable(Path(out_dir).parent)
    emit = on_event or (lambda event: None)
    split, info = plan_split(manifest, cfg)
    run = _Run(manifest, cfg, Path(out_dir), split, info)
    keras.utils.set_random_seed(cfg.seed)
    failures = ReadFailures()
    train = manifest[split == "train"]
    val = manifest[split == "val"].reset_index(drop=True)
    train_ds, steps, weights = _training_data(train, cfg, failures)
    val_ds = image_dataset(
        val["path"], np.arange(len(val)), cfg.spec, batch_size=cfg.batch_size, failures=failures
    )
    val_ds = val_ds.map(lambda x, i: (x, keras.ops.cast(i, "int32")))
    model = _compiled_model(cfg, float(train["label"].mean()))
    run.scorer = ValidationScorer(val_ds, val["label"].astype(int).to_numpy())
    writer = BestBundleWriter(run)
    stopper = StopOnEvent(stop_event or threading.Event())
    early = keras.callbacks.EarlyStopping(monitor="val_pr_auc", mode="max", patience=cfg.patience)
    callbacks = [
        run.scorer,
        writer,
        ProgressReporter(emit, cfg.epochs, steps),
        stopper,
        early,
        *extra_callbacks,
    ]
    emit(
        {
            "kind": "start",
            "epochs": cfg.epochs,
            "steps": steps,
            "split": info,
            "config": cfg.to_dict(),
        }
    )
    history = model.fit(
        train_ds,
        epochs=cfg.epochs,
        steps_per_epoch=steps,
        callbacks=callbacks,
        class_weight=weights,
        shuffle=False,  # the pipeline shuffles
        verbose=0,
    )
    epochs_run = len(history.epoch)
    status = (
        "stopped"
        if stopper.stopped
        else ("early_stopped" if epochs_run < cfg.epochs else "completed")
    )
    if writer.best_weights is not None:
        model.set_weights(writer.best_weights)
        run.scorer.on_epoch_end(writer.best_epoch - 1)  # predictions of the best weights
        run.write_bundle(model, writer.history, writer.best_epoch, status=status)
    return _result(run, writer, epochs_run, status, failures)


def _training_data(train: pd.DataFrame, cfg: TrainConfig, failures: ReadFailures):
    """Training pipeline, steps per epoch and class weights for the chosen imbalance method."""
    paths, labels = train["path"].tolist(), train["label"].astype(int).tolist()
    if cfg.imbalance == "oversample":
        ds, steps = balanced_dataset(
            paths,
            labels,
            cfg.spec,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            augment=cfg.augment,
            failures=failures,
        )
        return ds, steps, None
    ds = image_dataset(
        paths,
        labels,
        cfg.spec,
        batch_size=cfg.batch_size,
        training=True,
        seed=cfg.seed,
        augment=cfg.augment,
        failures=failures,
    )
    weights = class_weights(labels) if cfg.imbalance == "class_weight" else None
    return ds.repeat(), max(1, math.ceil(len(paths) / cfg.batch_size)), weights


def _compiled_model(cfg: TrainConfig, positive_fraction: float):
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
    )
    loss = make_loss(
        "focal" if cfg.imbalance == "focal" else "bce", label_smoothing=cfg.label_smoothing
    )
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate),
        loss=loss,
        metrics=[
            keras.metrics.AUC(name="roc_auc"),
            keras.metrics.AUC(curve="PR", name="pr_auc"),
            keras.metrics.Recall(name="recall"),
            keras.metrics.Precision(name="precision"),
        ],
    )
    return model


def _result(
    run: _Run, writer: BestBundleWriter, epochs_run: int, status: str, failures: ReadFailures
) -> TrainResult:
    metrics: dict = {}
    threshold = float("nan")
    if run.bundle_written is not None:
        from bcp_core.model.bundle import read_bundle_meta

        meta = read_bundle_meta(run.bundle_written)
        metrics, threshold = meta["metrics"], meta["threshold"]["value"]
    return TrainResult(
        bundle=run.bundle_written,
        epochs_run=epochs_run,
        best_epoch=writer.best_epoch,
        status=status,
        metrics=metrics,
        threshold=threshold,
        split=run.split_info,
        read_failures=dict(failures.messages),
    )
