"""Which folders the dashboard may read as data roots, and how it shows their paths.

Whoever opens the dashboard types a data root into a browser; the server must not read, list or
reveal its other folders. So a typed data root is resolved (symlinks followed, ``..`` removed)
and then checked to lie inside one of the allowed folders (``BCP_ALLOWED_ROOTS``, by default only
the configured data root); anything else gets one sentence that lists nothing. Inside the
dashboard a path is shown by its allowed folder's name and the part below it
(``demo_data/Cancer``), never as the server's absolute path.

This module reads no setting: the dashboard reads the allowed folders from the environment
(:mod:`bcp_core.settings`) and passes them to :func:`allowed_roots`.

The CLI is used by the person who runs it, on their own files, and reads any folder: it does not
use this module.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bcp_core.errors import UserError

#: The setting that names the allowed folders, named in refusals (read by bcp_core.settings).
ENV_ALLOWED_ROOTS = "BCP_ALLOWED_ROOTS"


@dataclass(frozen=True)
class AllowedRoot:
    """A folder the dashboard may read data roots from.

    Attributes:
        label: the folder's name as configured: how the dashboard shows it, and what a user
            types to reach it (``demo_data`` or ``demo_data/sub``).
        path: the folder with symlinks followed, to compare resolved paths against.
    """

    label: str
    path: Path


def allowed_roots(folders: Iterable[str | Path]) -> list[AllowedRoot]:
    """The allowed ``folders`` as configured, each with its label and real path."""
    found = []
    for folder in folders:
        configured = Path(folder).expanduser()
        found.append(AllowedRoot(configured.name or configured.anchor, configured.resolve()))
    return found


def _refusal(roots: Sequence[AllowedRoot]) -> UserError:
    names = " or ".join(r.label for r in roots) or "nothing"
    return UserError(
        f"That folder is not an allowed data root: choose {names} or a folder inside it (the "
        f"server's {ENV_ALLOWED_ROOTS} setting names the allowed folders)."
    )


def refuse_nul(text: str) -> None:
    """Raise a sentence for a NUL character, which no file name can hold (the OS would raise
    ValueError deep inside a file-system call)."""
    if "\0" in text:
        raise UserError("The data root contains a NUL character; type the folder's name again.")


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def resolve_data_root(text: str | Path, roots: Sequence[AllowedRoot]) -> Path:
    """The data root typed as ``text``, resolved, if it lies inside an allowed folder.

    ``text`` is an allowed folder's label, optionally followed by a path below it
    (``demo_data/sub``). An absolute path is refused like any folder outside the allowed ones,
    inside them or not: answering differently would tell a visitor where the allowed folder
    really is. ``~`` is not expanded: it names no allowed folder.

    Raises:
        UserError: for an empty text, a NUL character, an absolute path, or any folder outside
            the allowed ones (nothing is listed and nothing outside them is read).
    """
    text = str(text).strip()
    refuse_nul(text)
    if not text:
        raise _refusal(roots)
    candidate = Path(text)
    if candidate.is_absolute() or text.startswith("\\"):
        raise _refusal(roots)
    parts = candidate.parts  # empty for "."
    base = next((r for r in roots if parts and r.label == parts[0]), None)
    if base is None:
        raise _refusal(roots)
    candidate = base.path.joinpath(*parts[1:])
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, an unreadable folder
        raise _refusal(roots) from exc
    if not any(_inside(resolved, r.path) for r in roots):
        raise _refusal(roots)
    return resolved


def display_path(path: str | Path, roots: Sequence[AllowedRoot]) -> str:
    """``path`` as the dashboard shows it: its allowed folder's label and the part below it.

    A path outside every allowed folder is shown by its file name only.
    """
    text = str(path)
    for root in roots:
        base = str(root.path).rstrip(os.sep)
        if text == str(root.path):
            return root.label
        if text.startswith(base + os.sep):
            below = text[len(base) + 1 :].replace(os.sep, "/")
            return f"{root.label.rstrip('/')}/{below}"
    return Path(text).name


def hide_root(message: str, root: Path, roots: Sequence[AllowedRoot]) -> str:
    """``message`` with the absolute path ``root`` (and paths below it) shown as the dashboard
    shows them."""
    return message.replace(str(root), display_path(root, roots))
