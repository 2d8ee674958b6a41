"""Find image files once and resolve the workbooks' paths against that index.

The user's notebook searched the whole folder tree once per image (``os.walk`` inside the loop
over file names), which grows with images x files. Here each tree is walked once into a
dictionary from file stem to relative paths; every lookup after that is a dictionary access.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from bcp_core import config
from bcp_core.data.keys import file_name_key
from bcp_core.data.workbooks import canonical_name
from bcp_core.errors import UserError


def stem_key(name: str) -> str:
    """The lookup key of a file name: :func:`file_name_key`, without spaces at either end.

    The join's key keeps a space that stood before a dropped extension (``"F .jpg"`` gives
    ``"F "``); the lookup drops it too, so the file ``F .jpg`` is found by the name ``F``.
    """
    return file_name_key(name).strip()


def split_any_path(path: str) -> list[str]:
    """Split a Windows or POSIX path into parts: ``C:\\a\\b.jpg`` -> ``["C:", "a", "b.jpg"]``."""
    return [p for p in path.replace("\\", "/").split("/") if p]


@dataclass
class ImageIndex:
    """Every image file below one folder, keyed by :func:`stem_key` of its name.

    Attributes:
        root: the folder that was indexed (absolute).
        by_stem: stem key -> relative POSIX paths of the files with that stem.
        prefix: path of ``root`` relative to the data root, with a trailing slash, so that
            ``prefix + relpath`` names a file relative to the data root.
    """

    root: Path
    prefix: str = ""
    by_stem: dict[str, list[str]] = field(default_factory=dict)

    @property
    def n_files(self) -> int:
        return sum(len(v) for v in self.by_stem.values())

    def all_relpaths(self) -> set[str]:
        return {p for paths in self.by_stem.values() for p in paths}

    def resolve(self, name: str, hint: str = "") -> tuple[str | None, int]:
        """Find the file for ``name``, using the folders of ``hint`` to break ties.

        Args:
            name: a file name or stem (``FILE0004`` or ``FILE0004.jpg``).
            hint: a path from another machine (``C:\\Users\\...\\cancer\\sub\\FILE0004.jpg``)
                whose trailing folders say which of several same-named files is meant.

        Returns:
            ``(relpath, n_candidates)``: the relative path, or None when no file or more than one
            equally good file carries that name; ``n_candidates`` tells which of the two.
        """
        candidates = self.by_stem.get(stem_key(name), [])
        if len(candidates) <= 1:
            return (candidates[0] if candidates else None), len(candidates)
        hint_dirs = [canonical_name(p) for p in split_any_path(hint)[:-1]]
        scores = [_trailing_match(PurePosixPath(c).parts[:-1], hint_dirs) for c in candidates]
        best = max(scores)
        winners = [c for c, s in zip(candidates, scores) if s == best]
        if best > 0 and len(winners) == 1:
            return winners[0], len(candidates)
        return None, len(candidates)


def _trailing_match(folders: tuple[str, ...], hint_dirs: list[str]) -> int:
    """How many folders, counted from the file upward, agree between a candidate and a hint."""
    n = 0
    for mine, theirs in zip(reversed(folders), reversed(hint_dirs)):
        if canonical_name(mine) != theirs:
            break
        n += 1
    return n


def build_index(root: Path, data_root: Path | None = None) -> ImageIndex:
    """Walk ``root`` once and index every image file below it (hidden folders skipped).

    Args:
        root: the folder to index.
        data_root: the folder that relative paths in reports start from (default: ``root``).

    Raises:
        UserError: if ``root`` is not a readable folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"Image folder not found: {root}.")
    index = ImageIndex(root=root.resolve())
    if data_root is not None:
        rel = os.path.relpath(index.root, Path(data_root).resolve())
        index.prefix = "" if rel == "." else Path(rel).as_posix() + "/"
    # Plain strings rather than Path objects: at 20,000 files pathlib dominates the walk.
    stack = [("", str(index.root))]
    while stack:
        rel_folder, folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise UserError(f"Cannot read folder {folder}: {exc.strerror or exc}.") from exc
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append((rel_folder + entry.name + "/", entry.path))
            elif os.path.splitext(entry.name)[1].lower() in config.IMAGE_EXTENSIONS:
                rel = rel_folder + entry.name
                index.by_stem.setdefault(stem_key(entry.name), []).append(rel)
    for paths in index.by_stem.values():
        paths.sort()
    return index


def find_class_folders(root: Path) -> tuple[Path | None, Path | None]:
    """Find the cancer and non-cancer image folders directly below ``root`` (or one level down).

    Spellings vary ("Cancer", "cancer", "Non-Cancer", "non cancer"); names are compared after
    :func:`canonical_name`.
    """
    found: dict[str, Path] = {}
    for depth_dirs in (_subdirs(root), [d for s in _subdirs(root) for d in _subdirs(s)]):
        for d in depth_dirs:
            canon = canonical_name(d.name)
            if canon in config.CANCER_FOLDER_NAMES:
                found.setdefault("cancer", d)
            elif canon in config.NON_CANCER_FOLDER_NAMES:
                found.setdefault("non_cancer", d)
        if len(found) == 2:
            break
    return found.get("cancer"), found.get("non_cancer")


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
