"""Masking of patient identifiers for display, downloads and logs."""

from __future__ import annotations

import pandas as pd

from bcp_core import config


def mask_id(value: object) -> str:
    """Mask a patient ID, keeping 3 leading and 2 trailing characters: DIT*******08."""
    text = "" if value is None else str(value)
    if len(text) <= 5:
        return "*" * len(text)
    return text[:3] + "*" * (len(text) - 5) + text[-2:]


def mask_key(key: object) -> str:
    """Mask the patient part (the last) of a UniqueKey ``file-date-time-patient``."""
    text = "" if key is None else str(key)
    head, sep, patient = text.rpartition(config.KEY_SEPARATOR)
    if not sep or text.count(config.KEY_SEPARATOR) < 3:
        return text
    return f"{head}{sep}{mask_id(patient)}"


def mask_df(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with ``patient_id`` and ``key`` columns (where present) masked."""
    out = df.copy()
    if "patient_id" in out.columns:
        out["patient_id"] = out["patient_id"].map(mask_id)
    if "key" in out.columns:
        out["key"] = out["key"].map(mask_key)
    return out
