"""Atomic writes: a file or a whole folder appears complete, or not at all.

Everything the product writes for later use (bundles, their ``bundle.json``, the demo dataset)
is written under a temporary name beside its target and renamed into place, so a crash, a full
disk or a killed process leaves either the previous version or the new one, never half of one.
"""

from __future__ import annotations

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


def recover_dir(target: Path) -> None:
    """Undo an interrupted replacement: put the previous folder back if the new one is missing.

    :func:`replace_dir` moves the old folder aside before moving the new one in; a process
    killed between the two renames leaves only ``.NAME.old-*``.
    """
    if target.exists():
        return
    old = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if old:
        os.replace(old[-1], target)


def remove_stale(target: Path) -> None:
    """Delete temporary folders that a killed writer of ``target`` left behind."""
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished folder ``tmp`` to ``target``, replacing an older folder there."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            os.replace(old, target)  # put the previous folder back
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


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
