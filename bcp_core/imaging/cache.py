"""A disk cache of prepared images: training epochs after the first decode nothing.

Training reads every image once an epoch (and every validation image once more to score it),
and each read decodes the file and prepares it
(:func:`~bcp_core.imaging.preparation.preprocess_image`). The result depends only on the file,
the :class:`~bcp_core.config.PreprocessSpec` and the preparation code, so
:class:`PreparedCache` keeps it on disk after the first read:

* one folder per spec and code, named by a hash of the spec, the source of the modules that
  decode and prepare (:data:`CODE_MODULES`) and the versions of the libraries they call; a
  change to any of them starts a new folder, so a stale input is never read. ``spec.json`` in
  it says what it holds, and its time says when it was last opened;
* one ``.npy`` file per image (float32, exactly the array prepared: a run with the cache
  trains on the very inputs a run without it does, and prediction prepares), named by a hash
  of the file's fingerprint (its resolved path, size and modification time): a file that is
  replaced or edited gets a new entry. Read with ``allow_pickle=False``: an entry is numbers,
  never code. (A 16-bit copy, within 8e-6 of each value, was tried first: one fold-0 run
  trained on it ended at another epoch and 0.06 lower, so inputs are kept exactly);
* every entry is written under a temporary name and renamed into place, so a killed run
  leaves whole entries only; an entry that cannot be read back (damaged, or the wrong size) is
  prepared again and replaced;
* the cache holds at most ``max_bytes``: on opening, the folders of other specs are deleted,
  least recently opened first, until it fits; when the open folder itself fills it, further
  images are prepared afresh each time and not kept (:attr:`PreparedCache.full`).

A file that cannot be read is not cached: every read of it fails with the same sentence, as
without the cache. The cache holds derived patient images: it belongs where the films do, and
the folders it makes are readable by their owner only.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL

from bcp_core.config import PreprocessSpec
from bcp_core.errors import UserError
from bcp_core.fileio import write_bytes_atomic, write_json_atomic

#: The modules whose code makes a prepared image; their source is part of the cache's key.
#: (Imported when a cache is opened: the entry points import this module for its settings.)
CODE_MODULES = (
    "bcp_core.imaging.preparation",
    "bcp_core.imaging.decode",
    "bcp_core.imaging.dicom",
)
#: The setting that names the cache's folder ("off" turns it off), and its size limit in GB.
ENV_IMAGE_CACHE, ENV_IMAGE_CACHE_GB = "BCP_IMAGE_CACHE", "BCP_IMAGE_CACHE_GB"
#: Default size limit of the cache (GB, 10^9 bytes).
DEFAULT_MAX_GB = 10
DEFAULT_MAX_BYTES = DEFAULT_MAX_GB * 10**9
#: Folders the cache makes are its owner's alone (its files are, as every atomic write's).
_PRIVATE = 0o700
#: Written into each spec folder: what it holds.
_SPEC_FILE = "spec.json"
#: The name of a spec folder (spec_folder_name).
_SPEC_FOLDER = re.compile(r"[0-9]+x[0-9]+-[0-9a-f]{16}")


@dataclass(frozen=True)
class CacheSettings:
    """Where prepared images are cached and how much room they may take.

    Attributes:
        folder: the cache's root folder (created when first used).
        max_bytes: the most bytes all its entries may take together.
    """

    folder: Path
    max_bytes: int = DEFAULT_MAX_BYTES


def code_fingerprint() -> str:
    """A hash of the preparation's source code and of the library versions it relies on."""
    import scipy

    h = hashlib.blake2b(digest_size=16)
    for name in CODE_MODULES:
        h.update(Path(str(importlib.import_module(name).__file__)).read_bytes())
    for version in (np.__version__, PIL.__version__, scipy.__version__):
        h.update(version.encode())
    return h.hexdigest()


def spec_folder_name(spec: PreprocessSpec, code: str) -> str:
    """The name of the folder that holds ``spec``'s inputs made by code ``code``."""
    text = json.dumps({"spec": spec.to_dict(), "code": code}, sort_keys=True)
    return f"{spec.height}x{spec.width}-{hashlib.blake2b(text.encode(), digest_size=8).hexdigest()}"


class PreparedCache:
    """The prepared images of one :class:`PreprocessSpec`, kept on disk (see the module).

    Safe to use from several threads at once (tf.data reads in parallel), and from several
    processes sharing a folder: entries are renamed into place whole.

    Attributes:
        folder: the spec's folder inside the cache.
        hits, misses: reads answered from the cache, and reads that prepared the image.
        full: the size limit was reached; new images are no longer kept.
    """

    def __init__(self, settings: CacheSettings, spec: PreprocessSpec):
        """Open (or start) the cache's folder for ``spec``, evicting other specs' to fit.

        Raises:
            UserError: the folder cannot be made or written (it names the setting to change).
        """
        from bcp_core.imaging.preparation import preprocess_image

        self._prepare = preprocess_image
        self.spec = spec
        self.max_bytes = int(settings.max_bytes)
        root = Path(settings.folder)
        code = code_fingerprint()
        self.folder = root / spec_folder_name(spec, code)
        try:
            root.mkdir(parents=True, exist_ok=True, mode=_PRIVATE)
            self.folder.mkdir(exist_ok=True, mode=_PRIVATE)
            marker = self.folder / _SPEC_FILE
            if marker.exists():
                os.utime(marker)  # opened now: the last folder to be evicted
            else:
                write_json_atomic(marker, {"spec": spec.to_dict(), "code": code})
            self._bytes = _evict(root, keep=self.folder, max_bytes=self.max_bytes)
        except OSError as exc:
            raise UserError(
                f"The image cache folder {root} cannot be used ({exc.strerror or exc}): set "
                f"{ENV_IMAGE_CACHE} to a folder this server may write, or to off."
            ) from None
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        self.full = self._bytes >= self.max_bytes

    def entry(self, path: str | Path) -> Path:
        """Where the prepared image of ``path`` is kept (its fingerprint names it).

        Raises:
            OSError: the file cannot be found.
        """
        real = os.path.realpath(path)
        st = os.stat(real)
        key = hashlib.blake2b(
            f"{real}\0{st.st_size}\0{st.st_mtime_ns}".encode(), digest_size=16
        ).hexdigest()
        return self.folder / key[:2] / f"{key}.npy"

    def load(self, path: str | Path) -> np.ndarray:
        """The network input of the image file ``path``: float32 (H, W, 1) in [0, 1].

        From the cache when it holds the file's current version; else prepared (by
        :func:`~bcp_core.imaging.preparation.preprocess_image`) and kept. Either way the same
        array, to the bit.

        Raises:
            UserError: the file is not a readable image (the sentence of
                :func:`~bcp_core.imaging.preparation.preprocess_image`).
        """
        try:
            where = self.entry(path)
        except OSError:
            return self._prepare(path, self.spec)  # raises the sentence for a missing file
        cached = self._read(where)
        if cached is not None:
            with self._lock:
                self.hits += 1
            return cached
        prepared = np.ascontiguousarray(self._prepare(path, self.spec), dtype=np.float32)
        with self._lock:
            self.misses += 1
        self._keep(where, prepared)
        return prepared

    def _read(self, where: Path) -> np.ndarray | None:
        """The kept input at ``where``, or None when absent or unusable (then made again)."""
        shape = (self.spec.height, self.spec.width, 1)
        try:
            with open(where, "rb") as fh:
                kept = np.load(fh, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if kept.shape != shape or kept.dtype != np.float32:
            return None
        return kept

    def _keep(self, where: Path, prepared: np.ndarray) -> None:
        if self.full:
            return
        buffer = io.BytesIO()
        np.save(buffer, prepared, allow_pickle=False)
        data = buffer.getvalue()
        with self._lock:
            if self._bytes + len(data) > self.max_bytes:
                self.full = True
                return
            self._bytes += len(data)
        try:
            where.parent.mkdir(exist_ok=True, mode=_PRIVATE)
            write_bytes_atomic(where, data)
        except OSError:  # a full disk or a read-only folder: train on, without keeping it
            with self._lock:
                self.full = True


def _folder_bytes(folder: Path) -> int:
    total = 0
    for base, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(base, name)).st_size
            except OSError:  # removed meanwhile
                pass
    return total


def _is_spec_folder(path: Path) -> bool:
    """A folder this cache made (its name and its ``spec.json``); nothing else is touched."""
    return (
        _SPEC_FOLDER.fullmatch(path.name) is not None
        and path.is_dir()
        and not path.is_symlink()
        and (path / _SPEC_FILE).is_file()
    )


def _evict(root: Path, keep: Path, max_bytes: int) -> int:
    """Delete spec folders other than ``keep``, least recently opened first, until the
    cache fits ``max_bytes``; return the bytes it holds then. Only folders the cache made are
    counted or deleted, whatever else the root folder holds."""
    sizes = {p: _folder_bytes(p) for p in root.iterdir() if _is_spec_folder(p)}
    total = sum(sizes.values())
    others = sorted((p for p in sizes if p != keep), key=_opened)
    for folder in others:
        if total <= max_bytes:
            break
        shutil.rmtree(folder, ignore_errors=True)
        total -= sizes[folder]
    return total


def _opened(folder: Path) -> float:
    try:
        return (folder / _SPEC_FILE).stat().st_mtime
    except OSError:
        return 0.0
