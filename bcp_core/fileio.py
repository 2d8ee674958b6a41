"""Atomic writes: a file or a whole folder appears complete, or not at all.

Everything the product writes for later use (bundles, their ``bundle.json``, the demo dataset)
is written under a temporary name beside its target and renamed into place, so a crash, a full
disk or a killed process leaves either the previous version or the new one, never half of one.

Replacing a folder takes two renames (the old one aside, the new one in). Between them the
target is missing; the renames run under an exclusive ``flock`` on the parent folder
(:func:`folder_lock`), readers read under the shared one, and only a reader that finds the
target missing once the lock is free (the writer was killed between the renames) puts the
previous folder back. So a page listing bundles while training saves one never sees it missing
and never undoes the writer's work. Locks are advisory and local: where the file system refuses
them (some network mounts) everything works without, as before.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def json_text(data: object) -> str:
    """``data`` as the product writes JSON files (indented, UTF-8 kept as it is)."""
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def write_json_atomic(path: Path, data: object) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it into place."""
    write_files_atomic(path.parent, {path.name: json_text(data)})


def write_files_atomic(folder: Path, texts: dict[str, str]) -> None:
    """Write each text to a temporary file in ``folder``, then rename them all into place.

    Every file is complete before the first rename, so a failed write (disk full) replaces
    none of them; each rename is atomic, and they follow each other without other work.
    """
    written: list[tuple[str, Path]] = []
    try:
        for name, text in texts.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
            written.append((tmp, folder / name))
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        for tmp, target in written:
            os.replace(tmp, target)
    except BaseException:
        for tmp, _ in written:
            Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def folder_lock(folder: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold a ``flock`` on ``folder`` itself (no lock file is left behind): exclusive for the
    renames that replace a folder inside it, shared for reading one.

    Best effort: a folder that cannot be opened or locked is used without the lock.
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # releases the lock


def recover_dir(target: Path) -> None:
    """Undo an interrupted replacement: put the previous folder back if the new one is missing.

    :func:`replace_dir` moves the old folder aside before moving the new one in; a process
    killed between the two renames leaves only ``.NAME.old-*``. A replacement still in progress
    holds the parent's lock, so this waits for it and then finds the target in place.
    """
    if target.exists():
        return
    with folder_lock(target.parent):
        if target.exists():
            return
        old = []
        for path in target.parent.glob(f".{target.name}.old-*"):
            try:
                old.append((path.stat().st_mtime, path))
            except FileNotFoundError:  # being deleted by a finished writer
                continue
        if old:
            os.replace(max(old)[1], target)


def remove_stale(target: Path) -> None:
    """Delete temporary folders that a killed writer of ``target`` left behind."""
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished folder ``tmp`` to ``target``, replacing an older folder there."""
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    with folder_lock(target.parent):
        if not target.exists():
            os.replace(tmp, target)
            return
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            os.replace(old, target)  # put the previous folder back
            raise
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` that replaces it when the block ends without error.

    Leftovers of an earlier interrupted write are recovered or removed first; on an error the
    temporary folder is deleted and ``target`` keeps what it had.

    Raises:
        OSError: when the parent folder cannot be created or written.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    remove_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0o700 would outlive the rename
    try:
        yield tmp
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
