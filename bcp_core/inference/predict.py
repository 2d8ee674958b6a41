"""Prediction with a bundle: one image with its heatmap, or many files in streamed batches.

Each file is read by :func:`bcp_core.inference.prepared.prepare_image` (the preparation
training's inputs take, driven by the bundle's preprocessing spec) and scored over its
test-time variants (:mod:`bcp_core.imaging.tta`). Results are
:class:`~bcp_core.inference.results.Prediction` objects (:class:`ExplainedPrediction` with the
images and heatmaps for one file). Batch prediction holds one batch of network inputs at a
time, never the whole list, and turns a file that cannot be read, or that does not look like a
mammogram (:func:`bcp_core.imaging.preparation.mammogram_doubt`), into an error result instead
of stopping the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypedDict, Unpack

import numpy as np

from bcp_core.config import PreprocessSpec
from bcp_core.errors import UserError
from bcp_core.imaging import tta
from bcp_core.imaging.limits import DEFAULT_MAX_UPLOAD_PIXELS
from bcp_core.inference.explain import gradcam_heatmap
from bcp_core.inference.inputs import Source
from bcp_core.inference.prepared import prepare_image
from bcp_core.inference.results import Prediction
from bcp_core.model.bundle import Bundle, load_keras_model
from bcp_core.model.columns import MetadataEncoder
from bcp_core.model.files import MODEL_FILE
from bcp_core.model.provenance import file_sha256, split_of
from bcp_core.values import is_whole_number

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class ExplainedPrediction:
    """The result for one file shown on its own: the prediction, the images and the heatmaps.

    Attributes:
        prediction: the :class:`~bcp_core.inference.results.Prediction`.
        header: see :class:`~bcp_core.inference.prepared.PreparedImage`.
        gray: the decoded image, float32 (h, w) in [0, 1].
        net_input: the network input, float32 (H, W, 1).
        heatmap: Grad-CAM on ``gray``, float32 (h, w) in [0, 1]; None when not asked for.
        input_heatmap: Grad-CAM on the network input, (H, W); None when not asked for.
    """

    prediction: Prediction
    header: dict
    gray: np.ndarray
    net_input: np.ndarray
    heatmap: np.ndarray | None = None
    input_heatmap: np.ndarray | None = None


def _scored(pending: Prediction, passes: np.ndarray, cut: float) -> Prediction:
    """``pending`` scored by its passes' probabilities: their mean and range, and the decision
    at ``cut`` (mean >= cut)."""
    probability = float(np.mean(passes, dtype=np.float64)) if len(passes) > 1 else float(passes[0])
    return replace(
        pending,
        probability=probability,
        label=int(probability >= cut),
        threshold=cut,
        probability_low=float(np.min(passes)),
        probability_high=float(np.max(passes)),
        passes=len(passes),
    )


# --- One image ----------------------------------------------------------------------------------


def predict_one(
    bundle: Bundle,
    source: str | os.PathLike | bytes,
    name: str = "",
    *,
    threshold: float | None = None,
    with_heatmap: bool = True,
    passes: int | None = None,
    metadata: Mapping[str, object] | None = None,
    max_upload_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS,
) -> ExplainedPrediction:
    """Predict one image for the dashboard, with its Grad-CAM heatmap on the decoded image.

    With ``passes`` > 1 the probability is the mean over that many test-time variants
    (:mod:`bcp_core.imaging.tta`; None: as many as the bundle's validation images were scored
    with) and the result carries their range; the heatmap is always
    that of the input as prepared. A model on image plus workbook columns needs ``metadata``,
    the image's cells by column name (an absent or empty cell counts as missing).
    ``max_upload_pixels``: see :func:`~bcp_core.inference.prepared.prepare_image`.

    Returns:
        :class:`ExplainedPrediction`: the :class:`Prediction` (``file`` is the file's name),
        the header / file-name ``header``, the decoded image, the network input and, with
        ``with_heatmap``, the heatmaps on both.

    Raises:
        UserError: for an unreadable image, a threshold outside [0, 1] or a bad number of
            passes.
    """
    cut = decision_threshold(bundle, threshold)
    passes = checked_passes(passes, bundle)
    encoder = bundle.metadata_encoder
    if encoder is not None and metadata is None:
        raise UserError(_needs_metadata(encoder, "this image"))
    values = None if encoder is None else encoder.encode_row(metadata or {})
    prepared = prepare_image(source, bundle.spec, name, max_upload_pixels=max_upload_pixels)
    model = _model(bundle)
    scores = _probabilities(
        model, [prepared.net_input], passes, None if values is None else [values]
    )[0]
    seen_in = split_of(bundle.path, file_sha256(source))
    result = ExplainedPrediction(
        _scored(prepared.pending(prepared.name, seen_in), scores, cut),
        prepared.header,
        prepared.gray,
        prepared.net_input,
    )
    if not with_heatmap:
        return result
    heat = gradcam_heatmap(model, prepared.net_input, metadata=values)
    return replace(result, heatmap=prepared.heatmap_on_image(heat), input_heatmap=heat)


# --- Many files ---------------------------------------------------------------------------------


def iter_predictions(
    bundle: Bundle,
    sources: Iterable[Source],
    *,
    batch_size: int = 16,
    threshold: float | None = None,
    on_progress: ProgressCallback | None = None,
    passes: int | None = None,
    metadata: Mapping[str, Mapping[str, object]] | None = None,
    max_upload_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS,
) -> Iterator[Prediction]:
    """Like :func:`predict_files`, one result at a time (a batch is predicted at once)."""
    if not is_whole_number(batch_size) or batch_size < 1:
        raise UserError(f"Batch size must be a whole number of at least 1, got {batch_size!r}.")
    cut = decision_threshold(bundle, threshold)
    passes = checked_passes(passes, bundle)
    items = list(sources)
    model, spec = _model(bundle), bundle.spec
    encoder = bundle.metadata_encoder
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        chunk = [_read_for_batch(item, spec, max_upload_pixels, bundle.path) for item in batch]
        values = None
        if encoder is not None:
            chunk, values = _with_values(chunk, encoder, metadata or {})
        inputs = [x for _, x in chunk if x is not None]
        probabilities = iter(_probabilities(model, inputs, passes, values))
        for pending, net_input in chunk:
            yield pending if net_input is None else _scored(pending, next(probabilities), cut)
        if on_progress is not None:
            on_progress(min(start + batch_size, len(items)), len(items))


class BatchOptions(TypedDict, total=False):
    """The keywords of :func:`predict_files`, as :func:`iter_predictions` takes them."""

    batch_size: int
    threshold: float | None
    on_progress: ProgressCallback | None
    passes: int | None
    metadata: Mapping[str, Mapping[str, object]] | None
    max_upload_pixels: int


def predict_files(
    bundle: Bundle, sources: Iterable[Source], **options: Unpack[BatchOptions]
) -> list[Prediction]:
    """Predict many files in batches; unreadable ones become error results.

    Args:
        bundle: a loaded bundle (its model is loaded here when it was not).
        sources: paths (e.g. from :func:`~bcp_core.inference.inputs.expand_inputs`) or
            ``(name, bytes)`` uploads.
        batch_size: images decoded and predicted together (16); memory holds one batch.
        threshold: decision threshold; default the bundle's saved one.
        on_progress: called as ``on_progress(done, total)`` after each batch.
        passes: test-time variants scored per image (:mod:`bcp_core.imaging.tta`; default
            the bundle's, those its validation images and threshold were scored with); the
            probability is their mean, ``probability_low`` / ``probability_high`` their range.
        metadata: for a model on image plus workbook columns, each file's cells by column name,
            keyed by the file as given or by its name (see
            :func:`~bcp_core.inference.inputs.read_metadata_csv`); a file without an entry
            becomes an error result.
        max_upload_pixels: the most pixels an upload may declare (see
            :func:`~bcp_core.inference.prepared.prepare_image`).

    Returns:
        One :class:`Prediction` per source, in order (``file`` as given); for a file that
        could not be read, one whose ``error`` says why.

    Raises:
        UserError: for a threshold outside [0, 1], a bad batch size or number of passes (not
            for bad files).
    """
    return list(iter_predictions(bundle, sources, **options))


def _read_for_batch(
    item: Source, spec: PreprocessSpec, max_upload_pixels: int, bundle_dir: Path
) -> tuple[Prediction, np.ndarray | None]:
    """An unscored prediction and its network input, or an error result and None; a file
    of the bundle's own splits is marked so."""
    source: str | os.PathLike | bytes
    if isinstance(item, tuple):
        name, source = item
    else:
        name, source = str(item), item
    try:
        upload_name = name if isinstance(source, bytes) else ""
        prepared = prepare_image(source, spec, upload_name, max_upload_pixels=max_upload_pixels)
    except UserError as exc:
        return Prediction(name, error=str(exc)), None
    seen_in = split_of(bundle_dir, file_sha256(source))
    # Keep only the network input: the decoded image can be 50 MB and is not needed here.
    return prepared.pending(name, seen_in), prepared.net_input


def _probabilities(
    model, inputs: list[np.ndarray], passes: int = 1, values: list[np.ndarray] | None = None
) -> np.ndarray:
    """Probabilities (n images, passes): one model call on every variant of every input
    (with ``values``, each image's encoded workbook values go with each of its variants)."""
    if not inputs:
        return np.zeros((0, passes), dtype=np.float32)
    if passes == 1:
        batch = np.stack(inputs).astype(np.float32, copy=False)
    else:
        batch = np.concatenate([tta.variants(x, passes) for x in inputs])
    if values is not None:
        rows = np.repeat(np.stack(values).astype(np.float32), passes, axis=0)
        scores = np.asarray(model.predict_on_batch([batch, rows]), dtype=np.float32)
    else:
        # Keras' traced predict step, without the dataset ``predict`` builds per call: a
        # pretrained backbone's ~150 layers called eagerly cost 4.7x as much (189 vs 40 ms).
        scores = np.asarray(model.predict_on_batch(batch), dtype=np.float32)
    return scores.reshape(len(inputs), passes)


def _needs_metadata(encoder: MetadataEncoder, what: str) -> str:
    return (
        f"This model also takes workbook values ({', '.join(encoder.names)}); none were given "
        f"for {what}. Give them on the prediction page, or with predict --metadata CSV."
    )


def _with_values(chunk, encoder: MetadataEncoder, metadata: Mapping[str, Mapping[str, object]]):
    """The chunk with files lacking workbook values turned into error results, and the
    encoded values of the others, in order."""
    out, values = [], []
    for pending, net_input in chunk:
        if net_input is not None:
            row = metadata.get(pending.file, metadata.get(Path(pending.file).name))
            if row is None:
                pending, net_input = (
                    replace(pending, error=_needs_metadata(encoder, pending.file)),
                    None,
                )
            else:
                values.append(encoder.encode_row(row))
        out.append((pending, net_input))
    return out, values


def checked_passes(passes: object, bundle: Bundle | None = None) -> int:
    """``passes`` as a number of test-time passes (None: ``bundle``'s, those its validation
    images and threshold were scored with; 1 without a bundle), or a one-sentence
    :class:`UserError`."""
    if passes is None:
        passes = bundle.meta.passes if bundle is not None else 1
    try:
        return tta.check_passes(passes)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def decision_threshold(bundle: Bundle, threshold: float | None) -> float:
    """``threshold``, else the bundle's saved one; a :class:`UserError` outside [0, 1]."""
    value = bundle.threshold if threshold is None else threshold
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise UserError(f"A threshold must be between 0 and 1, got {threshold!r}.")
    return value


def _model(bundle: Bundle):
    if bundle.model is None:
        bundle.model = load_keras_model(Path(bundle.path) / MODEL_FILE)
    return bundle.model
