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
