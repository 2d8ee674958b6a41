"""What the server itself must keep refusing, whoever reaches its port."""

from __future__ import annotations

import urllib.request

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.e2e


def stream_url(app_url: str) -> str:
    return app_url.replace("http://", "ws://").rstrip("/") + "/_stcore/stream"


def open_stream(app_url: str, origin: str):
    return connect(stream_url(app_url), origin=origin, subprotocols=["streamlit"], open_timeout=10)


def test_a_page_of_another_site_cannot_open_the_apps_websocket(app_url):
    with pytest.raises(InvalidStatus) as refused:
        open_stream(app_url, "http://evil.example")
    assert refused.value.response.status_code == 403


def test_the_apps_own_origin_opens_it(app_url):
    with open_stream(app_url, app_url.rstrip("/")):
        pass  # the refusal above is about the origin, not a broken endpoint


def test_the_server_answers_on_the_loopback_address_only(app_url):
    assert app_url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(app_url.rstrip("/") + "/_stcore/health", timeout=10) as reply:
        assert reply.status == 200
