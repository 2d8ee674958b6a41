"""Workbook columns as model inputs: the leakage guard and the encoding the bundle records.

A model may take chosen workbook columns (age, breast density, ...) beside the image
(``TrainConfig.metadata_columns``; README, "Image plus workbook columns"). Before anything is
trained, :func:`check_leakage` refuses a column that would hand the model its label:

* its name says it is a finding, a diagnosis or an assessment (BI-RADS, pathology, biopsy,
  malignant, lesion ...);
* on its own it separates cancer from non-cancer images of the training split with ROC-AUC
  >= :data:`LEAK_AUC` (numbers as they are; text by each value's share of cancer images).

(A column that exists on one workbook sheet only is refused where the columns are read,
:func:`bcp_core.data.attributes.metadata_frame`.) The refusal names the column and why.

:class:`MetadataEncoder` turns the columns into numbers, learnt on the training split only: a
number becomes its standardised value and a "missing" flag; text becomes one flag per common
value (at most :data:`MAX_CATEGORIES`, each seen on at least :data:`MIN_CATEGORY_IMAGES`
training images), an "other" and a "missing" flag. The bundle records the encoder
(``bundle.json`` key ``metadata``), and prediction encodes what a user gives with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from bcp_core.data.workbooks import canonical_name
from bcp_core.errors import UserError
from bcp_core.evaluation.subgroups import as_number, normalised_text
from bcp_core.model.files import META_FILE

#: A column whose values alone reach this ROC-AUC on the training split carries the label.
LEAK_AUC = 0.95
MAX_CATEGORIES = 10
MIN_CATEGORY_IMAGES = 5
#: A column is numeric when at least this share of its non-empty training values are numbers.
NUMERIC_SHARE = 0.9
#: Words of a column name that mark a finding, a diagnosis or an assessment.
LEAKY_WORDS = (
    "birads", "finding", "diagnos", "assessment", "patholog", "histolog", "biopsy", "malign",
    "benign", "cancer", "lesion", "tumor", "tumour", "carcinoma", "outcome", "recall",
)  # fmt: skip
#: The refusal of a ``metadata`` entry this software did not write.
_DAMAGED = f"{META_FILE} has a damaged 'metadata' entry; train again."


def _text(value: object) -> str:
    """A cell as the text it is grouped by (:func:`normalised_text`); "" for an empty cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = normalised_text(value)
    return "" if text in ("nan", "none") else text


def _numbers(values: pd.Series) -> pd.Series:
    """Cells as numbers (NaN where not one); DICOM ages such as "065Y" count as years."""
    return pd.Series([as_number(v)[0] for v in values], index=values.index, dtype=float)


def check_leakage(values: pd.DataFrame, labels: Sequence[int]) -> None:
    """Refuse the first column that would give the model its label.

    Args:
        values: the training split's cells, one column per chosen workbook column.
        labels: 0 / 1 per row.

    Raises:
        UserError: naming the column and the reason.
    """
    y = np.asarray(labels, dtype=int)
    for column in values.columns:
        canon = canonical_name(column)
        word = next((w for w in LEAKY_WORDS if w in canon), None)
        if word is not None:
            raise UserError(
                f"Column {column!r} is refused: its name says it holds a finding, a diagnosis or "
                f"an assessment ({word!r}), which is the answer, not something to predict from."
            )
        auc = _separation(values[column], y)
        if auc >= LEAK_AUC:
            raise UserError(
                f"Column {column!r} is refused: on its own it separates cancer from non-cancer "
                f"images of the training split (ROC-AUC {auc:.2f}, limit {LEAK_AUC:.2f}), so it "
                "carries the label rather than a risk factor."
            )


def _separation(cells: pd.Series, y: np.ndarray) -> float:
    """How well the column alone ranks cancer above non-cancer (ROC-AUC, either direction)."""
    if len(set(y.tolist())) < 2:
        return 0.5
    numbers = _numbers(cells)
    present = numbers.notna()
    if present.sum() and present.sum() >= NUMERIC_SHARE * cells.map(_text).astype(bool).sum():
        score = numbers.fillna(numbers.median()).to_numpy(dtype=float)
    else:  # text: each value scored by its share of cancer images
        text = cells.map(_text).to_numpy()
        rate = pd.Series(y).groupby(text).mean()
        score = rate.reindex(text).to_numpy(dtype=float)
    auc = float(roc_auc_score(y, score))
    return 0.5 if math.isnan(auc) else max(auc, 1.0 - auc)


@dataclass(frozen=True)
class ColumnEncoding:
    """How one column becomes numbers.

    Attributes:
        name: the workbook column.
        kind: "numeric" or "text".
        mean, std: the training split's mean and standard deviation (numeric).
        categories: the common values, normalised (text).
    """

    name: str
    kind: str
    mean: float = 0.0
    std: float = 1.0
    categories: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        """Numbers this column adds to the model's input."""
        return 2 if self.kind == "numeric" else len(self.categories) + 2

    def encode(self, cell: object) -> list[float]:
        """The numbers of one cell (an empty cell sets the "missing" flag)."""
        if self.kind == "numeric":
            number = as_number(cell)[0]
            if number is None:
                return [0.0, 1.0]
            return [(number - self.mean) / self.std, 0.0]
        text = _text(cell)
        flags = [0.0] * self.width
        if not text:
            flags[-1] = 1.0
        elif text in self.categories:
            flags[self.categories.index(text)] = 1.0
        else:
            flags[-2] = 1.0
        return flags

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "numeric":
            out.update(mean=self.mean, std=self.std)
        else:
            out["categories"] = list(self.categories)
        return out


@dataclass(frozen=True)
class MetadataEncoder:
    """The columns a model takes beside the image, and how each becomes numbers."""

    columns: tuple[ColumnEncoding, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def width(self) -> int:
        """Length of the model's metadata input."""
        return sum(c.width for c in self.columns)

    def encode_row(self, row: Mapping[str, object]) -> np.ndarray:
        """float32 (width,) for one image's cells by column name (absent ones are missing)."""
        values: list[float] = []
        for column in self.columns:
            values += column.encode(row.get(column.name))
        return np.asarray(values, dtype=np.float32)

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """float32 (rows, width) for a frame with one column per encoded column."""
        rows = frame.reindex(columns=self.names).to_dict("records")
        if not rows:
            return np.zeros((0, self.width), dtype=np.float32)
        return np.stack([self.encode_row(r) for r in rows])

    def to_json(self) -> dict[str, Any]:
        """The ``metadata`` object of ``bundle.json``."""
        return {"columns": [c.to_json() for c in self.columns], "width": self.width}

    @classmethod
    def from_json(cls, data: object) -> MetadataEncoder:
        """Read the ``metadata`` object of ``bundle.json``.

        Raises:
            UserError: when it is not one this software wrote.
        """
        try:
            columns = tuple(
                ColumnEncoding(
                    name=str(c["name"]),
                    kind=str(c["kind"]),
                    mean=float(c.get("mean", 0.0)),
                    std=float(c.get("std", 1.0)),
                    categories=tuple(str(v) for v in c.get("categories", ())),
                )
                for c in data["columns"]  # type: ignore[index]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(_DAMAGED) from exc
        if not columns or any(c.kind not in ("numeric", "text") for c in columns):
            raise UserError(_DAMAGED)
        return cls(columns)


def fit_encoder(values: pd.DataFrame) -> MetadataEncoder:
    """Learn each column's encoding from the training split's cells."""
    found = []
    for column in values.columns:
        cells = values[column]
        numbers = _numbers(cells)
        filled = int(cells.map(_text).astype(bool).sum())
        if filled and numbers.notna().sum() >= NUMERIC_SHARE * filled:
            std = float(numbers.std(ddof=0)) if numbers.notna().sum() > 1 else 0.0
            mean = float(numbers.mean())
            found.append(ColumnEncoding(str(column), "numeric", mean, std if std > 0 else 1.0))
            continue
        counts = cells.map(_text).loc[lambda s: s != ""].value_counts()
        common = [v for v, n in counts.items() if n >= MIN_CATEGORY_IMAGES][:MAX_CATEGORIES]
        found.append(ColumnEncoding(str(column), "text", categories=tuple(sorted(common))))
    return MetadataEncoder(tuple(found))
