"""Starting a run from a model trained before (``train --start-from``, page 3's "Start from").

A hospital's own films hold few cancers (the user's: 87), and a model trained on other
mammograms (the public films of the real-film benchmark, another site's films) has already
learnt what a breast, a mass and calcifications look like there. A run that starts from it
builds its model as its settings say, then takes every weight of that bundle's model, the
head's too, and trains on from there with its own patient split, epochs, early stopping and
threshold: nothing of the old model's decision carries over but its weights.

The rules, checked before any data is read (:func:`check_start`):

- the bundle is one run of one model on images alone: an average of runs has no single
  network to go on from, and workbook values were encoded on the other data;
- the model, the input size, the head and the preparation's contrast step are the bundle's
  (``train`` takes them from it when they are not given; given and different, the run is
  refused with the bundle's values);
- a bundle still being written is refused (its weights change under the run).

The films that model trained or validated on (its ``split_files.csv``) count as films this
one saw: prediction says so for them as for the run's own, and the run counts the validation
films of its own split that are among them (``StartSource.val_seen``): their scores flatter
the run, which the model card says.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from bcp_core.errors import UserError
from bcp_core.model.files import MODEL_FILE, check_bundle_folder
from bcp_core.model.meta import BundleMeta, StartSource
from bcp_core.model.provenance import file_sha256, merged_split_files, read_split_files

if TYPE_CHECKING:
    import keras

    from bcp_core.config import TrainConfig


def start_meta(path: str | Path) -> BundleMeta:
    """The ``bundle.json`` of a bundle a run can start from.

    Raises:
        UserError: not a bundle, an average of runs, a model on workbook values, or a run
            still training.
    """
    folder = check_bundle_folder(path)  # a mistyped path is answered before scikit-learn loads
    from bcp_core.model.bundle import read_bundle_meta

    meta = read_bundle_meta(folder)
    if meta.members:
        raise UserError(
            f"{folder.name} averages {len(meta.members)} runs, so it has no one network to "
            "start from: start from one of its runs instead."
        )
    if meta.metadata:
        raise UserError(
            f"{folder.name} takes workbook values beside the image, encoded on its own data: "
            "start from a model on images alone."
        )
    if meta.status == "running":
        raise UserError(
            f"{folder.name} is still training, so its weights are still changing: start from "
            "it when its run has ended."
        )
    return meta


def _built_with(meta: BundleMeta) -> dict[str, Any]:
    spec, head = meta.preprocessing, str((meta.training or {}).get("head", "pool"))
    return {
        "model": meta.model_name,
        "image_size": (spec.height, spec.width),
        "head": head,
        "contrast": spec.contrast,
    }


def start_settings(path: str | Path) -> dict[str, Any]:
    """The settings a run starting from the bundle at ``path`` must take: ``model``,
    ``image_size``, ``head`` and ``contrast`` (the CLI fills in those not given; page 3 uses
    them)."""
    return _built_with(start_meta(path))


def check_start(cfg: TrainConfig) -> BundleMeta | None:
    """The bundle ``cfg.start_from`` names, checked against ``cfg``; None when the run starts
    from ImageNet's or random weights.

    Raises:
        UserError: a bundle that cannot be started from (:func:`start_meta`), or one of
            another model, input size, head or contrast step than ``cfg``'s, naming the
            bundle's.
    """
    if not cfg.start_from:
        return None
    folder = Path(cfg.start_from)
    meta = start_meta(folder)
    wanted = _built_with(meta)
    given = {
        "model": cfg.model,
        "image_size": tuple(cfg.image_size),
        "head": cfg.head,
        "contrast": cfg.contrast,
    }
    for key, value in wanted.items():
        if given[key] == value:
            continue
        shown = " x ".join(map(str, value)) if key == "image_size" else value
        mine = " x ".join(map(str, given[key])) if key == "image_size" else given[key]
        what = {
            "model": f"holds a {shown} model",
            "image_size": f"holds a model built for the input size {shown}",
            "head": f"holds a model with the {shown} head",
            "contrast": f"holds a model trained on films prepared with the contrast step {shown}",
        }[key]
        raise UserError(
            f"{folder.name} {what}, and this run asks for {mine}: a run goes on from a model "
            f"as it was built, so choose {shown} (or leave it out: the bundle gives it)."
        )
    return meta


def apply_start(model: keras.Model, cfg: TrainConfig) -> StartSource:
    """Set every weight of ``model`` (built for ``cfg``) to those of the bundle
    ``cfg.start_from``'s model; returns where they came from (``val_seen`` still 0).

    Raises:
        UserError: a bundle that :func:`check_start` refuses, or a model file whose weights
            do not fit ``model`` one by one (another build of the model).
    """
    folder = Path(cfg.start_from)
    meta = check_start(cfg)
    assert meta is not None  # cfg.start_from is set
    from bcp_core.model.bundle import load_keras_model

    source_file = folder / MODEL_FILE
    digest = file_sha256(source_file)
    source = load_keras_model(source_file)
    mine, theirs = model.weights, source.weights
    misfit = len(mine) != len(theirs) or any(
        tuple(a.shape) != tuple(b.shape) for a, b in zip(mine, theirs, strict=False)
    )
    if misfit:
        raise UserError(
            f"The model in {folder.name} does not fit a {cfg.model} built for this run (its "
            f"{len(theirs)} weight arrays against {len(mine)}, or their shapes differ): it was "
            "written by another version of this software. Start from a model trained with "
            "this one, or from ImageNet's weights."
        )
    model.set_weights(source.get_weights())
    return StartSource(
        bundle=folder.name,
        name=meta.label.name,
        model_sha256=digest,
        data_fingerprint=meta.data_fingerprint,
        saved=meta.saved,
        val_seen=0,
    )


def with_start_files(seen: pd.DataFrame, cfg: TrainConfig) -> tuple[pd.DataFrame, int]:
    """``seen`` (the run's own ``split_files`` table) with the files the start bundle trained
    or validated on added as it recorded them (a film that shaped the weights or chose their
    epoch; "train" wins), and how many of the run's validation files are among those. A start
    bundle without the table adds none."""
    theirs = read_split_files(cfg.start_from)
    if theirs is None:
        return seen, 0
    val_seen = int(seen.loc[seen["split"] == "val", "sha256"].isin(set(theirs["sha256"])).sum())
    return merged_split_files(seen, theirs), val_seen
