"""How many pixels an image may declare, checked from its header before anything is decoded."""

from __future__ import annotations

from bcp_core import config, settings
from bcp_core.errors import UserError


def pixel_limit(*, upload: bool) -> int:
    """The most pixels an image may declare: an upload's limit, or any file's."""
    return min(config.MAX_PIXELS, settings.max_upload_pixels()) if upload else config.MAX_PIXELS


def check_declared_pixels(width: int, height: int, name: str, *, upload: bool) -> None:
    """Refuse an image whose header declares too many pixels, before it is decoded.

    Any file: at most ``config.MAX_PIXELS`` (a decompression bomb). An upload (bytes): at most
    :func:`bcp_core.settings.max_upload_pixels`, a mammogram's size (40 million by default).

    Raises:
        UserError: one sentence naming the file, its size and the limit.
    """
    pixels = width * height
    if pixels > config.MAX_PIXELS:
        raise UserError(
            f"{name} declares {width} x {height} pixels, more than the limit of "
            f"{config.MAX_PIXELS:,}; it is refused as a possible decompression bomb."
        )
    if not upload:
        return  # the upload setting is read for uploads only: a bad value never stops the CLI
    limit = settings.max_upload_pixels()
    if pixels > limit:
        raise UserError(
            f"{name} declares {width} x {height} pixels, more than the {limit:,} an uploaded "
            f"mammogram may have ({settings.ENV_MAX_UPLOAD_PIXELS}); it is refused before "
            "decoding. Upload it at a smaller size."
        )
