"""How a figure is written for people: a rate as a percentage, a score with its interval, and
"n/a" (or nothing) where the figure is undefined, never "nan%"."""

from __future__ import annotations

import math
from numbers import Real

#: What stands for an undefined figure (NaN: no cancers to find, one class only, ...).
UNDEFINED = "n/a"


def defined(value: object) -> bool:
    """Whether ``value`` is a finite number, NumPy's included (not None, NaN, infinite, text or
    a bool)."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def percent(value: float, decimals: int = 1) -> str:
    """A rate as a percentage (``81.2%``), :data:`UNDEFINED` when it is undefined."""
    return f"{value:.{decimals}%}" if defined(value) else UNDEFINED


def number(value: float, decimals: int = 3) -> str:
    """A score such as an AUC (``0.861``), :data:`UNDEFINED` when it is undefined."""
    return f"{value:.{decimals}f}" if defined(value) else UNDEFINED


def with_interval(
    value: object, low: object, high: object, *, as_percent: bool, undefined: str = UNDEFINED
) -> str:
    """A rate as ``81.2% (70%-90%)`` or a score as ``0.861 (0.78-0.93)``: the interval is left
    out where it is undefined, and an undefined value is written ``undefined``."""
    if not defined(value):
        return undefined
    shown = percent(value) if as_percent else number(value)  # type: ignore[arg-type]
    if not (defined(low) and defined(high)):
        return shown
    if as_percent:
        return f"{shown} ({low:.0%}-{high:.0%})"
    return f"{shown} ({low:.2f}-{high:.2f})"


def interval(bounds: tuple[float, float], *, as_percent: bool = False) -> str:
    """An interval alone, ``0.780 to 0.930`` or ``70.0% to 90.0%``; :data:`UNDEFINED` when
    either end is undefined."""
    low, high = bounds
    if not (defined(low) and defined(high)):
        return UNDEFINED
    shown = percent if as_percent else number
    return f"{shown(low)} to {shown(high)}"
