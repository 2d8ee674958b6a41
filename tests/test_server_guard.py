"""The server guard (dashboard/server.py) as an ASGI middleware, driven without a server."""

from __future__ import annotations

import asyncio
import threading

from streamlit.proto.BackMsg_pb2 import BackMsg

from dashboard.server import ServerGuard


def run_guard(scope, messages):
    """What reaches the app behind the guard, for a client sending ``messages``."""
    seen: list = []
    queue = list(messages)

    async def app(scope, receive, send):
        while (message := await receive())["type"] == "websocket.receive":
            back = BackMsg()
            back.ParseFromString(message["bytes"])
            seen.append(back.WhichOneof("type"))

    async def receive():
        if queue:
            return {"type": "websocket.receive", "bytes": queue.pop(0).SerializeToString()}
        return {"type": "websocket.disconnect"}

    async def send(message):
        seen.append(message["type"])

    # A thread of its own: the test session may already run an event loop (the browser's).
    thread = threading.Thread(target=lambda: asyncio.run(ServerGuard(app)(scope, receive, send)))
    thread.start()
    thread.join(timeout=30)
    return seen


def test_a_raw_clients_clear_cache_message_never_reaches_streamlit():
    """Security row 1: anyone, signed in or not, could empty every session's caches."""
    clear, heartbeat = BackMsg(), BackMsg()
    clear.clear_cache = True
    heartbeat.app_heartbeat = True
    scope = {"type": "websocket", "path": "/_stcore/stream", "headers": [(b"host", b"localhost")]}
    assert run_guard(scope, [heartbeat, clear, heartbeat]) == ["app_heartbeat", "app_heartbeat"]


def test_a_foreign_host_is_closed_before_the_app_sees_a_message():
    heartbeat = BackMsg()
    heartbeat.app_heartbeat = True
    scope = {"type": "websocket", "path": "/_stcore/stream", "headers": [(b"host", b"evil.test")]}
    assert run_guard(scope, [heartbeat]) == ["websocket.close"]


def test_the_upload_ledger_caps_a_session_and_the_server_and_forgets_gone_sessions():
    from dashboard.server import GONE_AFTER_S, UploadLedger

    ledger = UploadLedger(per_session=100, total=280)
    assert ledger.admit("a", "1", 60) is None
    status, sentence = ledger.admit("a", "2", 60)
    assert status == 413 and "already holds 0 MB" in sentence  # 60 bytes: 0 MB, in sentences
    assert ledger.admit("b", "1", 90) is None and ledger.admit("c", "1", 90) is None
    assert ledger.admit("d", "1", 90)[0] == 503  # 240 held, 330 would be: the server is full
    ledger.release("a", "1")  # the page removed it
    assert ledger.admit("d", "1", 90) is None
    # "b" disconnects: counted while Streamlit may keep its session, forgotten after.
    gone = {"b"}
    ledger.forget_gone(lambda s: s not in gone, now=1000.0)
    assert "b" in ledger.held
    ledger.forget_gone(lambda s: s not in gone, now=1000.0 + GONE_AFTER_S + 1)
    assert "b" not in ledger.held and "d" in ledger.held
