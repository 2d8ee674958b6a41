"""How many pixels an image may declare, checked from its header before anything is decoded.

Any file: at most ``config.MAX_PIXELS`` (a decompression bomb). An upload (bytes from a browser):
at most the upload limit as well, a mammogram's size. This module reads no setting: the caller
passes the upload limit (the dashboard reads it from ``BCP_MAX_UPLOAD_PIXELS`` through
:mod:`bcp_core.settings`; a library caller gets :data:`DEFAULT_MAX_UPLOAD_PIXELS`), so an unusable
value of that setting never reaches the decoding of anything but an upload.
"""

from __future__ import annotations

from bcp_core import config
from bcp_core.errors import UserError

#: The setting that changes the upload limit, named in refusals (read by bcp_core.settings).
ENV_MAX_UPLOAD_PIXELS = "BCP_MAX_UPLOAD_PIXELS"
#: Most pixels an uploaded image may declare: a full-field mammogram has 10 to 30 million.
DEFAULT_MAX_UPLOAD_PIXELS = 40_000_000


def pixel_limit(upload_limit: int | None) -> int:
    """The most pixels an image may declare: any file's, or an upload's (``upload_limit``; None
    for a file that is not an upload)."""
    return config.MAX_PIXELS if upload_limit is None else min(config.MAX_PIXELS, upload_limit)


def check_declared_pixels(width: int, height: int, name: str, *, upload_limit: int | None) -> None:
    """Refuse an image whose header declares too many pixels, before it is decoded.

    Any file: at most ``config.MAX_PIXELS`` (a decompression bomb). An upload: at most
    ``upload_limit`` too (None: not an upload).

    Raises:
        UserError: one sentence naming the file, its size and the limit.
    """
    pixels = width * height
    if pixels > config.MAX_PIXELS:
        raise UserError(
            f"{name} declares {width} x {height} pixels, more than the limit of "
            f"{config.MAX_PIXELS:,}; it is refused as a possible decompression bomb."
        )
    if upload_limit is not None and pixels > upload_limit:
        raise UserError(
            f"{name} declares {width} x {height} pixels, more than the {upload_limit:,} an "
            f"uploaded mammogram may have ({ENV_MAX_UPLOAD_PIXELS}); it is refused before "
            "decoding. Upload it at a smaller size."
        )
