"""What prediction returns: one file's :class:`Prediction`, and the tables made of many.

:func:`results_df` is the table of files the prediction page, ``predict --out`` and the Ray
engine's shards write; :func:`breast_results_df` scores one woman per breast and over both, by
the rule of :mod:`bcp_core.evaluation.aggregation`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

import pandas as pd

from bcp_core.evaluation.aggregation import aggregate_predictions_df


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


# --- Per breast and per woman -------------------------------------------------------------------

BREAST_COLUMNS = ("breast", "views", "probability", "label")


def breast_results_df(results: Iterable[Prediction]) -> pd.DataFrame:
    """Per-breast and per-woman probabilities from one woman's image results.

    The rule is :func:`bcp_core.evaluation.aggregation.aggregate_predictions_df`'s: the mean
    of a breast's views, then the maximum over the two breasts, as the top screening systems
    score a woman. Results with an error or without a known laterality are left out.

    Args:
        results: :class:`Prediction` objects from
            :func:`bcp_core.inference.predict.predict_files` for one woman's images.

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
