"""Guards in front of Streamlit, on every HTTP request and websocket, before anything renders.

``serve.py`` wraps the dashboard in :class:`ServerGuard` (an ASGI middleware of ``st.App``), so
these hold for a browser and for a raw client alike:

* only the host names this deployment answers (the loopback names and ``BCP_SERVED_HOSTS``):
  a web page on another name that resolves to 127.0.0.1 (DNS rebinding) gets 421 and no
  websocket, so it never sees a page;
* ``/_stcore/metrics`` (cache names and sizes) answers only with ``BCP_METRICS=on``;
* an upload request larger than ``BCP_MAX_UPLOAD_MB`` is refused from its declared length,
  and one that sends more than it declared is cut off, before Streamlit buffers it;
* a client's "clear caches" message is dropped: it would empty every session's caches at once,
  and nobody needs it here (the app's own state never lives in those caches either).

The settings are read once, when the server starts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from bcp_core import access, settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

METRICS_PATH = "/_stcore/metrics"
UPLOAD_PATH = "/_stcore/upload_file"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _refuse(scope: Scope, send: Send, status: int, sentence: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": sentence[:120]})
        return
    body = sentence.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ServerGuard:
    """The ASGI middleware (see the module docstring)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app
        self.served = settings.served_hosts()
        self.metrics = settings.metrics_enabled()
        self.max_upload = settings.max_upload_bytes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if not access.host_allowed(_header(scope, b"host"), self.served):
            await _refuse(
                scope, send, 421,
                "This dashboard answers only at its own address (localhost, or a name set in "
                "BCP_SERVED_HOSTS).",
            )  # fmt: skip
            return
        path = str(scope.get("path") or "")
        if path.endswith(METRICS_PATH) and not self.metrics:
            await _refuse(scope, send, 404, "Not found.")
            return
        if scope["type"] == "http" and UPLOAD_PATH in path:
            declared = _header(scope, b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > self.max_upload):
                await _refuse(
                    scope, send, 413,
                    f"An upload may hold at most {self.max_upload // 10**6} MB.",
                )  # fmt: skip
                return
            receive = _capped(receive, self.max_upload)
        if scope["type"] == "websocket":
            receive = _without_clear_cache(receive)
        await self.app(scope, receive, send)


#: Client messages dropped on the way in (``BackMsg`` fields).
DROPPED_MESSAGES = frozenset({"clear_cache"})


def _without_clear_cache(receive: Receive) -> Receive:
    """``receive`` that skips the client messages of :data:`DROPPED_MESSAGES`."""
    from streamlit.proto.BackMsg_pb2 import BackMsg

    async def wrapped() -> Message:
        while True:
            message = await receive()
            data = message.get("bytes") if message["type"] == "websocket.receive" else None
            if data:
                back = BackMsg()
                try:
                    back.ParseFromString(data)
                except Exception:  # noqa: BLE001 - not ours to judge: Streamlit answers it
                    return message
                if back.WhichOneof("type") in DROPPED_MESSAGES:
                    continue
            return message

    return wrapped


def _capped(receive: Receive, limit: int) -> Receive:
    """``receive`` that ends the request once its body passes ``limit`` bytes."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                return {"type": "http.disconnect"}
        return message

    return wrapped
