"""The model bundle: a folder with the model and everything needed to use it the same way.

    model.keras            Keras 3 native format, loaded with safe_mode on and without compiling
    bundle.json            format version, model name, preprocessing, threshold and how it was
                           chosen, training config, split, data fingerprint, metrics, versions,
                           the run's name and note (optional, editable after the run)
    history.csv            per-epoch metrics
    val_predictions.csv    file, patient_id, label, probability, laterality, view (validation)
    MODEL_CARD.md          the model card (bcp_core.model.card): intended use, data, metrics with
                           intervals, the threshold and its history, known limits; rewritten
                           with every threshold save
    split_files.csv        the SHA-256 of every training and validation file (provenance)
    NOTICE                 only for a model that started from packaged pretrained weights: their
                           attribution and licence (bcp_core.model.pretrained.notice_text),
                           which a model trained from them must keep

Every write goes to a temporary name first and is renamed into place, so a crash never leaves
half a bundle: the folder holds either the previous bundle or the new one.
"""

from __future__ import annotations

import errno
import json
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from bcp_core.config import PreprocessSpec
from bcp_core.errors import UserError
from bcp_core.evaluation.result import EvaluationResult
from bcp_core.fileio import (
    folder_lock,
    json_text,
    recover_dir,
    staged_dir,
    write_files_atomic,
    write_json_atomic,
)
from bcp_core.model.card import CARD_FILE, SUBGROUPS_KEY, render_card
from bcp_core.model.columns import MetadataEncoder
from bcp_core.model.files import (
    HISTORY_FILE,
    META_FILE,
    MODEL_FILE,
    NOTICE_FILE,
    check_bundle_folder,
)
from bcp_core.model.meta import BundleMeta, RunLabel, now_iso
from bcp_core.model.provenance import SPLIT_FILES
from bcp_core.values import is_number

VAL_FILE = "val_predictions.csv"
VAL_COLUMNS = ("file", "patient_id", "label", "probability", "laterality", "view")


@dataclass
class Bundle:
    """A loaded bundle (the Keras model is loaded only when asked for)."""

    path: Path
    meta: BundleMeta
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    val_predictions: pd.DataFrame = field(default_factory=pd.DataFrame)
    model: object | None = None

    @property
    def spec(self) -> PreprocessSpec:
        return self.meta.preprocessing

    @property
    def threshold(self) -> float:
        return self.meta.threshold.value

    @property
    def metadata_encoder(self) -> MetadataEncoder | None:
        """How the workbook values this model takes beside the image are encoded; None for
        an image-only model."""
        return MetadataEncoder.from_json(self.meta.metadata) if self.meta.metadata else None


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__}


def _write_error(target: Path, exc: OSError) -> UserError:
    """One sentence for a failed write, with what to do for the usual causes."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        advice = "free some disk space, or choose a folder on another disk, and try again"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "choose a folder you can write to"
    else:
        advice = "check the folder and try again"
    return UserError(f"Cannot write the bundle to {target} ({reason}); {advice}.")


def notice_for(meta: BundleMeta) -> str | None:
    """The ``NOTICE`` a bundle and its export carry: the attribution of the packaged pretrained
    weights its model started from (:attr:`BundleMeta.from_packaged_weights`); None for a model
    from scratch or from other weights."""
    from bcp_core.model.pretrained import PACKAGES, notice_text

    if not meta.from_packaged_weights or meta.model_name not in PACKAGES:
        return None
    return notice_text(meta.model_name)


def save_bundle(
    path: str | Path,
    model,
    meta: BundleMeta,
    history: pd.DataFrame,
    val_predictions: pd.DataFrame,
    split_files: pd.DataFrame | None = None,
    card_result: EvaluationResult | None = None,
) -> Path:
    """Write a bundle atomically and return its path.

    Args:
        path: the bundle folder (created, or replaced as a whole).
        model: a built keras.Model.
        meta: the bundle's metadata; format version, library versions and date are set here.
        history: per-epoch metrics.
        val_predictions: columns ``VAL_COLUMNS``.
        split_files: the hashes of the files of the training and validation splits
            (:mod:`bcp_core.model.provenance`); none written when None.
        card_result: the card's evaluation of ``val_predictions`` when already made (saves
            its bootstrap); made from the file as read back otherwise.

    A model that started from packaged pretrained weights also gets their ``NOTICE``
    (:func:`notice_for`), written with the rest.

    Raises:
        UserError: when the parent folder cannot be written (missing, read-only, disk full).
    """
    target = Path(path)
    meta = meta.stamped(_versions())
    try:
        with staged_dir(target) as tmp:
            model.save(tmp / MODEL_FILE)
            history.to_csv(tmp / HISTORY_FILE, index=False)
            val_predictions.reindex(columns=list(VAL_COLUMNS)).to_csv(tmp / VAL_FILE, index=False)
            if split_files is not None:
                split_files.to_csv(tmp / SPLIT_FILES, index=False)
            notice = notice_for(meta)
            if notice is not None:
                (tmp / NOTICE_FILE).write_text(notice, encoding="utf-8")
            write_json_atomic(tmp / META_FILE, meta.to_json())
            # From the file as read back, so the card equals the one shown for the bundle.
            card = render_card(
                meta, _read_csv(tmp / VAL_FILE), result=card_result, name=target.name
            )
            (tmp / CARD_FILE).write_text(card, encoding="utf-8")
    except OSError as exc:
        raise _write_error(target, exc) from exc
    return target


def resolve_bundle_path(root: str | Path, name: str | Path) -> Path:
    """The bundle ``name`` inside the bundles folder ``root``, never a folder outside it.

    ``name`` is a folder name or a relative path below ``root``. A name that leaves ``root``
    (``../other``, an absolute path elsewhere, or a symbolic link pointing outside) is refused,
    so that a bundle name typed or stored somewhere cannot open files the user did not mean to.

    Raises:
        UserError: for an empty name or one that resolves outside ``root``.
    """
    if not str(name).strip():
        raise UserError("No bundle name given; pick a bundle from the bundles folder.")
    base = Path(root).expanduser().resolve()
    resolved = (base / name).resolve()
    if resolved == base or not resolved.is_relative_to(base):
        raise UserError(
            f"The bundle {str(name)!r} lies outside the bundles folder {base}; only bundles "
            "inside that folder can be opened (copy the bundle folder into it)."
        )
    return resolved


def delete_bundle(root: str | Path, name: str) -> Path:
    """Delete the bundle ``name`` of the bundles folder ``root`` (never a folder outside it,
    never a folder that is not a bundle).

    Raises:
        UserError: for a name outside ``root``, a folder without ``bundle.json``, or a failure.
    """
    folder = resolve_bundle_path(root, name)
    if not (folder / META_FILE).is_file():
        raise UserError(f"{Path(name).name} is not a bundle (it has no {META_FILE}).")
    try:
        shutil.rmtree(folder)
    except OSError as exc:
        raise UserError(f"The bundle {folder.name} could not be deleted ({exc.strerror}).") from exc
    return folder


def read_bundle_meta(path: str | Path) -> BundleMeta:
    """Read and check ``bundle.json``.

    Raises:
        UserError: for a missing folder or file, malformed JSON, or a newer format.
    """
    folder = Path(path)
    with _reading(folder):
        return _read_meta(folder)


def load_bundle(path: str | Path, *, with_model: bool = True) -> Bundle:
    """Load a bundle; the model with Keras safe_mode on (no arbitrary code) and uncompiled.

    Raises:
        UserError: for anything that makes the folder unusable, in one sentence.
    """
    folder = Path(path)
    with _reading(folder):  # all files from one version, even while training saves a new one
        meta = _read_meta(folder)
        history = _read_csv(folder / HISTORY_FILE)
        val = _read_csv(folder / VAL_FILE)
        bundle = Bundle(path=folder, meta=meta, history=history, val_predictions=val)
        if with_model:
            bundle.model = load_keras_model(folder / MODEL_FILE)
    return bundle


@contextmanager
def _reading(folder: Path) -> Iterator[None]:
    """Finish an interrupted replacement of ``folder``, then hold its parent's shared lock, so a
    save in progress neither hides the folder nor swaps its files mid-read."""
    if not folder.parent.is_dir():
        yield
        return
    recover_dir(folder)
    with folder_lock(folder.parent, shared=True):
        yield


def _read_meta(folder: Path) -> BundleMeta:
    check_bundle_folder(folder)
    meta_path = folder / META_FILE
    try:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{META_FILE} in {folder} is not valid JSON ({exc}).") from exc
    return BundleMeta.from_json(data, where=f"{META_FILE} in {folder}")


def load_keras_model(path: Path):
    """Load ``model.keras`` safely; custom or Lambda layers are refused with a sentence."""
    import keras

    if not zipfile.is_zipfile(path):
        raise UserError(
            f"The model file {MODEL_FILE} in {path.parent.name} is damaged or not a Keras model "
            "(it is not a .keras archive); train the model again or copy the whole bundle again."
        )
    try:
        # compile=False: a bundle is for inference; it also avoids Keras' warning that
        # "compiled metrics have yet to be built".
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types for bad or unsafe files
        text = str(exc)
        if "safe_mode" in text or "Lambda" in text or "Could not locate" in text:
            raise UserError(
                f"The model in {path.parent.name} is refused: it holds custom code (a Lambda "
                "layer or a custom object), and bundles are loaded in safe mode, which never runs "
                "code from a file. Use a bundle trained with this software."
            ) from exc
        raise UserError(
            f"Cannot load the model in {path.parent.name}: {str(exc).splitlines()[0][:300]}"
        ) from exc


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame()
    try:
        text = {"patient_id": str, "laterality": str, "view": str, "file": str}
        df = pd.read_csv(path, dtype=text)
        return df.fillna({c: "" for c in text if c in df.columns})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return pd.DataFrame()


def update_threshold(
    path: str | Path, value: float, method: str, note: str = "", by: str = ""
) -> BundleMeta:
    """Store a new decision threshold in a bundle's ``bundle.json`` (atomic), keeping the
    earlier ones in its history; ``by`` names who saved it. The model card is rewritten with
    it (both files written in full first, then renamed into place one after the other).

    Raises:
        UserError: for a value outside [0, 1] or an unreadable bundle.
    """
    if not is_number(value) or not 0.0 <= float(value) <= 1.0:
        raise UserError(f"A threshold must be a number between 0 and 1, got {value!r}.")
    folder = Path(path)
    meta = read_bundle_meta(folder).with_threshold(float(value), method, note, by)
    return _rewrite_meta(folder, meta)


def _rewrite_meta(folder: Path, meta: BundleMeta) -> BundleMeta:
    """Write ``meta`` as the bundle's ``bundle.json`` with the model card made from it (both
    written in full first, then renamed into place one after the other)."""
    card = render_card(meta, _read_csv(folder / VAL_FILE), name=folder.name)
    try:
        write_files_atomic(folder, {META_FILE: json_text(meta.to_json()), CARD_FILE: card})
    except OSError as exc:
        raise _write_error(folder, exc) from exc
    return meta


def update_label(path: str | Path, name: str, note: str) -> BundleMeta:
    """Give a bundle's run the name and note a person typed (:class:`RunLabel`: cleaned, and
    replacing the earlier ones; empty text removes one), keeping every other key of its
    ``bundle.json``; written like a threshold save (``bundle.json`` and the model card in full
    first, then renamed into place one after the other).

    Raises:
        UserError: a name or note over its limit, or a bundle that cannot be read or written.
    """
    label = RunLabel(name, note)
    folder = Path(path)
    return _rewrite_meta(folder, replace(read_bundle_meta(folder), label=label))


#: The most characters of the reason an analyst gives for approving a model for viewers.
MAX_REASON_CHARS = 300


def approve_for_viewers(path: str | Path, by: str, reason: str) -> BundleMeta:
    """Record that ``by`` lets viewers use this bundle although it is no better than chance on
    its validation patients, and why (kept in ``bundle.json`` and on the model card).

    Raises:
        UserError: without a reason, with one over :data:`MAX_REASON_CHARS` characters, or for
            a bundle that cannot be read or written.
    """
    text = " ".join("".join(c if c.isprintable() else " " for c in str(reason)).split())
    if not text:
        raise UserError("Say why viewers may use a model that is no better than chance.")
    if len(text) > MAX_REASON_CHARS:
        raise UserError(
            f"A reason may be at most {MAX_REASON_CHARS} characters long; this one has {len(text)}."
        )
    folder = Path(path)
    approval = {"by": str(by) or "anonymous", "time": now_iso(), "reason": text}
    return _rewrite_meta(folder, replace(read_bundle_meta(folder), viewer_approval=approval))


def record_subgroups(path: str | Path, table: dict, by: str = "") -> BundleMeta:
    """Keep a subgroup table (``SubgroupTable.to_json()``) in the bundle, by its column, and
    rewrite the model card with it (both files written in full, then renamed into place).

    Raises:
        UserError: for a table without a column, or a bundle that cannot be read or written.
    """
    column = table.get("column") if isinstance(table, dict) else None
    if not isinstance(column, str) or not column:
        raise UserError("A subgroup table needs the column it groups by.")
    folder = Path(path)
    meta = read_bundle_meta(folder)
    tables = dict(meta.extra.get(SUBGROUPS_KEY) or {})
    tables[column] = {**table, "recorded": now_iso(), "by": by}
    return _rewrite_meta(folder, replace(meta, extra={**meta.extra, SUBGROUPS_KEY: tables}))


def bundle_card(bundle: Bundle, result: EvaluationResult | None = None) -> str:
    """The bundle's model card for display, made from its ``bundle.json`` and validation
    predictions (the text ``MODEL_CARD.md`` holds); nothing is read from or written to
    ``MODEL_CARD.md``, so a bundle written before cards existed gets one without a write, and a
    card file edited or brought from elsewhere is never rendered. ``result``: the per-image
    evaluation of the validation predictions when already computed (saves the bootstrap)."""
    return render_card(
        bundle.meta, bundle.val_predictions, result=result, name=Path(bundle.path).name
    )


#: The training settings the runs table shows as columns (from ``bundle.json``'s training).
RUN_SETTINGS = ("epochs", "image_size", "learning_rate", "batch_size", "weights")
#: How much of a run's note the runs table shows (on one line).
NOTE_PREVIEW_CHARS = 60


def _preview(note: str) -> str:
    """A note on one line, cut to :data:`NOTE_PREVIEW_CHARS` with an ellipsis."""
    flat = " ".join(note.split())
    return flat if len(flat) <= NOTE_PREVIEW_CHARS else flat[: NOTE_PREVIEW_CHARS - 1] + "…"


def _setting_text(value: object) -> object:
    """A setting as one table cell: an image size as ``160 x 128``, a weights path by name."""
    if isinstance(value, list | tuple):
        return " x ".join(str(v) for v in value)
    if isinstance(value, str) and ("/" in value or "\\" in value):
        return Path(value).name
    return "" if value is None else value


def list_bundles_df(root: str | Path, matching: str = "") -> pd.DataFrame:
    """Every bundle directly below ``root`` with its key facts, newest first.

    Args:
        root: the bundles folder.
        matching: keep only the bundles whose folder name, run name or note (the whole note)
            contains this text, ignoring case; "" keeps every bundle.

    Returns:
        DataFrame with columns ``bundle``, ``name`` and ``note`` (the run's, the note on one
        line and cut to :data:`NOTE_PREVIEW_CHARS`; "" when none), ``model``, ``status``,
        ``saved``, ``best_epoch`` (the epoch whose weights the bundle keeps; none for a model
        averaging runs), ``runs`` (how many runs its model averages: 1 for a single run),
        ``epochs`` (asked for), ``image_size``, ``learning_rate``, ``batch_size``, ``weights``,
        ``roc_auc``, ``pr_auc``, ``vs_chance`` (whether the validation ROC-AUC interval lies
        above 0.5; "" for a bundle that does not record it), ``sensitivity``, ``specificity``,
        ``threshold``, ``path``; folders that are not readable bundles are left out.
    """
    columns = [
        "bundle",
        "name",
        "note",
        "model",
        "status",
        "saved",
        "best_epoch",
        "runs",
        *RUN_SETTINGS,
        "roc_auc",
        "pr_auc",
        "vs_chance",
        "sensitivity",
        "specificity",
        "threshold",
        "path",
    ]
    rows = []
    base, wanted = Path(root), matching.strip().casefold()
    for folder in sorted(base.iterdir()) if base.is_dir() else []:
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        try:
            resolve_bundle_path(base, folder.name)  # a link to a folder elsewhere is no bundle here
            meta = read_bundle_meta(folder)
        except UserError:
            continue
        label = meta.label
        texts = (folder.name, label.name, label.note)
        if wanted and not any(wanted in text.casefold() for text in texts):
            continue
        m, settings = meta.metrics, meta.training or {}
        shown = {key: _setting_text(settings.get(key)) for key in RUN_SETTINGS}
        rows.append({
            "bundle": folder.name, "name": label.name, "note": _preview(label.note),
            "model": meta.model_name, "status": meta.status,
            "saved": meta.saved, "best_epoch": m.best_epoch, "runs": len(meta.members) or 1,
            **shown, "roc_auc": m.roc_auc,
            "pr_auc": m.pr_auc, "vs_chance": m.chance, "sensitivity": m.sensitivity,
            "specificity": m.specificity,
            "threshold": meta.threshold.value, "path": str(folder),
        })  # fmt: skip
    df = pd.DataFrame(rows, columns=columns)
    return df.sort_values("saved", ascending=False, ignore_index=True)
