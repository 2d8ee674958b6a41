"""Normalising the key columns: what each cell becomes, and the fixes it needed."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from bcp_core.data import keys
from bcp_core.errors import UserError


@pytest.mark.parametrize(
    ("raw", "expected", "fix"),
    [
        (92603, "092603", keys.FIX_ZERO_PAD),  # Excel dropped the leading zero
        (112603.0, "112603", keys.FIX_FLOAT),
        (92603.0, "092603", keys.FIX_ZERO_PAD),
        ("092603", "092603", None),
        (" 092603 ", "092603", keys.FIX_STRIPPED),
        ("9:26:03", "092603", keys.FIX_DATETIME),
        ("112603.000", "112603", keys.FIX_FLOAT),
        (dt.time(9, 26, 3), "092603", keys.FIX_DATETIME),
    ],
)
def test_normalise_time(raw, expected, fix):
    value, fixes = keys.normalise_time(raw)
    assert value == expected
    assert (fix in fixes) if fix else not fixes


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (20141225, "20141225"),
        (20141225.0, "20141225"),
        ("20141225", "20141225"),
        ("2014-12-25", "20141225"),
        (dt.datetime(2014, 12, 25), "20141225"),
        (None, ""),
        ("  ", ""),
    ],
)
def test_normalise_date(raw, expected):
    assert keys.normalise_date(raw)[0] == expected


@pytest.mark.parametrize(
    ("raw", "expected", "fix"),
    [
        ("FILE0004.jpg", "FILE0004", keys.FIX_EXTENSION),
        ("file0004", "FILE0004", keys.FIX_CASE),
        ("FILE0004 ", "FILE0004", keys.FIX_STRIPPED),
        ("FILE0004.JPEG", "FILE0004", keys.FIX_EXTENSION),
        ("1.2.840.5", "1.2.840.5", None),
    ],
)
def test_normalise_file_name(raw, expected, fix):
    value, fixes = keys.normalise_file_name(raw)
    assert value == expected
    assert (fix in fixes) if fix else not fixes


def test_normalise_patient_numeric_id_loses_float():
    assert keys.normalise_patient(439120108.0) == ("439120108", {keys.FIX_FLOAT})
    assert keys.normalise_patient("dit439120108")[0] == "DIT439120108"


def test_key_parts_builds_unique_key_and_reports_empty_parts():
    df = pd.DataFrame(
        {
            "InputFileName": ["FILE0004", "FILE0005"],
            "StudyDate": [20141225, 20141225],
            "StudyTime": [112603, None],
            "PatientID.x": ["DIT439120108", "DIT439120108"],
        }
    )
    parts = keys.key_parts_df(df, "sheet")
    assert parts.loc[0, "key"] == "FILE0004-20141225-112603-DIT439120108"
    assert parts.loc[0, "empty"] == ""
    assert parts.loc[1, "empty"] == "StudyTime"


def test_key_parts_accepts_plain_patientid_column_and_spaced_headers():
    df = pd.DataFrame(
        {" InputFileName ": ["a"], "StudyDate": [1], "StudyTime": [1], "PatientID": ["p"]}
    )
    df.columns = [c.strip() for c in df.columns]
    assert keys.key_parts_df(df, "t").loc[0, "patient"] == "P"


def test_missing_key_column_names_the_column_and_table():
    df = pd.DataFrame({"InputFileName": ["a"], "StudyDate": [1], "PatientID.x": ["p"]})
    with pytest.raises(UserError, match=r"Cancer sheet has no column 'StudyTime'"):
        keys.key_parts_df(df, "Cancer sheet")
