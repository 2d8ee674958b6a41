"""Guards in front of Streamlit, on every HTTP request and websocket, before anything renders.

``serve.py`` wraps the dashboard in :class:`ServerGuard` (an ASGI middleware of ``st.App``), so
these hold for a browser and for a raw client alike:

* only the host names this deployment answers (the loopback names and ``BCP_SERVED_HOSTS``):
  a web page on another name that resolves to 127.0.0.1 (DNS rebinding) gets 421 and no
  websocket, so it never sees a page;
* ``/_stcore/metrics`` (cache names and sizes) answers only with ``BCP_METRICS=on``;
* an upload request larger than ``BCP_MAX_UPLOAD_MB`` is refused from its declared length,
  and one that sends more than it declared is cut off, before Streamlit buffers it;
* the uploads a session holds (Streamlit keeps them in memory until the page drops them or the
  session ends) are counted: past ``BCP_MAX_SESSION_UPLOAD_MB`` for one session, or
  ``BCP_MAX_UPLOADS_GB`` for all, a new upload is refused (:class:`UploadLedger`);
* a client's "clear caches" message is dropped: it would empty every session's caches at once,
  and nobody needs it here (the app's own state never lives in those caches either).

The settings are read once, when the server starts.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from bcp_core import access, settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

METRICS_PATH = "/_stcore/metrics"
UPLOAD_PATH = "/_stcore/upload_file"


#: Seconds a session's uploads are still counted after it stopped being active: Streamlit
#: keeps a disconnected session, and its uploads, for its server.disconnectedSessionTTL (120 s).
GONE_AFTER_S = 180.0


@dataclass
class UploadLedger:
    """The bytes of uploads each session holds, as the guard let them in, with two caps.

    An upload counts from its request until the page deletes it (the browser's DELETE), its
    request fails, or its session has been inactive for :data:`GONE_AFTER_S` seconds.
    """

    per_session: int
    total: int
    held: dict[str, dict[str, int]] = field(default_factory=dict)
    inactive_since: dict[str, float] = field(default_factory=dict)

    def forget_gone(self, active: Callable[[str], bool], now: float) -> None:
        """Drop the sessions inactive for longer than :data:`GONE_AFTER_S`."""
        for session in list(self.held):
            if active(session):
                self.inactive_since.pop(session, None)
            elif now - self.inactive_since.setdefault(session, now) > GONE_AFTER_S:
                self.held.pop(session)
                self.inactive_since.pop(session)

    def admit(self, session: str, file_id: str, size: int) -> tuple[int, str] | None:
        """Count one upload of ``size`` bytes; None when it fits, else the refusal's HTTP status
        and sentence."""
        mine = sum(self.held.get(session, {}).values())
        if mine + size > self.per_session:
            return 413, (
                f"This session already holds {mine // 10**6} MB of uploads, the most one session "
                f"may hold is {self.per_session // 10**6} MB: remove files from the page, or "
                "predict them as separate batches."
            )
        if sum(map(sum, (f.values() for f in self.held.values()))) + size > self.total:
            return 503, (
                "The server holds as many uploaded files as it takes now; try again in a few "
                "minutes."
            )
        self.held.setdefault(session, {})[file_id] = size
        return None

    def release(self, session: str, file_id: str) -> None:
        """An upload the page deleted, or whose request failed."""
        self.held.get(session, {}).pop(file_id, None)


def _session_active(session: str) -> bool:
    """Whether Streamlit has this session connected (every session counts without a runtime)."""
    from streamlit.runtime import Runtime

    return Runtime.instance().is_active_session(session) if Runtime.exists() else True


def _upload_ids(path: str) -> tuple[str, str] | None:
    """(session, file) of an upload address ``.../upload_file/<session>/<file>``."""
    parts = path.split(UPLOAD_PATH, 1)[1].strip("/").split("/")
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None


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
        self.uploads = UploadLedger(
            settings.max_session_upload_bytes(), settings.max_uploads_bytes()
        )

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
            ids = _upload_ids(path)
            if ids is not None and scope.get("method") in ("PUT", "DELETE"):
                await self._counted_upload(scope, receive, send, ids, declared)
                return
        if scope["type"] == "websocket":
            receive = _without_clear_cache(receive)
        await self.app(scope, receive, send)

    async def _counted_upload(
        self, scope: Scope, receive: Receive, send: Send, ids: tuple[str, str], declared: str | None
    ) -> None:
        """Pass an upload (PUT) or its removal (DELETE) on, keeping :attr:`uploads` true."""
        session, file_id = ids
        if scope["method"] == "DELETE":
            await self.app(scope, receive, send)
            self.uploads.release(session, file_id)
            return
        self.uploads.forget_gone(_session_active, time.monotonic())
        size = int(declared) if declared is not None else self.max_upload
        refusal = self.uploads.admit(session, file_id, size)
        if refusal is not None:
            # Read the body (at most max_upload bytes by now, and dropped) so that the client
            # gets the sentence, not a connection reset halfway through its request.
            while (await receive()).get("more_body"):
                pass
            await _refuse(scope, send, *refusal)
            return

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 300:
                self.uploads.release(session, file_id)  # Streamlit kept nothing
            await send(message)

        await self.app(scope, receive, watched)


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
