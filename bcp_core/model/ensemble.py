"""Several runs of one model on one patient split, as one model: the mean of their probabilities.

Two runs of one recipe that differ only in their training seed end at different weights and
rank the same films differently; their mean ranks more steadily than either (docs/training.md,
"Averaging runs", has the figures). :func:`combine_bundles` makes such a mean a bundle like any
other:

- the runs must be image-only runs of one model, read the same way (one preprocessing, one
  number of test-time passes), trained on the same data and validated on the same patients
  (``train --split-seed``); anything else is refused in one sentence before anything is written;
- the model file holds one Keras model: each run's network, nested as ``member_1``,
  ``member_2``, ..., and the mean of their outputs, so prediction, test-time passes, export and
  the Ray paths use it unchanged; Grad-CAM shows the mean of the members' maps
  (:func:`bcp_core.inference.explain.gradcam_heatmap`);
- its validation predictions are the mean of the runs' own (each scored with the same passes,
  so they equal the combined model's), and its threshold is chosen on them, by the first run's
  threshold method, as a training run's is: the threshold explorer, the card and the viewer gate
  read it as any bundle;
- ``bundle.json`` names the runs (``members``) with their seeds, kept epochs and own ROC-AUCs;
  ``history.csv`` holds their epochs one after another, with a ``member`` column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from bcp_core.config import MAX_MEMBERS
from bcp_core.errors import UserError
from bcp_core.model.bundle import (
    VAL_COLUMNS,
    Bundle,
    load_bundle,
    load_keras_model,
    save_bundle,
)
from bcp_core.model.files import MODEL_FILE
from bcp_core.model.layers import MEMBER_PREFIX
from bcp_core.model.meta import MemberInfo, RunLabel, ValidationMetrics
from bcp_core.model.provenance import merged_split_files, read_split_files
from bcp_core.model.resources import TrainingLimits, check_bundle_quota
from bcp_core.model.training import scored_on_validation

MIN_MEMBERS = 2
#: The validation predictions' columns that name an image (the members must agree on them).
_IMAGE_KEYS = ["file", "patient_id"]


@dataclass(frozen=True)
class CombineResult:
    """What :func:`combine_bundles` wrote (the bundle holds the rest)."""

    bundle: Path
    members: tuple[MemberInfo, ...]
    metrics: ValidationMetrics
    threshold: float

    def to_json(self) -> dict:
        """The ``ensemble --json`` object."""
        m = self.metrics
        return {
            "bundle": str(self.bundle),
            "members": [member.to_json() for member in self.members],
            "val_roc_auc": _finite(m.roc_auc),
            "val_pr_auc": _finite(m.pr_auc),
            "val_sensitivity": _finite(m.sensitivity),
            "val_specificity": _finite(m.specificity),
            "threshold": self.threshold,
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def check_members(bundles: list[Bundle]) -> None:
    """Refuse runs that cannot be averaged into one model, naming the first reason.

    Raises:
        UserError: too few or too many runs, or runs that differ in what the mean needs.
    """
    if not MIN_MEMBERS <= len(bundles) <= MAX_MEMBERS:
        raise UserError(
            f"Choose {MIN_MEMBERS} to {MAX_MEMBERS} runs to average; got {len(bundles)}."
        )
    names = [b.path.name for b in bundles]
    if len({b.path.resolve() for b in bundles}) < len(bundles):
        raise UserError("A run is chosen twice; choose each run once.")
    first = bundles[0]
    for name, b in zip(names, bundles):
        if b.meta.members:
            raise UserError(f"{name} already averages several runs; choose single runs.")
        if b.meta.metadata:
            raise UserError(
                f"{name} also takes workbook columns; only image-only runs can be averaged."
            )
        if b.meta.status == "running":
            raise UserError(
                f"{name} is a run that has not finished (still training, or interrupted); "
                "average finished runs."
            )
        if b.val_predictions.empty:
            raise UserError(f"{name} has no validation predictions; train it again.")
    for name, b in zip(names[1:], bundles[1:]):
        differs = _first_difference(first, b)
        if differs:
            raise UserError(
                f"{name} and {names[0]} differ in {differs}, so they cannot be averaged: "
                "choose runs of one model on one data root, trained with the same split seed "
                "and validation share (train --split-seed)."
            )


def _first_difference(a: Bundle, b: Bundle) -> str:
    """What keeps two runs apart ("" when nothing does)."""
    if a.meta.model_name != b.meta.model_name:
        return f"model ({a.meta.model_name} / {b.meta.model_name})"
    if a.spec != b.spec:
        return "preprocessing (image size, crop, orientation or contrast step)"
    if a.meta.passes != b.meta.passes:
        return f"test-time passes ({a.meta.passes} / {b.meta.passes})"
    if a.meta.data_fingerprint != b.meta.data_fingerprint:
        return "training data"
    keys_a, keys_b = (set(map(tuple, x.val_predictions[_IMAGE_KEYS].astype(str).to_numpy()))
                      for x in (a, b))  # fmt: skip
    if keys_a != keys_b:
        return "validation patients"
    return ""


def mean_predictions(bundles: list[Bundle]) -> pd.DataFrame:
    """The runs' validation predictions, one row per image, ``probability`` their mean.

    Raises:
        UserError: runs that disagree on an image's label.
    """
    base = bundles[0].val_predictions.reindex(columns=list(VAL_COLUMNS)).copy()
    base[_IMAGE_KEYS] = base[_IMAGE_KEYS].astype(str)
    probabilities = []
    for b in bundles:
        own = b.val_predictions.astype({key: str for key in _IMAGE_KEYS})
        aligned = base[_IMAGE_KEYS].merge(
            own[[*_IMAGE_KEYS, "label", "probability"]], on=_IMAGE_KEYS, how="left"
        )
        if (aligned["label"].to_numpy() != base["label"].to_numpy()).any():
            raise UserError(
                f"{b.path.name} and {bundles[0].path.name} disagree on the label of some "
                "validation images; they were not trained on the same data."
            )
        probabilities.append(aligned["probability"].to_numpy(dtype=np.float64))
    base["probability"] = np.mean(probabilities, axis=0)
    return base


def average_model(models: list[keras.Model]) -> keras.Model:
    """One model whose output is the mean of ``models``' outputs (each nested as
    ``member_1``, ``member_2``, ... and fed the same input)."""
    image = keras.Input(shape=tuple(models[0].inputs[0].shape[1:]), name="image")
    outputs = [
        keras.Model(m.inputs[0], m.outputs[0], name=f"{MEMBER_PREFIX}{k}")(image)
        for k, m in enumerate(models, start=1)
    ]
    mean = keras.layers.Average(name="probability_mean", dtype="float32")(outputs)
    return keras.Model(image, mean, name="mean_of_runs")


def member_info(bundle: Bundle, name: str | None = None) -> MemberInfo:
    """How the combined bundle names one of its runs (``name``, default its folder's)."""
    seed = (bundle.meta.training or {}).get("seed")
    epoch = bundle.meta.metrics.best_epoch
    return MemberInfo(
        bundle=bundle.path.name if name is None else name,
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        best_epoch=epoch if isinstance(epoch, int) else None,
        val_roc_auc=float(bundle.meta.metrics.roc_auc),
    )


def combined_history(bundles: list[Bundle]) -> pd.DataFrame:
    """The runs' epochs one after another, the first column ``member`` (1, 2, ...)."""
    parts = [
        b.history.assign(member=k)[["member", *b.history.columns]]
        for k, b in enumerate(bundles, start=1)
        if not b.history.empty
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def seen_files(bundles: list[Bundle]) -> pd.DataFrame | None:
    """The files any of the runs trained or validated on (their ``split_files.csv`` tables
    together, "train" where they differ); None when no run has the table. Runs of one split
    share their own files, but runs that went on from other models add those models' films."""
    tables = [t for t in (read_split_files(b.path) for b in bundles) if t is not None]
    return merged_split_files(*tables) if tables else None


def combine_bundles(
    paths: list[str | Path],
    out: str | Path,
    *,
    label: RunLabel | None = None,
    limits: TrainingLimits | None = None,
) -> CombineResult:
    """Average the runs at ``paths`` into one bundle at ``out`` (see the module's notes).

    Args:
        paths: the runs' bundle folders, 2 to 5.
        out: the new bundle's folder (written as a whole, or not at all); not one of ``paths``.
        label: its name and note; default "Mean of N runs" and the runs' folder names.
        limits: what the server lets the bundles folder hold (the entry points read it from
            the settings; None: the defaults); the new bundle takes about the runs' model
            files together.

    Raises:
        UserError: an unreadable bundle, runs that cannot be averaged, an ``out`` that is
            one of them, a full bundles folder, or one that cannot be written.
    """
    out = Path(out)
    if any(out.resolve() == Path(p).resolve() for p in paths):
        raise UserError(f"{out} is one of the runs; write the averaged model to a new folder.")
    bundles = [load_bundle(p, with_model=False) for p in paths]
    check_members(bundles)
    need = sum((b.path / MODEL_FILE).stat().st_size for b in bundles)
    check_bundle_quota(out, limits or TrainingLimits(), need_bytes=need)
    return write_average(bundles, out, label=label)


def write_average(
    bundles: list[Bundle],
    out: Path,
    *,
    label: RunLabel | None = None,
    names: list[str] | None = None,
    training: dict | None = None,
    status: str = "completed",
) -> CombineResult:
    """Write the mean of ``bundles`` (checked by :func:`check_members`; room already checked)
    as one bundle at ``out``.

    Args:
        label: its name and note; default "Mean of N runs" and the runs' names.
        names: how ``members`` names the runs; default their folder names.
        training: the settings ``bundle.json`` records; default the first run's.
        status: how the run that made it ended (``bundle.json``'s ``status``).
    """
    predictions = mean_predictions(bundles)
    first = bundles[0]
    method = str((first.meta.training or {}).get("threshold_method", first.meta.threshold.method))
    threshold, metrics = scored_on_validation(predictions, method, None)
    members = tuple(
        member_info(b, None if names is None else names[k]) for k, b in enumerate(bundles)
    )
    if label is None:
        label = RunLabel(
            f"Mean of {len(bundles)} runs",
            "Averages " + ", ".join(m.bundle for m in members) + ".",
        )
    meta = replace(
        first.meta,
        threshold=threshold,
        metrics=metrics,
        status=status,
        label=label,
        viewer_approval=None,
        members=members,
        training=first.meta.training if training is None else training,
        # the model they went on from, when all went on from the same one (else each run's
        # own bundle names its start)
        started_from=first.meta.started_from
        if all(b.meta.started_from == first.meta.started_from for b in bundles)
        else None,
        extra={},
    )
    model = average_model([load_keras_model(b.path / MODEL_FILE) for b in bundles])
    save_bundle(out, model, meta, combined_history(bundles), predictions, seen_files(bundles))
    return CombineResult(out, members, metrics, threshold.value)
