"""Readers' marks on single-image predictions: ``feedback.csv`` beside the bundle's files.

A reader of page 5 marks a prediction ``agree``, ``disagree_cancer`` (it is cancer) or
``disagree_not_cancer`` (it is not), with an optional note. Each mark is one CSV line with
:data:`COLUMNS`: the time (ISO 8601 UTC), who (the signed-in e-mail, or ``local`` / ``demo
visitor`` as the audit log names them), the file name, the SHA-256 of the uploaded bytes, the
probability, the threshold, the mark and the note.

Privacy: a file name can hold a patient ID, so it is stored only when the reader sees patient IDs
(masking off, ``keep_name=True``); otherwise the ``file`` cell is empty and the image is known by
its hash alone. Nothing else of the image is stored. Text cells pass
:func:`bcp_core.output_safety.neutralise_cell` (a note such as ``=HYPERLINK(...)`` is stored as
text) and line breaks in notes become spaces; whoever shows a note in markdown escapes it.

Lines are appended with one ``write`` on a file opened with ``O_APPEND`` under an exclusive
``flock`` (which also makes the header exactly once), so concurrent sessions never interleave
or overwrite lines; nothing here rewrites or truncates the file. A bundle folder written again
by training starts without marks (they were about the previous model).
"""

from __future__ import annotations

import csv
import fcntl
import io
import math
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from bcp_core.errors import UserError
from bcp_core.output_safety import neutralise_cell

FILE_NAME = "feedback.csv"
#: The marks a reader can give, and what each means.
MARKS = {
    "agree": "agree",
    "disagree_cancer": "disagree: it is cancer",
    "disagree_not_cancer": "disagree: it is not cancer",
}
COLUMNS = ("time", "who", "file", "image_sha256", "probability", "threshold", "mark", "note")
MAX_NOTE_CHARS = 500
MAX_TEXT_CHARS = 200
#: A bundle's file stops taking marks at this size (about 40,000 marks; demo visitors can mark).
MAX_FILE_BYTES = 20_000_000


@dataclass(frozen=True)
class Mark:
    """One reader's mark on one prediction (``file`` is empty when the name was masked)."""

    time: str
    who: str
    file: str
    image_sha256: str
    probability: float
    threshold: float
    mark: str
    note: str = ""

    @property
    def agrees(self) -> bool:
        return self.mark == "agree"

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FeedbackSummary:
    """How many marks a bundle has, of which kind, and the share that agree (NaN for none)."""

    n: int
    agree: int
    disagree_cancer: int
    disagree_not_cancer: int

    @property
    def agreement_rate(self) -> float:
        return self.agree / self.n if self.n else math.nan

    def to_json(self) -> dict:
        rate = self.agreement_rate
        return {**asdict(self), "agreement_rate": None if rate != rate else rate}


def _text(value: object, limit: int) -> str:
    flat = " ".join(str(value).splitlines())[:limit]
    return str(neutralise_cell(flat))


def record(
    bundle_dir: str | Path,
    *,
    who: str,
    file: str,
    image_sha256: str,
    probability: float,
    threshold: float,
    mark: str,
    note: str = "",
    keep_name: bool = False,
) -> Mark:
    """Append one mark to ``feedback.csv`` in ``bundle_dir`` and return it as stored.

    ``keep_name``: store ``file`` as uploaded (only when the reader sees patient IDs).

    Raises:
        UserError: for an unknown mark, a bad hash, a full file (:data:`MAX_FILE_BYTES`), or a
            file that cannot be written.
    """
    if mark not in MARKS:
        raise UserError(f"Unknown mark {mark!r}: use one of {', '.join(MARKS)}.")
    digest = str(image_sha256).lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise UserError("The image hash must be a SHA-256 in hexadecimal.")
    entry = Mark(
        time=datetime.now(UTC).isoformat(timespec="seconds"),
        who=_text(who, MAX_TEXT_CHARS),
        file=_text(file, MAX_TEXT_CHARS) if keep_name else "",
        image_sha256=digest,
        probability=float(probability),
        threshold=float(threshold),
        mark=mark,
        note=_text(note.strip(), MAX_NOTE_CHARS),
    )
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([getattr(entry, c) for c in COLUMNS])
    path = Path(bundle_dir) / FILE_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size >= MAX_FILE_BYTES:
                raise UserError("This bundle's feedback file is full: ask its administrator.")
            header = ",".join(COLUMNS) + "\n" if size == 0 else ""
            os.write(fd, (header + buf.getvalue()).encode("utf-8"))
        finally:
            os.close(fd)  # releases the lock
    except OSError as exc:
        raise UserError(f"The feedback file cannot be written ({exc.strerror}).") from exc
    return entry


def read_marks(bundle_dir: str | Path) -> list[Mark]:
    """Every mark of a bundle, oldest first (none without a file; bad rows are skipped).

    Raises:
        UserError: when the file exists but cannot be read.
    """
    path = Path(bundle_dir) / FILE_NAME
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise UserError(f"The feedback file cannot be read ({exc.strerror}).") from exc
    marks = []
    for row in rows:
        try:
            mark = Mark(
                **{c: row[c] or "" for c in COLUMNS if c not in ("probability", "threshold")},
                probability=float(row["probability"]),
                threshold=float(row["threshold"]),
            )
        except (KeyError, TypeError, ValueError):
            continue
        if mark.mark in MARKS:
            marks.append(mark)
    return marks


def summarise(marks: list[Mark]) -> FeedbackSummary:
    """The counts of each mark."""
    kinds = [m.mark for m in marks]
    return FeedbackSummary(
        n=len(kinds),
        agree=kinds.count("agree"),
        disagree_cancer=kinds.count("disagree_cancer"),
        disagree_not_cancer=kinds.count("disagree_not_cancer"),
    )
