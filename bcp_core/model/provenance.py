"""Which files a bundle learned from: the SHA-256 of every training and validation file.

A bundle keeps ``split_files.csv`` (columns ``sha256`` and ``split``, "train" or "val"), written
with the bundle (:func:`bcp_core.model.bundle.save_bundle`). At prediction the file's own hash
is looked up, so that a film the model trained on is said to be one (its score says little
about new films) whatever its name: two films can share a name, and one film can be renamed.
Only hashes are kept: no name, path or patient ID.

Bundles written before this file existed have none; every lookup then answers "".
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import pandas as pd

SPLIT_FILES = "split_files.csv"
#: The splits recorded, as :func:`split_of` names them.
SPLITS = ("train", "val")
_CHUNK = 1 << 20


def file_sha256(source: str | os.PathLike | bytes) -> str:
    """The SHA-256 of a file's bytes (read in 1 MB chunks) or of bytes already read."""
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    digest = hashlib.sha256()
    with open(source, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def split_files_df(paths: Iterable[str | os.PathLike], splits: Iterable[str]) -> pd.DataFrame:
    """The table a bundle keeps: one row per file of the training or validation split.

    A file that cannot be read is left out (training reports it as a read failure); a file
    in both splits (the same film under two names) is kept as "train", the stronger warning.
    """
    rows = []
    for path, split in zip(paths, splits, strict=True):
        if split not in SPLITS:
            continue
        try:
            rows.append((file_sha256(path), split))
        except OSError:
            continue
    return merged_split_files(pd.DataFrame(rows, columns=["sha256", "split"]))


def merged_split_files(*tables: pd.DataFrame) -> pd.DataFrame:
    """Tables of :func:`split_files_df` as one: each file once, as "train" when any table has
    it there (the stronger warning), in the tables' order otherwise."""
    df = pd.concat(tables, ignore_index=True)
    df = df[df["split"].isin(SPLITS)]
    df = df.sort_values("split", key=lambda s: s.map(SPLITS.index), kind="stable")
    return df.drop_duplicates("sha256").reset_index(drop=True)


def read_split_files(bundle_dir: str | os.PathLike) -> pd.DataFrame | None:
    """A bundle's table (columns ``sha256`` and ``split``), or None when it has none or it
    cannot be read."""
    try:
        df = pd.read_csv(Path(bundle_dir) / SPLIT_FILES, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    return df[["sha256", "split"]] if {"sha256", "split"} <= set(df.columns) else None


@lru_cache(maxsize=16)
def _lookup(bundle_dir: str, mtime_ns: int) -> dict[str, str]:
    """The bundle's table as {sha256: split}, read once per version of the file."""
    df = read_split_files(bundle_dir)
    return {} if df is None else dict(zip(df["sha256"], df["split"], strict=True))


def split_of(bundle_dir: str | os.PathLike, sha256: str) -> str:
    """ "train" or "val" when a file of that hash was in the bundle's split, else "" (also for
    a bundle without the table, or one whose table cannot be read)."""
    try:
        mtime_ns = (Path(bundle_dir) / SPLIT_FILES).stat().st_mtime_ns
    except OSError:
        return ""
    found = _lookup(str(bundle_dir), mtime_ns).get(sha256, "")
    return found if found in SPLITS else ""
