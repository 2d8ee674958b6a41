"""Prediction with a bundle: one image with its heatmap, or many files in streamed batches.

Every file goes through :func:`bcp_core.imaging.preparation.decode_and_prepare`, the path
training's inputs take, driven by the bundle's preprocessing spec; its recorded geometry (flip,
crop, placement) lets a Grad-CAM heatmap be drawn on the decoded image. Results are
:class:`Prediction` objects (:class:`ExplainedPrediction` with the images and heatmaps for one
file). Batch prediction holds one batch of network inputs at a time, never the whole list, and
turns a file that cannot be read, or that does not look like a mammogram
(:func:`bcp_core.imaging.preparation.mammogram_doubt`), into an error result instead of stopping
the run. :class:`ShownCache` keeps what the prediction page shows, within a memory limit.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd

from bcp_core.config import IMAGE_EXTENSIONS, PreprocessSpec
from bcp_core.errors import UserError
from bcp_core.evaluation.aggregation import aggregate_predictions_df
from bcp_core.imaging import tta
from bcp_core.imaging.limits import DEFAULT_MAX_UPLOAD_PIXELS
from bcp_core.imaging.preparation import Geometry, decode_and_prepare, mammogram_doubt
from bcp_core.inference.explain import gradcam_heatmap, heatmap_to_image
from bcp_core.model.bundle import Bundle, load_keras_model
from bcp_core.model.files import MODEL_FILE
from bcp_core.model.metadata import MetadataEncoder
from bcp_core.model.provenance import file_sha256, split_of

#: A file to predict: a path, or (name, bytes) for an upload.
Source = str | os.PathLike | tuple[str, bytes]
ProgressCallback = Callable[[int, int], None]

# --- View and laterality from a file name -----------------------------------------------------

_SIDE = r"(?P<side>left|right|l|r)"
_VIEW = r"(?P<view>cc|mlo)"
_SEP = r"[-_. ]?"
# Letters may not touch the match ("access" is no "cc"); digits and separators may ("P01LCC").
# A view without a side may not sit between two digits: in "rf.2a2e092cc5092" it is a hash.
_SIDE_VIEW = re.compile(rf"(?<![a-z]){_SIDE}{_SEP}{_VIEW}(?![a-z])", re.IGNORECASE)
_VIEW_SIDE = re.compile(rf"(?<![a-z]){_VIEW}{_SEP}{_SIDE}(?![a-z])", re.IGNORECASE)
_VIEW_ONLY = re.compile(rf"(?<![a-z]){_VIEW}(?![a-z])", re.IGNORECASE)
_SIDE_ONLY = re.compile(r"(?<![a-z])(?P<side>left|right)(?![a-z])", re.IGNORECASE)


def parse_view_from_name(name: str) -> dict[str, str]:
    """View (CC / MLO) and laterality (L / R) written in a file name, case-insensitively.

    Accepts "L-CC", "R_MLO", "LCC", "RMLO", "left_cc", "Right MLO", "CC-L", "mlo_right" and the
    like anywhere in the name; a lone "CC"/"MLO" or "left"/"right" gives just that part.

    Returns:
        ``{"view": "CC" | "MLO" | "", "laterality": "L" | "R" | ""}`` ("" when not found).
    """
    stem = Path(str(name)).stem
    match = _SIDE_VIEW.search(stem) or _VIEW_SIDE.search(stem)
    if match:
        return {"view": match["view"].upper(), "laterality": match["side"][0].upper()}
    side = _SIDE_ONLY.search(stem)
    return {"view": _lone_view(stem), "laterality": side["side"][0].upper() if side else ""}


def _lone_view(stem: str) -> str:
    """The first "CC" / "MLO" of ``stem`` that is not wedged between two digits (a hash)."""
    for match in _VIEW_ONLY.finditer(stem):
        before, after = stem[match.start() - 1 : match.start()], stem[match.end() : match.end() + 1]
        if not (before.isdigit() and after.isdigit()):
            return match["view"].upper()
    return ""


# --- Results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """The result for one file: a probability and the decision at a threshold, or an error.

    Attributes:
        file: the file as given (a path, or an upload's name).
        probability: probability of cancer (None for an error).
        label: 1 when probability >= threshold, else 0 (None for an error).
        threshold: the decision threshold used (None for an error).
        view: "CC", "MLO", ... from the DICOM header or the file name; "" when unknown.
        laterality: "L" or "R" likewise; "" when unknown.
        error: one sentence saying why the file could not be read; "" when it was.
        probability_low: the lowest probability of the test-time passes (``probability`` is
            their mean); equal to ``probability`` for one pass, None for an error.
        probability_high: the highest, likewise.
        passes: how many test-time variants were scored (:mod:`bcp_core.imaging.tta`).
        seen_in: "train" or "val" when the file's bytes are those of a file of the model's
            training or validation split (:mod:`bcp_core.model.provenance`), else "".
    """

    file: str
    probability: float | None = None
    label: int | None = None
    threshold: float | None = None
    view: str = ""
    laterality: str = ""
    error: str = ""
    probability_low: float | None = None
    probability_high: float | None = None
    passes: int = 1
    seen_in: str = ""

    @property
    def ok(self) -> bool:
        """True when the file was read and predicted."""
        return not self.error

    @property
    def uncertain(self) -> bool:
        """True when the passes fall on both sides of the threshold (low < threshold <= high)."""
        if not self.ok or self.passes < 2 or self.threshold is None:
            return False
        low, high = self.probability_low, self.probability_high
        return low is not None and high is not None and low < self.threshold <= high

    def to_json(self) -> dict:
        """The command line's JSON object: ``file``, ``probability``, ``label``,
        ``threshold``, ``view`` / ``laterality`` when known, ``seen_in`` when the model saw the
        file in training and, with more than one test-time pass, ``probability_low``,
        ``probability_high``, ``passes`` and ``uncertain``; or ``file`` and ``error``.
        """
        if not self.ok:
            return {"file": self.file, "error": self.error}
        out = {
            "file": self.file,
            "probability": self.probability,
            "label": self.label,
            "threshold": self.threshold,
        }
        if self.view:
            out["view"] = self.view
        if self.laterality:
            out["laterality"] = self.laterality
        if self.seen_in:
            out["seen_in"] = self.seen_in
        if self.passes > 1:
            out["probability_low"] = self.probability_low
            out["probability_high"] = self.probability_high
            out["passes"] = self.passes
            out["uncertain"] = self.uncertain
        return out


#: Columns of :func:`results_df`: the fields of :class:`Prediction`, in order.
RESULT_COLUMNS = tuple(f.name for f in fields(Prediction))


@dataclass(frozen=True)
class ExplainedPrediction:
    """The result for one file shown on its own: the prediction, the images and the heatmaps.

    Attributes:
        prediction: the :class:`Prediction`.
        meta: see :class:`PreparedImage`.
        gray: the decoded image, float32 (h, w) in [0, 1].
        net_input: the network input, float32 (H, W, 1).
        heatmap: Grad-CAM on ``gray``, float32 (h, w) in [0, 1]; None when not asked for.
        input_heatmap: Grad-CAM on the network input, (H, W); None when not asked for.
    """

    prediction: Prediction
    meta: dict
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


@dataclass
class PreparedImage:
    """A decoded image, its network input and how one maps onto the other.

    Attributes:
        name: the file name shown to the user.
        gray: the decoded image, float32 (h, w) in [0, 1] (large JPEGs are decoded at a
            reduced scale, exactly as at training).
        net_input: float32 (H, W, 1), identical to
            :func:`bcp_core.imaging.preparation.preprocess_image` (the training input).
        geometry: flip, crop box and placement
            (see :class:`bcp_core.imaging.preparation.Geometry`).
        meta: ``view`` and ``laterality`` (from the DICOM header, else from the file name, ""
            when unknown) and, for DICOM, ``photometric``, ``bits_stored``, ``manufacturer``,
            ``frames``; never the patient ID.
    """

    name: str
    gray: np.ndarray
    net_input: np.ndarray
    geometry: Geometry
    meta: dict = field(default_factory=dict)

    def heatmap_on_image(self, heatmap: np.ndarray) -> np.ndarray:
        """A network-size heatmap mapped onto :attr:`gray` (see :func:`heatmap_to_image`)."""
        return heatmap_to_image(heatmap, self.geometry)

    def pending(self, file: str, seen_in: str = "") -> Prediction:
        """A :class:`Prediction` for ``file`` with this image's view and laterality, unscored."""
        view, laterality = self.meta["view"], self.meta["laterality"]
        return Prediction(file, view=view, laterality=laterality, seen_in=seen_in)


def prepare_image(
    source: str | os.PathLike | bytes,
    spec: PreprocessSpec,
    name: str = "",
    *,
    max_upload_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS,
) -> PreparedImage:
    """Decode one file (path or bytes, DICOM or not) and prepare it as the bundle's input.

    Args:
        source: a path or the file's bytes.
        spec: the bundle's preprocessing.
        name: the file name of uploaded bytes (its suffix can mark DICOM; its words can name
            the view and laterality).
        max_upload_pixels: the most pixels uploaded bytes may declare in their header (the
            dashboard passes the server's ``BCP_MAX_UPLOAD_PIXELS``); not used for a path.

    Raises:
        UserError: one sentence, for a missing file, a folder, an unreadable image or one that
            does not look like a mammogram (see
            :func:`bcp_core.imaging.preparation.mammogram_doubt`).
    """
    if not isinstance(source, bytes):
        source = Path(source)
        _check_file(source)
    label = name or (source.name if isinstance(source, Path) else "the uploaded image")
    decoded, prepared = decode_and_prepare(source, spec, name, max_upload_pixels=max_upload_pixels)
    doubt = mammogram_doubt(decoded.gray, decoded.colour)
    if doubt:
        raise UserError(f"{label}: this does not look like a mammogram: {doubt}.")
    meta = dict(decoded.meta)
    from_name = parse_view_from_name(label)
    for key in ("view", "laterality"):
        meta[key] = meta.get(key) or from_name[key]
    return PreparedImage(label, decoded.gray, prepared.net_input, prepared.geometry, meta)


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise UserError(f"{path} is a folder without image files ({', '.join(IMAGE_EXTENSIONS)}).")
    if not path.exists():
        raise UserError(f"File not found: {path}.")


def predict_one(
    bundle: Bundle,
    source: str | os.PathLike | bytes,
    name: str = "",
    *,
    threshold: float | None = None,
    with_heatmap: bool = True,
    passes: int = 1,
    metadata: Mapping[str, object] | None = None,
    max_upload_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS,
) -> ExplainedPrediction:
    """Predict one image for the dashboard, with its Grad-CAM heatmap on the decoded image.

    With ``passes`` > 1 the probability is the mean over that many test-time variants
    (:mod:`bcp_core.imaging.tta`) and the result carries their range; the heatmap is always
    that of the input as prepared. A model on image plus workbook columns needs ``metadata``,
    the image's cells by column name (an absent or empty cell counts as missing).
    ``max_upload_pixels``: see :func:`prepare_image`.

    Returns:
        :class:`ExplainedPrediction`: the :class:`Prediction` (``file`` is the file's name),
        the header / file-name ``meta``, the decoded image, the network input and, with
        ``with_heatmap``, the heatmaps on both.

    Raises:
        UserError: for an unreadable image, a threshold outside [0, 1] or a bad number of
            passes.
    """
    cut = _threshold(bundle, threshold)
    passes = _passes(passes)
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
        prepared.meta,
        prepared.gray,
        prepared.net_input,
    )
    if not with_heatmap:
        return result
    heat = gradcam_heatmap(model, prepared.net_input, metadata=values)
    return replace(result, heatmap=prepared.heatmap_on_image(heat), input_heatmap=heat)


@dataclass(frozen=True)
class ShownPrediction:
    """What the prediction page shows of one file, and nothing more (see :class:`ShownCache`).

    Attributes:
        prediction: the :class:`Prediction`.
        image: the decoded image as uint8 (h, w) grey.
        heatmap: Grad-CAM on ``image`` as uint8 (h, w) (255 = the strongest response).
    """

    prediction: Prediction
    image: np.ndarray
    heatmap: np.ndarray

    @classmethod
    def of(cls, result: ExplainedPrediction) -> ShownPrediction:
        """The shown part of an :class:`ExplainedPrediction` made with its heatmap."""
        if result.heatmap is None:
            raise ValueError("A shown prediction needs its heatmap.")
        return cls(result.prediction, _as_uint8(result.gray), _as_uint8(result.heatmap))

    @property
    def nbytes(self) -> int:
        """Bytes held by the images."""
        return self.image.nbytes + self.heatmap.nbytes


def _as_uint8(values: np.ndarray) -> np.ndarray:
    return np.round(np.clip(np.nan_to_num(values), 0.0, 1.0) * 255).astype(np.uint8)


class ShownCache:
    """Shown predictions by key, the least recently used dropped beyond ``max_bytes``.

    Safe to share between threads (one per browser session in Streamlit). An item larger than
    the whole limit is returned to its caller but not kept.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[object, ShownPrediction] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        with self._lock:
            return sum(item.nbytes for item in self._items.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get_or_make(self, key: object, make: Callable[[], ShownPrediction]) -> ShownPrediction:
        """The item kept under ``key``, else ``make()``'s, kept within the limit."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        item = make()  # outside the lock: other sessions are not held up by a prediction
        with self._lock:
            if item.nbytes <= self.max_bytes:
                self._items[key] = item
                self._items.move_to_end(key)
            total = sum(i.nbytes for i in self._items.values())
            while total > self.max_bytes:
                total -= self._items.popitem(last=False)[1].nbytes
        return item


# --- Many files ---------------------------------------------------------------------------------


def expand_inputs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders replaced by their image files (recursively, sorted).

    Hidden files and folders are skipped; only suffixes of ``config.IMAGE_EXTENSIONS`` are
    taken from folders. A missing path, or a folder without images, stays in the list as it is,
    so that :func:`predict_files` reports it as an error entry instead of the run failing.
    """
    out: list[Path] = []
    for given in paths:
        path = Path(given)
        found = _image_files(path) if path.is_dir() else []
        out.extend(found or [path])
    return out


def read_file_list(path: str | os.PathLike) -> list[str]:
    """The paths of a text file, one a line (blank lines and lines starting with # skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UserError(f"File list not found: {path}.") from exc
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _image_files(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(root) / name)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def iter_predictions(
    bundle: Bundle,
    sources: Iterable[Source],
    *,
    batch_size: int = 16,
    threshold: float | None = None,
    on_progress: ProgressCallback | None = None,
    passes: int = 1,
    metadata: Mapping[str, Mapping[str, object]] | None = None,
    max_upload_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS,
) -> Iterator[Prediction]:
    """Like :func:`predict_files`, one result at a time (a batch is predicted at once)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"Batch size must be a whole number of at least 1, got {batch_size!r}.")
    cut = _threshold(bundle, threshold)
    passes = _passes(passes)
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


def predict_files(
    bundle: Bundle,
    sources: Iterable[Source],
    *,
    batch_size: int = 16,
    threshold: float | None = None,
    on_progress: ProgressCallback | None = None,
    passes: int = 1,
    metadata: Mapping[str, Mapping[str, object]] | None = None,
    max_upload_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS,
) -> list[Prediction]:
    """Predict many files in batches; unreadable ones become error results.

    Args:
        bundle: a loaded bundle (its model is loaded here when it was not).
        sources: paths (e.g. from :func:`expand_inputs`) or ``(name, bytes)`` uploads.
        batch_size: images decoded and predicted together; memory holds one batch.
        threshold: decision threshold; default the bundle's saved one.
        on_progress: called as ``on_progress(done, total)`` after each batch.
        passes: test-time variants scored per image (:mod:`bcp_core.imaging.tta`); the
            probability is their mean, ``probability_low`` / ``probability_high`` their range.
        metadata: for a model on image plus workbook columns, each file's cells by column name,
            keyed by the file as given or by its name (see :func:`read_metadata_csv`); a file
            without an entry becomes an error result.
        max_upload_pixels: the most pixels an upload may declare (see :func:`prepare_image`).

    Returns:
        One :class:`Prediction` per source, in order (``file`` as given); for a file that
        could not be read, one whose ``error`` says why.

    Raises:
        UserError: for a threshold outside [0, 1], a bad batch size or number of passes (not
            for bad files).
    """
    return list(
        iter_predictions(
            bundle,
            sources,
            batch_size=batch_size,
            threshold=threshold,
            on_progress=on_progress,
            passes=passes,
            metadata=metadata,
            max_upload_pixels=max_upload_pixels,
        )
    )


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
        scores = np.asarray(model([batch, rows], training=False), dtype=np.float32)
    else:
        scores = np.asarray(model(batch, training=False), dtype=np.float32)
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


def read_metadata_csv(path) -> dict[str, dict[str, object]]:
    """Workbook values for batch prediction from a CSV (a path or a file object): a ``file``
    column (a path or a file name) and one column per workbook column the model takes; empty
    cells count as missing.

    Raises:
        UserError: for a file that cannot be read or has no ``file`` column.
    """
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"Cannot read the metadata CSV: {exc}.") from exc
    if "file" not in table.columns:
        raise UserError("The metadata CSV needs a 'file' column naming each image.")
    rows = table.to_dict("records")
    return {str(r.pop("file")): {k: (v if v != "" else None) for k, v in r.items()} for r in rows}


def _passes(passes: object) -> int:
    try:
        return tta.check_passes(passes)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _threshold(bundle: Bundle, threshold: float | None) -> float:
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


# --- Per breast and per woman -------------------------------------------------------------------

BREAST_COLUMNS = ("breast", "views", "probability", "label")


def breast_results_df(results: Iterable[Prediction]) -> pd.DataFrame:
    """Per-breast and per-woman probabilities from one woman's image results.

    The rule is :func:`bcp_core.evaluation.aggregation.aggregate_predictions_df`'s: the mean
    of a breast's views, then the maximum over the two breasts, as the top screening systems
    score a woman. Results with an error or without a known laterality are left out.

    Args:
        results: :class:`Prediction` objects from :func:`predict_files` for one woman's images.

    Returns:
        DataFrame with columns ``breast`` ("L", "R", then "woman"), ``views`` (the views
        averaged, e.g. "CC+MLO"; for the woman row the breasts, e.g. "L+R"), ``probability``
        (mean of the breast's views; for the woman the maximum over breasts) and ``label``
        (1 when probability >= the results' threshold). Empty when no laterality is known.
    """
    usable = [r for r in results if r.ok and r.laterality in ("L", "R")]
    if not usable:
        return pd.DataFrame(columns=list(BREAST_COLUMNS))
    images = pd.DataFrame(
        {
            "patient_id": "woman",
            "laterality": [r.laterality for r in usable],
            "label": [r.label for r in usable],
            "probability": [r.probability for r in usable],
        }
    )
    breasts = aggregate_predictions_df(images, level="breast", how="mean")
    woman = aggregate_predictions_df(images, level="patient", how="mean_max")
    views = {
        side: "+".join(sorted({r.view or "?" for r in usable if r.laterality == side}))
        for side in breasts["laterality"]
    }
    df = pd.DataFrame(
        {
            "breast": [*breasts["laterality"], "woman"],
            "views": [*views.values(), "+".join(views)],
            "probability": [*breasts["probability"], *woman["probability"]],
        },
        columns=list(BREAST_COLUMNS),
    )
    cut = usable[0].threshold
    assert cut is not None  # usable results are scored
    df["label"] = (df["probability"] >= cut).astype(int)
    return df


def results_df(results: Iterable[Prediction]) -> pd.DataFrame:
    """Prediction results as a table (columns ``RESULT_COLUMNS``; missing values empty)."""
    results = list(results)
    df = pd.DataFrame([r.to_json() for r in results]).reindex(columns=list(RESULT_COLUMNS))
    df["passes"] = [r.passes for r in results]
    single = df["passes"] == 1  # one pass: its range is the probability itself
    df.loc[single, "probability_low"] = df.loc[single, "probability"]
    df.loc[single, "probability_high"] = df.loc[single, "probability"]
    df["label"] = df["label"].astype("Int64")  # 0 / 1, empty where the file failed (not 1.0)
    text = {"file": str, "view": object, "laterality": object, "error": object, "seen_in": object}
    return df.astype(text).fillna({"view": "", "laterality": "", "error": "", "seen_in": ""})
