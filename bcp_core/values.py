"""What counts as a number, a whole number and a blank cell: the type rules every layer shares.

``True`` is an ``int`` to Python, but never a count, a size or a probability here. A cell is
blank when it holds nothing: None, a missing value (NaN, ``NaT``, pandas' ``NA``) or text of
spaces only.
"""

from __future__ import annotations

import math
from typing import TypeGuard


def is_number(value: object) -> TypeGuard[int | float]:
    """Whether ``value`` is an ``int`` or a ``float``, and not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_whole_number(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an ``int``, and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_blank(value: object) -> bool:
    """Whether a cell holds nothing: None, a missing value, or text of spaces only."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, float):
        return math.isnan(value)
    import pandas as pd  # here, not above: the command line starts without pandas

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or an array is not a missing value
        return False
