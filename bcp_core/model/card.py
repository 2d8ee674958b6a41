"""The model card: one markdown page saying what a bundle is, how good it is and what it is not.

:func:`render_card` is pure: the card is a function of ``bundle.json`` (:class:`BundleMeta`) and
the validation predictions, nothing else (no clock, seeded bootstrap), so the card the dashboard
renders for a bundle is the same text as the ``MODEL_CARD.md`` written with it, and a bundle
written before cards existed gets the same card on display without anything being written.
The bundle writer (:mod:`bcp_core.model.bundle`) writes it with every bundle and rewrites it
with every threshold save or restore. Every string that comes from the user's data or from
the bundle's file (model and class names, notes, methods, who saved, settings) passes
:func:`bcp_core.output_safety.plain_markdown`, because Streamlit renders the card as markdown.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bcp_core.config import CLAHE_CLIP, CLAHE_TILES, MODEL_SPECS
from bcp_core.errors import UserError
from bcp_core.evaluation.result import EvaluationResult, evaluate
from bcp_core.formatting import interval, number, percent, with_interval
from bcp_core.model.meta import BundleMeta, ThresholdChoice
from bcp_core.output_safety import plain_markdown as md

CARD_FILE = "MODEL_CARD.md"
NOTICE = "Research tool, not a medical device."
#: Bootstrap resamples of the card's intervals (patients resampled; seed 0, as the dashboard).
CARD_N_BOOT = 1000

#: The preparation's contrast step (PreprocessSpec.contrast) in words.
_CONTRAST_WORDS = {
    "none": "as decoded",
    "clahe": f"equalised locally (CLAHE: {CLAHE_TILES} x {CLAHE_TILES} tiles, clip limit "
    f"{CLAHE_CLIP:g})",
}

KNOWN_LIMITS = (
    "Figures measured on the synthetic demo dataset say nothing about real mammograms.",
    "Images from other devices, vendors, sites or populations than the training data may be "
    "scored very differently; validate on your own data before trusting any figure here.",
    "Grad-CAM heatmaps are a coarse hint of where the network looked, not a lesion outline.",
    "On the real screening-film benchmark (README, 'Real screening films': 3,383 public films "
    "of 963 women), this software's default model (pretrained EfficientNet-Lite0) ranked "
    "held-out women at ROC-AUC 0.65, with sensitivity 0.57 at specificity 0.65, far from the "
    "0.80 aimed at: no model here has been shown to find cancer well enough to guide care.",
)


def card_evaluation(val_predictions: pd.DataFrame) -> EvaluationResult | None:
    """The per-image evaluation of the card (patient bootstrap), or None without predictions."""
    if val_predictions.empty or not {"label", "probability"} <= set(val_predictions.columns):
        return None
    patients = val_predictions["patient_id"] if "patient_id" in val_predictions else None
    try:
        return evaluate(
            val_predictions["label"], val_predictions["probability"], patients, n_boot=CARD_N_BOOT
        )
    except UserError:
        return None


def _text(value: object) -> str:
    """A value from the bundle's file as markdown text: numbers as they are, the rest escaped."""
    if isinstance(value, (bool, int, float)):
        return str(value)
    return md(value)


def _choice(c: ThresholdChoice) -> str:
    who = md(c.by) if c.by else "the training run"
    when = md(c.chosen) or "date not recorded"
    text = f"{c.value:.4f} ({md(c.method) or 'method not recorded'}), by {who}, {when}"
    if c.on:
        text += f", on {md(c.on)}"
    return text + (f"; note: {md(c.note)}" if c.note else "")


def _data(meta: BundleMeta) -> list[str]:
    lines = ["## Training data", ""]
    s = meta.split
    negative, positive = (md(n) for n in (tuple(meta.class_names) + ("", ""))[:2])
    if s is None:
        lines.append("The bundle does not record its patient split.")
    else:
        lines += [
            f"| split | images | {positive} | {negative} | patients |",
            "| --- | --- | --- | --- | --- |",
            f"| train | {s.train_images} | {s.train_positives} | "
            f"{s.train_images - s.train_positives} | {s.train_patients} |",
            f"| validation | {s.val_images} | {s.val_positives} | "
            f"{s.val_images - s.val_positives} | {s.val_patients} |",
            "",
            f"Patients split by seed {_text(s.seed)}, validation share {_text(s.val_fraction)}; "
            f"patients in both splits: {_text(s.patient_overlap)}.",
        ]
    lines += [
        "",
        f"- Data fingerprint: {md(meta.data_fingerprint) or 'not recorded'}",
        f"- Bundle written: {md(meta.saved) or 'not recorded'}",
    ]
    return lines


def _settings(meta: BundleMeta) -> list[str]:
    spec = meta.preprocessing
    lines = [
        "## Preprocessing",
        "",
        f"- Network input: {spec.height} x {spec.width} pixels, {meta.channels} channel(s)",
        f"- Crop to the breast: {'yes' if spec.crop else 'no'}",
        f"- Orient (chest wall on the left): {'yes' if spec.orient else 'no'}",
        f"- Undo an inverted grey scale: {'yes' if spec.invert else 'no'}",
        f"- Contrast: {_CONTRAST_WORDS.get(spec.contrast, md(spec.contrast))}",
        f"- Decode margin: {spec.decode_margin:g}",
        "",
        "## Model and training",
        "",
        f"- Architecture: {md(meta.model_name)}",
        *_starting_weights(meta),
        *_started_from(meta),
        f"- Status: {md(meta.status) or 'not recorded'}",
        f"- Best epoch: {_text(meta.metrics.best_epoch) if meta.metrics.best_epoch else 'n/a'}",
        *_members(meta),
    ]
    for column in (meta.metadata or {}).get("columns", []):
        mean, sd = column.get("mean", 0.0), column.get("std", 1.0)
        how = (
            f"a number, standardised (mean {mean:.4g}, sd {sd:.4g}), or missing"
            if column.get("kind") == "numeric"
            else f"one of {len(column.get('categories', []))} values, other or missing"
        )
        lines.append(f"- Also takes the workbook column {md(column.get('name', ''))}: {how}")
    if meta.training:
        lines += ["", "| setting | value |", "| --- | --- |"]
        lines += [f"| {md(k)} | {_text(v)} |" for k, v in _training_rows(meta).items()]
    return lines


def _training_rows(meta: BundleMeta) -> dict:
    """The training settings as the card lists them.

    ``bundle.json`` leaves out ``batch_norm`` when it is "frozen" (``TrainConfig.to_dict``, so
    older bundles read as before), and a fine-tuned pretrained backbone always ran that way
    before the setting existed; the card still says so: such a run gets the row ``batch_norm |
    frozen`` after its fine-tuning rows. A backbone fine-tuned from random weights has no
    frozen batch norm and gets no row.
    """
    training = meta.training
    spec = MODEL_SPECS.get(meta.model_name)
    pretrained = str(training.get("weights", "none")).strip().lower() != "none"
    if (
        "batch_norm" in training
        or training.get("fine_tune") is not True
        or spec is None
        or not spec.transfer
        or not pretrained
    ):
        return training
    after = "frozen_stages" if "frozen_stages" in training else "fine_tune"
    rows: dict = {}
    for key, value in training.items():
        rows[key] = value
        if key == after:
            rows["batch_norm"] = "frozen"
    return rows


def _members(meta: BundleMeta) -> list[str]:
    """The runs an averaging model takes the mean of (none for a single run)."""
    if not meta.members:
        return []
    lines = [
        f"- Averages {len(meta.members)} runs of this model, validated on the same patients: "
        "its probability is the mean of theirs (the settings below are the first run's)"
    ]
    for m in meta.members:
        seed = f"seed {_text(m.seed)}" if m.seed is not None else "seed not recorded"
        epoch = f"epoch {_text(m.best_epoch)}" if m.best_epoch is not None else "epoch n/a"
        auc = f"{m.val_roc_auc:.3f}" if math.isfinite(m.val_roc_auc) else "n/a"
        lines.append(f"  - {md(m.bundle)}: {seed}, {epoch}, validation ROC-AUC {auc}")
    return lines


def _starting_weights(meta: BundleMeta) -> list[str]:
    """Where the weights started, with the pretrained weights' licence (none when random)."""
    spec = MODEL_SPECS.get(meta.model_name)
    weights = str((meta.training or {}).get("weights", "none"))
    if spec is None or not spec.transfer or weights == "none":
        return []
    if spec.family == "packaged" and weights == "imagenet":
        line = (
            f"- Starting weights: ImageNet-1k, {md(spec.label)}; licence {md(spec.licence)} "
            "(see NOTICE): a model trained from them is a derivative of them"
        )
        source = meta.pretrained
        if source is not None:
            line += (
                f"; from the package {md(source.package)} "
                f"{md(source.version) or '(version not recorded)'}, file {md(source.file)}, "
                f"sha256 {md(source.sha256)}"
            )
        return [line]
    return [f"- Starting weights: {md(Path(weights).name if weights != 'imagenet' else weights)}"]


def _started_from(meta: BundleMeta) -> list[str]:
    """The trained model the run went on from, and a warning when its films and this run's
    validation films overlap (:mod:`bcp_core.model.warm_start`)."""
    start = meta.started_from
    if start is None:
        return []
    named = f" ({md(start.name)})" if start.name else ""
    lines = [
        f"- Went on from the model of the bundle {md(start.bundle)}{named}, written "
        f"{md(start.saved) or '(date not recorded)'}, trained on the data "
        f"{md(start.data_fingerprint) or '(not recorded)'}; model.keras sha256 "
        f"{md(start.model_sha256)}"
    ]
    if start.val_seen:
        lines.append(
            f"- **Warning**: {start.val_seen} of this run's validation images were among the "
            "images that model trained or validated on, so the validation scores below "
            "flatter this model: judge it on images neither model saw"
        )
    return lines


def _metrics(meta: BundleMeta, result: EvaluationResult | None) -> list[str]:
    t = meta.threshold.value
    lines = ["## Validation metrics", ""]
    if result is None:
        stored = meta.metrics
        return lines + [
            "The bundle has no validation predictions; the stored scores (no intervals): "
            f"ROC-AUC {number(stored.roc_auc)}, PR-AUC {number(stored.pr_auc)}.",
        ]
    m, ci = result.at(t), result.intervals_at(t)
    return lines + [
        f"Per image, on {result.n} validation images of patients the model was not trained on "
        f"({result.n_positive} with cancer), at the saved threshold {t:.4f}. Intervals: 95%, "
        f"bootstrap over patients ({result.n_boot_used} resamples).",
        "",
        "| metric | value | 95% interval |",
        "| --- | --- | --- |",
        f"| Sensitivity | {percent(m.sensitivity)} ({m.tp} of {m.tp + m.fn}) | "
        f"{interval(ci.sensitivity_ci, as_percent=True)} |",
        f"| Specificity | {percent(m.specificity)} ({m.tn} of {m.tn + m.fp}) | "
        f"{interval(ci.specificity_ci, as_percent=True)} |",
        f"| PPV | {percent(m.precision)} | |",
        f"| NPV | {percent(m.npv)} | |",
        f"| ROC-AUC | {number(result.roc_auc)} | {interval(result.roc_auc_ci)} |",
        f"| PR-AUC | {number(result.pr_auc)} | {interval(result.pr_auc_ci)} |",
        "",
        f"Brier score {number(result.brier)}; balanced accuracy {percent(m.balanced_accuracy)}. "
        "Validation images also chose the threshold, so these figures are optimistic.",
        *(["", f"**Caution.** {caution}"] if (caution := result.few_cancers_caution()) else []),
    ]


def _threshold(meta: BundleMeta) -> list[str]:
    lines = [
        "## Decision threshold",
        "",
        "A case is called cancer when its probability is at least the threshold.",
        "",
        f"- Now: {_choice(meta.threshold)}",
    ]
    if meta.passes > 1:
        lines.append(
            f"- Probabilities are the mean of {meta.passes} test-time passes (the validation "
            "images were scored so, and prediction scores so unless told otherwise)."
        )
    past = meta.threshold.past()
    if past:
        lines += ["", f"Earlier thresholds ({len(past)}, newest first):", ""]
        lines += [f"- {_choice(c)}" for c in reversed(past)]
    return lines


#: Where ``bundle.json`` keeps the subgroup tables added from page 4 (by column).
SUBGROUPS_KEY = "subgroups"


def _figure(row: dict, name: str, as_percent: bool) -> str:
    value, low, high = row.get(name), row.get(f"{name}_low"), row.get(f"{name}_high")
    return with_interval(value, low, high, as_percent=as_percent, undefined="")


def _subgroups(meta: BundleMeta) -> list[str]:
    """The subgroup tables added from page 4, each as it was when added."""
    tables = meta.extra.get(SUBGROUPS_KEY)
    if not isinstance(tables, dict) or not tables:
        return []
    lines = ["## Performance per subgroup", ""]
    for column, table in tables.items():
        if not isinstance(table, dict):
            continue
        threshold, when = table.get("threshold"), table.get("recorded", "")
        at = f"{threshold:.4f}" if isinstance(threshold, (int, float)) else "?"
        lines += [
            f"### {md(column)}",
            "",
            f"Validation images grouped by {md(table.get('rule', ''))}; at threshold {at}, "
            f"added {md(when)}. Sensitivity and specificity with Wilson intervals, ROC-AUC "
            "with a bootstrap over patients.",
            "",
            "| group | images | cancer | non-cancer | patients | sensitivity | specificity "
            "| ROC-AUC | note |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in table.get("groups", []):
            if not isinstance(row, dict):
                continue
            cells = [
                _text(row.get("group", "")),
                *(_text(row.get(k, "")) for k in ("images", "cancer_images", "non_cancer_images")),
                _text(row.get("patients", "")),
                _figure(row, "sensitivity", True),
                _figure(row, "specificity", True),
                _figure(row, "roc_auc", False),
                _text(row.get("reason") or ""),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _approval(meta: BundleMeta) -> list[str]:
    """The analyst's approval of a chance-level model for viewers, when there is one."""
    given = meta.viewer_approval
    if not given:
        return []
    return [
        f"- **No better than chance on its validation patients**, yet approved for viewers by "
        f"{md(given.get('by', ''))} on {md(given.get('time', ''))}: {md(given.get('reason', ''))}"
    ]


def render_card(
    meta: BundleMeta,
    val_predictions: pd.DataFrame,
    *,
    result: EvaluationResult | None = None,
    name: str = "",
) -> str:
    """The model card of a bundle, as markdown.

    Args:
        meta: the bundle's metadata.
        val_predictions: its validation predictions (``label``, ``probability``, ``patient_id``).
        result: their per-image evaluation when already computed (:func:`card_evaluation`),
            to save the bootstrap.
        name: the bundle's folder name, for the title.
    """
    if result is None:
        result = card_evaluation(val_predictions)
    title = f"# Model card: {md(name)}" if name else "# Model card"
    versions = meta.versions
    lines = [
        title,
        "",
        "## Intended use",
        "",
        f"**{NOTICE}** This model ranks mammograms by the probability of cancer it estimates, "
        "for research on this software and its data only. It must not be used to diagnose, "
        "screen or decide the care of anyone.",
        "",
        *_data(meta),
        "",
        *_settings(meta),
        "",
        *_metrics(meta, result),
        "",
        *_threshold(meta),
        "",
        *_subgroups(meta),
        "## Known limits",
        "",
        *_approval(meta),
        *(f"- {limit}" for limit in KNOWN_LIMITS),
        "",
        "## Versions",
        "",
        f"- TensorFlow: {md(versions.get('tensorflow', '')) or 'not recorded'}",
        f"- Keras: {md(versions.get('keras', '')) or 'not recorded'}",
        f"- Bundle format: {meta.format_version}",
        "",
    ]
    return "\n".join(lines)
