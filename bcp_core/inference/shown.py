"""What the prediction page keeps of a shown prediction: the images as bytes, within a memory
limit shared by every session (:class:`ShownCache`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bcp_core.inference.predict import ExplainedPrediction
from bcp_core.inference.results import Prediction


@dataclass(frozen=True)
class ShownPrediction:
    """What the prediction page shows of one file, and nothing more (see :class:`ShownCache`).

    Attributes:
        prediction: the :class:`~bcp_core.inference.results.Prediction`.
        image: the decoded image as uint8 (h, w) grey.
        heatmap: Grad-CAM on ``image`` as uint8 (h, w) (255 = the strongest response).
    """

    prediction: Prediction
    image: np.ndarray
    heatmap: np.ndarray

    @classmethod
    def of(cls, result: ExplainedPrediction) -> ShownPrediction:
        """The shown part of an :class:`~bcp_core.inference.predict.ExplainedPrediction`
        made with its heatmap."""
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
