"""Benchmark: training at hospital scale, the product's way against the user's all-in-RAM recipe.

Four figures, each measured in fresh child processes (``--child``) on the same data root:

* **(a) peak memory** of training from the product's streaming pipeline against the user's
  recipe, both at 224x224 pixels. Product: ``bcp_core.model.training.train_model`` on the whole
  manifest with ``TrainConfig(image_size=(224, 224), batch_size=32, epochs=1)`` (the default
  CNN, one gray channel, the default imbalance handling, augmentation, streaming), stopped
  after ``--mem-steps`` training steps; the epoch end then scores the validation split and
  writes the bundle, as a real run does. Recipe: every image of the manifest loaded into one
  float32 array of shape (n, 224, 224, 3) / 255 (``keras.utils.load_img``, whose default resize
  is nearest-neighbour, of the whole image), a random 80/20 ``train_test_split`` by image, the
  user's Sequential CNN fitted for the same number of steps (batch 32) with the validation
  part as ``validation_data``. The array is preallocated and filled in place, the frugal way to
  write that recipe (a list of arrays passed to ``np.array`` holds two copies at its peak), so
  the ratio is not inflated. Peak memory is ``ru_maxrss`` of each child process.
* **(b) throughput**: images per second that the product's training pipeline delivers
  (the runner's own pipeline for the default ``TrainConfig``: its imbalance handling,
  augmentation, 320x256, batch 16, on the non-test images; ``--pipe-batches`` batches after
  ``--warmup`` batches),
  against images per second of the default CNN's training step (the model compiled exactly as
  ``train_model`` compiles it, ``train_on_batch`` on one fixed batch, ``--train-steps`` steps
  after warm-up). Both are measured alone, in the same child, one after the other, so each
  has the whole CPU; the ratio says whether the pipeline can keep the model fed. The images
  per second of the real run in (a) (pipeline and model sharing the CPU) are reported too.
* **(c) quality** on held-out patients: ``bcp_core.data.split.split_patients(manifest, 0.2, 0.2,
  seed)`` keeps 20 % of the patients of each class as TEST. On the other patients: the
  product's default (``train_model`` with default ``TrainConfig`` except ``--epochs``; it splits
  train / validation by patient and picks its threshold on validation), then the bundle
  predicts the test images with its own preprocessing; and the user's recipe, written out in
  :func:`recipe_model` and :func:`run_recipe` (224x224 RGB / 255 nearest-neighbour array, random
  80/20 split by image, three Conv2D+MaxPool blocks, Flatten, Dense(128), Dropout(0.5),
  Dense(2, softmax), sparse categorical cross-entropy, Adam, 10 epochs, batch 32, no class
  weights, decision = argmax), which predicts the same test images loaded its way. Scored per
  image with ``bcp_core.evaluation``: sensitivity and specificity at each model's own decision
  rule (bundle threshold / argmax), ROC-AUC, PR-AUC. For the product also at the threshold with
  specificity >= 0.85 chosen on the bundle's validation predictions (never on test); the
  test-curve "sensitivity at specificity >= 0.85" is printed only as a description of the
  ranking, not as an operating point.
* **(d) GPU** (``--gpu``): mixed precision, 512x416 input, images per second of the default CNN
  and of EfficientNetB0 (random weights, fully trained) with ``train_on_batch``, and of the
  pipeline at that size. Needs a GPU; not part of the default run.

Data: the hospital-scale demo at the product's default settings (1024 px, default subtlety),
written once by ``python -m bcp_core demo-data --scale hospital`` to
``bench/results/cache/hospital_full`` and reused (``--rebuild`` writes it again). ``--quick``
uses the small demo at 512 px (``cache/small_train``), two epochs, few steps: a smoke run.

Run: ``.venv/bin/python bench/bench_train.py`` (about an hour on 2 CPU cores). Results: a table
on stdout and ``bench/results/bench_train.json`` (``bench_train_quick.json`` with ``--quick``);
a run of some sections (``--only``) updates just those sections of the file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
DEFAULT_CACHE = RESULTS_DIR / "cache"

SECTIONS = ("a", "b", "c")
#: The user's recipe, as in their notebook.
RECIPE_SIZE = 224
RECIPE_EPOCHS = 10
RECIPE_BATCH = 32
RECIPE_VAL_SHARE = 0.2
#: The memory comparison runs both flows at the recipe's size and batch.
MEM_SIZE = (RECIPE_SIZE, RECIPE_SIZE)
MEM_BATCH = RECIPE_BATCH
#: Held-out TEST patients (of each class) for (c); validation share inside train_model.
TEST_FRACTION = 0.2
VAL_FRACTION = 0.2
#: Specificity at which (c) reads sensitivity; the issue's targets.
SPEC_TARGET = 0.85
TARGET_SENSITIVITY = 0.85
TARGET_MEMORY_RATIO = 1 / 3
TARGET_THROUGHPUT_RATIO = 2.0
#: (d): network input on the GPU (portrait, like the default CNN's inputs).
GPU_SIZE = (512, 416)
GPU_BATCH = 32


# --- Small helpers ------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Peak resident set of this process in MB (``ru_maxrss`` is KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float:
    """Current resident set of this process in MB (Linux ``/proc``; peak elsewhere)."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def log(message: str) -> None:
    """Progress to stderr (a child's stdout carries only its JSON result)."""
    print(message, file=sys.stderr, flush=True)


def load_manifest(root: Path):
    """The manifest of ``root`` (one row per usable image), via the product's matching."""
    from bcp_core.data.datasource import read_data_root

    return read_data_root(root).manifest.reset_index(drop=True)


def split_test(manifest, seed: int):
    """``(non_test, test)`` manifests: TEST holds ``TEST_FRACTION`` of each class's patients."""
    from bcp_core.data.split import split_patients

    split = split_patients(
        manifest, val_fraction=VAL_FRACTION, test_fraction=TEST_FRACTION, seed=seed
    )
    test = split == "test"
    return manifest[~test].reset_index(drop=True), manifest[test].reset_index(drop=True)


def class_counts(frame) -> dict:
    """Images, cancer images and patients of a manifest."""
    return {
        "images": len(frame),
        "cancer_images": int(frame["label"].sum()),
        "patients": int(frame["patient_id"].nunique()),
    }


# --- The user's recipe (written as in their notebook) --------------------------------------


def recipe_load_images(paths, size: int = RECIPE_SIZE):
    """Every image in ONE float32 array (n, size, size, 3) / 255, nearest-neighbour resized.

    ``keras.utils.load_img(path, target_size=...)`` resizes the whole image (no crop, aspect
    ratio ignored) with its default ``interpolation="nearest"`` and converts it to RGB.
    """
    import keras
    import numpy as np

    paths = list(paths)
    x = np.empty((len(paths), size, size, 3), dtype=np.float32)
    for i, path in enumerate(paths):
        img = keras.utils.load_img(path, target_size=(size, size))
        x[i] = keras.utils.img_to_array(img) / 255.0
        if (i + 1) % 1000 == 0:
            log(f"    recipe: loaded {i + 1}/{len(paths)} images")
    return x


def recipe_model(size: int = RECIPE_SIZE):
    """The user's CNN: three Conv2D+MaxPool blocks, Flatten, Dense(128), Dropout, softmax(2)."""
    import keras

    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input(shape=(size, size, 3)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(128, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def recipe_split(x, y, seed: int):
    """The user's random 80/20 split BY IMAGE (views of one woman land on both sides)."""
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=RECIPE_VAL_SHARE, random_state=seed)


def epoch_logger(label: str):
    """A Keras callback that logs each epoch's metrics to stderr (``verbose=0`` keeps stdout)."""
    import keras

    class _Logger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items())
            log(f"    {label} epoch {epoch + 1}: {shown}")

    return _Logger()


# --- Product helpers ------------------------------------------------------------------------


def predict_bundle(bundle, paths, batch_size: int = 32):
    """P(cancer) per image with the bundle's model and its own preprocessing, in order.

    Raises:
        RuntimeError: if an image could not be read (the pipeline would skip it silently).
    """
    import numpy as np

    from bcp_core.model.dataset import image_dataset

    paths = list(paths)
    probs = []
    for x in image_dataset(paths, None, bundle.spec, batch_size=batch_size):
        probs.append(np.asarray(bundle.model(x, training=False)).reshape(-1))
    out = np.concatenate(probs) if probs else np.array([])
    if len(out) != len(paths):
        raise RuntimeError(
            f"Predicted {len(out)} of {len(paths)} test images; some are unreadable."
        )
    return out


def product_compiled_model(cfg, positive_fraction: float):
    """The default CNN compiled exactly as ``train_model`` compiles it."""
    from bcp_core.model.training import compile_model  # the runner's own builder

    return compile_model(cfg, positive_fraction)


def stop_after(steps: int):
    """A Keras callback that ends training after ``steps`` batches and times them."""
    import keras

    class _StopAfter(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.done, self.start, self.seconds = 0, 0.0, 0.0

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.done += 1
            if self.done == 1:  # time from the end of the first (tracing) step
                self.start = time.perf_counter()
            if self.done >= steps:
                self.seconds = time.perf_counter() - self.start
                self.model.stop_training = True

    return _StopAfter()


# --- (a) memory --------------------------------------------------------------------------


def run_mem_product(root: Path, steps: int, seed: int) -> dict:
    """Peak RSS of ``train_model`` at 224x224 on the whole manifest, stopped after ``steps``."""
    from bcp_core.config import TrainConfig
    from bcp_core.model.training import train_model

    import_mb = peak_rss_mb()
    manifest = load_manifest(root)
    cfg = TrainConfig(image_size=MEM_SIZE, batch_size=MEM_BATCH, epochs=1, seed=seed)
    stopper = stop_after(steps)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_train_mem_") as tmp:
        result = train_model(manifest, cfg, Path(tmp) / "bundle", extra_callbacks=[stopper])
    return {
        "images": len(manifest),
        "image_size": list(MEM_SIZE),
        "channels": 1,
        "batch_size": MEM_BATCH,
        "imbalance": cfg.imbalance,
        "steps": stopper.done,
        "train_images": result.split.train_images,
        "val_images": result.split.val_images,
        "seconds": time.perf_counter() - start,
        "fit_images_per_s": (stopper.done - 1) * MEM_BATCH / stopper.seconds
        if stopper.seconds
        else None,
        "import_rss_mb": import_mb,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_mem_recipe(root: Path, steps: int, seed: int) -> dict:
    """Peak RSS of the recipe: all images in one array, split by image, ``steps`` fit steps."""
    import keras
    import numpy as np

    import_mb = peak_rss_mb()
    manifest = load_manifest(root)
    start = time.perf_counter()
    x = recipe_load_images(manifest["path"])
    y = manifest["label"].astype(int).to_numpy()
    load_s = time.perf_counter() - start
    after_load = current_rss_mb()
    x_train, x_val, y_train, y_val = recipe_split(x, y, seed)
    keras.utils.set_random_seed(seed)
    model = recipe_model()
    stopper = stop_after(steps)
    model.fit(
        x_train,
        y_train,
        epochs=1,
        batch_size=RECIPE_BATCH,
        steps_per_epoch=steps,
        validation_data=(x_val, y_val),
        callbacks=[stopper],
        verbose=0,
    )
    return {
        "images": len(manifest),
        "image_size": [RECIPE_SIZE, RECIPE_SIZE],
        "channels": 3,
        "batch_size": RECIPE_BATCH,
        "steps": stopper.done,
        "array_gb": float(np.prod(x.shape)) * 4 / 1e9,
        "load_s": load_s,
        "seconds": time.perf_counter() - start,
        "import_rss_mb": import_mb,
        "rss_after_load_mb": after_load,
        "peak_rss_mb": peak_rss_mb(),
    }


# --- (b) throughput ------------------------------------------------------------------------


def _images_per_s(step, batches: int, batch_size: int) -> float:
    start = time.perf_counter()
    for _ in range(batches):
        step()
    return batches * batch_size / (time.perf_counter() - start)


def run_throughput(root: Path, batches: int, train_steps: int, warmup: int, seed: int) -> dict:
    """Images/s of the training pipeline alone, then of the default CNN's train step alone.

    Both come from the runner's own helpers with the default ``TrainConfig``, so they follow
    the product's default imbalance handling (oversampling or class weights).
    """
    from bcp_core.config import TrainConfig
    from bcp_core.model.dataset import ReadFailures
    from bcp_core.model.training import training_pipeline  # the runner's own pipeline

    cfg = TrainConfig(seed=seed)
    manifest, _ = split_test(load_manifest(root), seed)
    ds, _steps, weights = training_pipeline(manifest, cfg, ReadFailures())
    batches_it = iter(ds)
    x, y = next(batches_it)
    for _ in range(warmup):
        next(batches_it)
    pipe = _images_per_s(lambda: next(batches_it), batches, cfg.batch_size)
    log(f"    pipeline: {pipe:.1f} images/s")
    model = product_compiled_model(cfg, float(manifest["label"].mean()))

    def train_step() -> None:
        model.train_on_batch(x, y, class_weight=weights)

    for _ in range(warmup):
        train_step()
    train = _images_per_s(train_step, train_steps, cfg.batch_size)
    log(f"    train step: {train:.1f} images/s")
    return {
        "image_size": list(cfg.image_size),
        "batch_size": cfg.batch_size,
        "augment": cfg.augment,
        "imbalance": cfg.imbalance,
        "pipeline_batches": batches,
        "train_steps": train_steps,
        "warmup": warmup,
        "pipeline_images_per_s": pipe,
        "train_images_per_s": train,
        "ratio": pipe / train,
        "cpus": os.cpu_count(),
    }


# --- (c) quality -------------------------------------------------------------------------


def score(y_true, y_prob, y_pred_rule, threshold_desc: str) -> dict:
    """Per-image metrics: at a decision rule (0/1 predictions), ROC-AUC, PR-AUC.

    Also the test-curve sensitivity at specificity >= ``SPEC_TARGET``: descriptive only (it
    reads the test ROC curve, so it is not an operating point anyone could have chosen).
    """
    import numpy as np

    from bcp_core.evaluation.metrics import ranking_metrics, roc_curve_points

    y = np.asarray(y_true).astype(int)
    pred = np.asarray(y_pred_rule).astype(int)
    tp, fn = int(((pred == 1) & (y == 1)).sum()), int(((pred == 0) & (y == 1)).sum())
    tn, fp = int(((pred == 0) & (y == 0)).sum()), int(((pred == 1) & (y == 0)).sum())
    fpr, tpr, _ = roc_curve_points(y, y_prob)
    ok = fpr <= 1 - SPEC_TARGET
    return {
        "rule": threshold_desc,
        "n": int(y.size),
        "n_positive": int(y.sum()),
        "tp": tp,
        "fn": fn,
        "tn": tn,
        "fp": fp,
        "sensitivity": tp / (tp + fn) if tp + fn else math.nan,
        "specificity": tn / (tn + fp) if tn + fp else math.nan,
        **ranking_metrics(y, y_prob),
        "test_curve_sensitivity_at_spec": float(tpr[ok].max()) if ok.any() else math.nan,
    }


def breast_aucs(test, y_prob) -> dict:
    """ROC-AUC and PR-AUC per breast (mean of its views, as screening systems score a breast)."""
    from bcp_core.evaluation.aggregation import aggregate_predictions_df
    from bcp_core.evaluation.metrics import ranking_metrics

    preds = test[["patient_id", "laterality", "label"]].assign(probability=y_prob)
    breasts = aggregate_predictions_df(preds, level="breast")
    return {"breasts": len(breasts), **ranking_metrics(breasts["label"], breasts["probability"])}


def run_default(root: Path, epochs: int, seed: int, bundle_dir: Path) -> dict:
    """Train the product's default on the non-test patients; score the test patients."""
    import numpy as np

    from bcp_core.config import TrainConfig
    from bcp_core.evaluation.thresholds import choose_threshold
    from bcp_core.model.bundle import load_bundle
    from bcp_core.model.events import EpochEnded

    non_test, test = split_test(load_manifest(root), seed)
    cfg = TrainConfig(epochs=epochs, seed=seed)

    def on_event(event) -> None:
        if isinstance(event, EpochEnded):
            log(
                f"    default epoch {event.epoch}/{event.epochs}: loss {event.value('loss')}, "
                f"val_roc_auc {event.value('val_roc_auc')}, "
                f"val_pr_auc {event.value('val_pr_auc')}, {event.elapsed_s:.0f} s"
            )

    start = time.perf_counter()
    result = train_model_logged(non_test, cfg, bundle_dir, on_event)
    train_s = time.perf_counter() - start
    bundle = load_bundle(result.bundle)
    start = time.perf_counter()
    prob = predict_bundle(bundle, test["path"])
    predict_s = time.perf_counter() - start
    val = bundle.val_predictions
    t_spec = choose_threshold(
        val["label"], val["probability"], "specificity_target", specificity_target=SPEC_TARGET
    )
    y = test["label"].to_numpy()
    np.savetxt(bundle_dir.parent / f"{bundle_dir.name}_test_prob.txt", prob)
    return {
        "config": cfg.to_dict(),
        "non_test": class_counts(non_test),
        "test": class_counts(test),
        "split": result.split.to_json(),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "status": result.status,
        "train_s": train_s,
        "predict_s": predict_s,
        "val_roc_auc": result.metrics.roc_auc if result.metrics else None,
        "val_pr_auc": result.metrics.pr_auc if result.metrics else None,
        "threshold_bundle": bundle.threshold,
        "threshold_method": bundle.meta.threshold.method,
        "threshold_spec85_val": t_spec,
        "at_bundle_threshold": score(y, prob, prob >= bundle.threshold, "bundle threshold"),
        "at_spec85_val_threshold": score(y, prob, prob >= t_spec, "spec>=0.85 on validation"),
        "breast": breast_aucs(test, prob),
    }


def train_model_logged(manifest, cfg, out_dir: Path, on_event):
    """``train_model`` into a fresh ``out_dir`` (an older bundle there is replaced)."""
    from bcp_core.model.training import train_model

    shutil.rmtree(out_dir, ignore_errors=True)
    return train_model(manifest, cfg, out_dir, on_event=on_event)


def run_recipe(root: Path, epochs: int, seed: int) -> dict:
    """The user's recipe on the non-test patients' images; scored on the test patients."""
    import keras
    import numpy as np

    non_test, test = split_test(load_manifest(root), seed)
    start = time.perf_counter()
    x = recipe_load_images(non_test["path"])
    y = non_test["label"].astype(int).to_numpy()
    load_s = time.perf_counter() - start
    x_train, x_val, y_train, y_val = recipe_split(x, y, seed)
    del x
    keras.utils.set_random_seed(seed)
    model = recipe_model()
    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=RECIPE_BATCH,
        validation_data=(x_val, y_val),
        callbacks=[epoch_logger("recipe")],
        verbose=0,
    )
    train_s = time.perf_counter() - start
    val_pred = np.argmax(model.predict(x_val, batch_size=RECIPE_BATCH, verbose=0), axis=1)
    del x_train, x_val
    x_test = recipe_load_images(test["path"])
    test_prob = model.predict(x_test, batch_size=RECIPE_BATCH, verbose=0)
    p_cancer, pred = test_prob[:, 1], np.argmax(test_prob, axis=1)
    val_pos = y_val == 1
    return {
        "non_test": class_counts(non_test),
        "test": class_counts(test),
        "train_images": len(y_train),
        "val_images": len(y_val),
        "val_cancer_images": int(val_pos.sum()),
        "val_accuracy": float(history.history["val_accuracy"][-1]),
        "val_cancer_recall": float((val_pred[val_pos] == 1).mean()) if val_pos.any() else None,
        "val_patients_also_in_train": _leaked_patients(non_test, seed),
        "epochs": epochs,
        "load_s": load_s,
        "train_s": train_s,
        "at_argmax": score(test["label"].to_numpy(), p_cancer, pred, "argmax"),
        "breast": breast_aucs(test, p_cancer),
    }


def _val_index(n: int, seed: int):
    """Indices that :func:`recipe_split` puts in validation (same call on an index array)."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    return train_test_split(idx, test_size=RECIPE_VAL_SHARE, random_state=seed)[1]


def _leaked_patients(frame, seed: int) -> int:
    """Patients of the recipe's validation images that also have images in its training part."""
    val_idx = set(_val_index(len(frame), seed).tolist())
    in_val = frame["patient_id"].iloc[sorted(val_idx)]
    in_train = frame["patient_id"].drop(frame.index[sorted(val_idx)])
    return int(len(set(in_val) & set(in_train)))


# --- (d) GPU -----------------------------------------------------------------------------


def run_gpu(root: Path, steps: int, warmup: int, seed: int) -> dict:
    """Mixed-precision images/s at 512x416 on a GPU: pipeline, default CNN, EfficientNetB0."""
    import keras
    import tensorflow as tf

    from bcp_core.config import PreprocessSpec
    from bcp_core.model.architectures import build_model
    from bcp_core.model.dataset import image_dataset
    from bcp_core.model.losses import make_loss

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return {"skipped": "no GPU visible to TensorFlow"}
    keras.mixed_precision.set_global_policy("mixed_float16")
    manifest, _ = split_test(load_manifest(root), seed)
    spec = PreprocessSpec(*GPU_SIZE)
    ds = image_dataset(
        manifest["path"], manifest["label"], spec, batch_size=GPU_BATCH, training=True, seed=seed
    ).repeat()
    it = iter(ds)
    x, y = next(it)
    for _ in range(warmup):
        next(it)
    out = {"gpus": [g.name for g in gpus], "image_size": list(GPU_SIZE), "batch_size": GPU_BATCH}
    out["pipeline_images_per_s"] = _images_per_s(lambda: next(it), steps, GPU_BATCH)
    for name in ("default_cnn", "efficientnetb0"):
        model = build_model(name, GPU_SIZE, fine_tune=True, seed=seed)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=make_loss("bce"))
        for _ in range(warmup):
            model.train_on_batch(x, y)
        out[f"{name}_images_per_s"] = _images_per_s(
            lambda m=model: m.train_on_batch(x, y), steps, GPU_BATCH
        )
    return out


# --- Child processes -------------------------------------------------------------------------


def child_main(args: argparse.Namespace) -> int:
    """Entry point of a child process: run one flow, print its result as one JSON line."""
    import warnings

    import keras  # noqa: F401  (imported before measuring, as a notebook's first cell)

    warnings.simplefilter("ignore")
    root = Path(args.root)
    if args.child == "mem_product":
        result = run_mem_product(root, args.mem_steps, args.seed)
    elif args.child == "mem_recipe":
        result = run_mem_recipe(root, args.mem_steps, args.seed)
    elif args.child == "throughput":
        result = run_throughput(root, args.pipe_batches, args.train_steps, args.warmup, args.seed)
    elif args.child == "default":
        result = run_default(root, args.epochs, args.seed, Path(args.bundle_dir))
    elif args.child == "recipe":
        result = run_recipe(root, args.recipe_epochs, args.seed)
    else:
        result = run_gpu(root, args.train_steps, args.warmup, args.seed)
    print(json.dumps(result, default=float))
    return 0


def run_child(flow: str, root: Path, args: argparse.Namespace) -> dict:
    """Run one flow in a fresh Python process (its stderr shows through); return its JSON.

    Raises:
        RuntimeError: if the child failed.
    """
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        flow,
        "--root",
        str(root),
        "--bundle-dir",
        str(args.cache / "bundles" / ("quick_default" if args.quick else "default")),
        *("--seed", str(args.seed), "--epochs", str(args.epochs)),
        *("--recipe-epochs", str(args.recipe_epochs), "--mem-steps", str(args.mem_steps)),
        *("--pipe-batches", str(args.pipe_batches), "--train-steps", str(args.train_steps)),
        *("--warmup", str(args.warmup)),
    ]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    log(f"  [{flow}] starting a child process ...")
    load_before = list(os.getloadavg())  # other work on the machine skews every rate
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"The {flow} child failed (exit {proc.returncode}); see stderr above.")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - start
    result["load_average_before"] = load_before
    log(f"  [{flow}] done in {result['wall_s']:.0f} s")
    return result


# --- Data -----------------------------------------------------------------------------------


def ensure_demo_root(root: Path, scale: str, image_height: int | None, rebuild: bool) -> Path:
    """Write the demo dataset at the product's defaults into ``root`` unless it is there.

    Args:
        root: the data root to create.
        scale: demo scale ("hospital" or "small").
        image_height: image height in pixels; None for the product's default.
        rebuild: write it again even if present.
    """
    if (root / "datacombined.xlsx").is_file() and (root / "demo_ground_truth.json").is_file():
        if not rebuild:
            return root
    root.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "bcp_core", "demo-data", "--out", str(root), "--scale", scale]
    if image_height is not None:
        cmd += ["--image-height", str(image_height)]
    log(f"Writing the {scale} demo dataset to {root} ...")
    start = time.perf_counter()
    subprocess.run([*cmd, "--overwrite", "--json"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    log(f"  done in {time.perf_counter() - start:.0f} s")
    return root


def demo_settings(root: Path) -> dict:
    """The demo's settings as written in its ground-truth file (scale, seed, height, subtlety)."""
    truth = json.loads((root / "demo_ground_truth.json").read_text(encoding="utf-8"))
    return {**truth.get("config", {}), "counts": truth.get("counts", {})}


# --- Report ----------------------------------------------------------------------------------


def summarise(results: dict) -> dict:
    """The headline figures and whether each target is met."""
    out: dict = {}
    if "a" in results:
        prod, rec = results["a"]["product"], results["a"]["recipe"]
        ratio = prod["peak_rss_mb"] / rec["peak_rss_mb"]
        out["a_memory_ratio"] = ratio
        out["a_target_met"] = ratio <= TARGET_MEMORY_RATIO
    if "b" in results:
        out["b_throughput_ratio"] = results["b"]["ratio"]
        out["b_target_met"] = results["b"]["ratio"] >= TARGET_THROUGHPUT_RATIO
    if "c" in results and "default" in results["c"]:
        at = results["c"]["default"]["at_spec85_val_threshold"]
        out["c_default_sensitivity"] = at["sensitivity"]
        out["c_default_specificity"] = at["specificity"]
        out["c_target_met"] = (
            at["sensitivity"] >= TARGET_SENSITIVITY and at["specificity"] >= SPEC_TARGET
        )
    if "c" in results and "recipe" in results["c"]:
        sens = results["c"]["recipe"]["at_argmax"]["sensitivity"]
        out["c_recipe_misses_most_cancers"] = bool(sens < 0.5)
    return out


def _fmt(value, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def format_a(a: dict) -> list[str]:
    """Table lines of (a)."""
    p, r = a["product"], a["recipe"]
    return [
        "(a) peak memory of training, both at 224x224, batch 32, "
        f"{p['steps']} steps, {p['images']} images",
        f"    product (stream, default_cnn, 1 ch)  peak {p['peak_rss_mb']:>7.0f} MB  "
        f"(after imports {p['import_rss_mb']:.0f} MB; fit {_fmt(p['fit_images_per_s'], '.1f')} "
        "images/s)",
        f"    recipe  (array, seed CNN, 3 ch)      peak {r['peak_rss_mb']:>7.0f} MB  "
        f"(array {r['array_gb']:.2f} GB; RSS after loading {r['rss_after_load_mb']:.0f} MB; "
        f"loading {r['load_s']:.0f} s)",
        f"    ratio product / recipe = {p['peak_rss_mb'] / r['peak_rss_mb']:.3f} "
        f"(target <= {TARGET_MEMORY_RATIO:.3f})",
    ]


def format_b(b: dict) -> list[str]:
    """Table lines of (b)."""
    size = "x".join(str(s) for s in b["image_size"])
    return [
        f"(b) throughput at {size}, batch {b['batch_size']}, augmentation {b['augment']}",
        f"    pipeline alone   {b['pipeline_images_per_s']:>7.1f} images/s "
        f"({b['pipeline_batches']} batches)",
        f"    train step alone {b['train_images_per_s']:>7.1f} images/s "
        f"({b['train_steps']} steps of default_cnn)",
        f"    ratio = {b['ratio']:.2f}x (target >= {TARGET_THROUGHPUT_RATIO:.0f}x)",
    ]


def _quality_row(name: str, s: dict, extra: str = "") -> str:
    return (
        f"    {name:<34} {_fmt(s['sensitivity']):>6} {_fmt(s['specificity']):>6} "
        f"{_fmt(s['roc_auc']):>7} {_fmt(s['pr_auc']):>7} {s['tp']:>3}/{s['n_positive']:<3} "
        f"{_fmt(s['test_curve_sensitivity_at_spec']):>9}{extra}"
    )


def format_c(c: dict) -> list[str]:
    """Table lines of (c)."""
    lines = ["(c) quality on the held-out TEST patients (per image)"]
    some = c.get("default") or c.get("recipe")
    t = some["test"]
    lines.append(
        f"    test: {t['images']} images ({t['cancer_images']} cancer) of {t['patients']} "
        f"patients; demo subtlety {c.get('demo', {}).get('subtlety')}"
    )
    lines.append(
        f"    {'model / decision rule':<34} {'sens':>6} {'spec':>6} {'ROC-AUC':>7} {'PR-AUC':>7} "
        f"{'found':>7} {'curve@.85':>9}"
    )
    if "recipe" in c:
        r = c["recipe"]
        lines.append(_quality_row("user recipe, argmax", r["at_argmax"]))
    if "default" in c:
        d = c["default"]
        lines.append(
            _quality_row(
                f"default, bundle thr ({d['threshold_method']} {d['threshold_bundle']:.3f})",
                d["at_bundle_threshold"],
            )
        )
        lines.append(
            _quality_row(
                f"default, val spec>=0.85 thr {d['threshold_spec85_val']:.3f}",
                d["at_spec85_val_threshold"],
            )
        )
    lines.append("    curve@.85 = sensitivity read off the TEST ROC curve at specificity >= 0.85")
    lines.append("                (descriptive only, not a chosen operating point)")
    if "recipe" in c:
        r = c["recipe"]
        lines.append(
            f"    recipe validation (random split by image): accuracy {r['val_accuracy']:.3f}, "
            f"cancer recall {_fmt(r['val_cancer_recall'])} of {r['val_cancer_images']} "
            f"cancer images; {r['val_patients_also_in_train']} validation patients also in "
            f"training; {r['epochs']} epochs in {r['train_s']:.0f} s"
        )
        lines.append(
            f"    recipe per breast: ROC-AUC {_fmt(r['breast']['roc_auc'])}, "
            f"PR-AUC {_fmt(r['breast']['pr_auc'])}"
        )
    if "default" in c:
        d = c["default"]
        lines.append(
            f"    default: {d['epochs_run']} of {d['config']['epochs']} epochs ({d['status']}), "
            f"best epoch {d['best_epoch']}, val ROC-AUC {_fmt(d['val_roc_auc'])}, val PR-AUC "
            f"{_fmt(d['val_pr_auc'])}; trained in {d['train_s']:.0f} s; per breast ROC-AUC "
            f"{_fmt(d['breast']['roc_auc'])}, PR-AUC {_fmt(d['breast']['pr_auc'])}"
        )
    return lines


def format_report(results: dict, summary: dict) -> str:
    """The whole table."""
    lines: list[str] = []
    for key, fmt in (("a", format_a), ("b", format_b), ("c", format_c)):
        if key in results:
            lines += [*fmt(results[key]), ""]
    if "d" in results:
        lines += [f"(d) GPU: {json.dumps(results['d'])}", ""]
    lines.append("targets: " + json.dumps(summary, default=str))
    return "\n".join(lines)


# --- Orchestration ---------------------------------------------------------------------------


def run_sections(root: Path, args: argparse.Namespace) -> dict:
    """Run each asked-for section in child processes; return their results."""
    results: dict = {}
    if "a" in args.only:
        log("(a) memory ...")
        product = run_child("mem_product", root, args)
        recipe = run_child("mem_recipe", root, args)
        results["a"] = {"product": product, "recipe": recipe}
    if "b" in args.only:
        log("(b) throughput ...")
        results["b"] = run_child("throughput", root, args)
    if "c" in args.only:
        log("(c) quality ...")
        c: dict = {"demo": demo_settings(root)}
        c["default"] = run_child("default", root, args)
        if not args.skip_recipe:
            c["recipe"] = run_child("recipe", root, args)
        results["c"] = c
    if args.gpu:
        log("(d) GPU ...")
        results["d"] = run_child("gpu", root, args)
    return results


def write_report(path: Path, results: dict, args: argparse.Namespace, total: float) -> dict:
    """Merge ``results`` into the JSON at ``path`` (other sections are kept) and write it.

    Each invocation is appended to ``runs`` (date, sections, options, run time, load), so a
    file holding sections from several runs says which run measured what.
    """
    report: dict = {}
    if path.is_file():
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            report = {}
    sections = dict(report.get("results", {}))
    for key, value in results.items():
        # (c) run with --skip-recipe keeps the recipe's earlier result (same split, same data).
        keep = sections.get(key, {}) if key == "c" else {}
        sections[key] = {**keep, **value}
    run = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "sections": sorted(results),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "total_s": total,
        "load_average_at_end": list(os.getloadavg()),
    }
    for stale in ("date", "options", "total_s"):  # per run now, under "runs"
        report.pop(stale, None)
    report.update(
        benchmark="bench_train",
        machine={
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        results=sections,
        summary=summarise(sections),
        runs=[*report.get("runs", []), run],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=float), encoding="utf-8")
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--child``, ``--root`` and ``--bundle-dir`` are internal)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--epochs", type=int, default=12, help="epochs of the product's default (c)")
    p.add_argument("--recipe-epochs", type=int, default=RECIPE_EPOCHS, help=argparse.SUPPRESS)
    p.add_argument("--skip-recipe", action="store_true", help="(c) without the user's recipe")
    p.add_argument("--gpu", action="store_true", help="also run (d) (needs a GPU)")
    p.add_argument("--mem-steps", type=int, default=40, help="training steps measured in (a)")
    p.add_argument("--pipe-batches", type=int, default=80, help="pipeline batches timed in (b)")
    p.add_argument("--train-steps", type=int, default=20, help="train steps timed in (b), (d)")
    p.add_argument("--warmup", type=int, default=5, help="untimed batches / steps first")
    p.add_argument("--seed", type=int, default=42, help="seed of splits, weights, shuffles")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder of the data roots")
    p.add_argument("--rebuild", action="store_true", help="write the demo data root again")
    p.add_argument("--quick", action="store_true", help="smoke run: small demo, 2 epochs")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--bundle-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick and not args.child:
        args.epochs, args.recipe_epochs = min(args.epochs, 2), min(args.recipe_epochs, 2)
        args.mem_steps, args.pipe_batches = min(args.mem_steps, 5), min(args.pipe_batches, 8)
        args.train_steps, args.warmup = min(args.train_steps, 4), min(args.warmup, 2)
    if min(args.epochs, args.recipe_epochs, args.mem_steps, args.pipe_batches) < 1:
        p.error("--epochs, --mem-steps and --pipe-batches must be at least 1")
    if args.mem_steps < 2 or args.train_steps < 1:
        p.error("--mem-steps must be at least 2 and --train-steps at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Write or reuse the data root, run the sections, print the table, write the JSON."""
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    start = time.perf_counter()
    if args.quick:
        root = ensure_demo_root(args.cache / "small_train", "small", 512, args.rebuild)
    else:
        root = ensure_demo_root(args.cache / "hospital_full", "hospital", None, args.rebuild)
    results = run_sections(root, args)
    total = time.perf_counter() - start
    out = RESULTS_DIR / ("bench_train_quick.json" if args.quick else "bench_train.json")
    report = write_report(out, results, args, total)
    print()
    print(format_report(results, report["summary"]))
    print(f"\nTotal run time {total:.0f} s; data root {root}.")
    print(f"Wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
