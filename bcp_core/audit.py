"""The audit log: an append-only JSON-lines file of who did what, when.

One line per event: ``{"time": ISO 8601 UTC, "who": "local" or an e-mail, "action": ...,
...details}``. Lines are appended with one ``write`` on a file opened with ``O_APPEND``, so
concurrent sessions never interleave or overwrite lines; nothing here rewrites or truncates the
file. Details are short facts (a bundle name, a threshold, a data root by its allowed folder's
name, a download's file name); the log never holds a patient ID or an image path, and
:func:`append` refuses a detail it does not know.
"""

from __future__ import annotations

import json
import os
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

from bcp_core.errors import UserError

#: What the log records.
ACTIONS = (
    "sign_in",
    "sign_out",
    "unmask",
    "mask",
    "data_root",
    "train_start",
    "train_stop",
    "threshold_save",
    "threshold_restore",
    "export",
    "bundle_delete",
    "bundle_export",
    "bundle_average",
    "bundle_label",
    "viewer_override",
    "card_subgroups",
    "denied",
)
#: The details an event may carry (never patient IDs or image paths).
DETAILS = (
    "role", "mode", "bundle", "threshold", "method", "data_root", "file", "run", "what", "reason",
)  # fmt: skip
MAX_DETAIL_CHARS = 200


def append(path: str | Path, who: str, action: str, /, **details: object) -> dict:
    """Append one event to the log at ``path`` (its folder is made) and return it.

    Raises:
        UserError: for an unknown action or detail, or when the log cannot be written.
    """
    if action not in ACTIONS:
        raise UserError(f"Unknown audit action {action!r}.")
    unknown = sorted(set(details) - set(DETAILS))
    if unknown:
        raise UserError(f"Audit events cannot carry {', '.join(unknown)}.")
    event: dict[str, object] = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "who": str(who)[:MAX_DETAIL_CHARS],
        "action": action,
    }
    for key, value in details.items():
        ok = isinstance(value, (int, float, bool)) or value is None
        event[key] = value if ok else str(value)[:MAX_DETAIL_CHARS]
    line = (json.dumps(event, ensure_ascii=False) + "\n").encode("utf-8")
    file = Path(path)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as exc:
        raise UserError(f"The audit log {file.name} cannot be written ({exc.strerror}).") from exc
    return event


def last_events(path: str | Path, n: int = 50) -> list[dict]:
    """The last ``n`` events, newest first (a missing log has none; bad lines are skipped)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = deque(fh, maxlen=n)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise UserError(f"The audit log cannot be read ({exc.strerror}).") from exc
    events = []
    for line in reversed(lines):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events
