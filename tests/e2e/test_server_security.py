"""What the server itself must keep refusing, whoever reaches its port."""

from __future__ import annotations

import socket
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


def _get(url: str, host: str | None = None, method: str = "GET", headers: dict | None = None):
    request = urllib.request.Request(url, method=method, headers=headers or {})
    if host is not None:
        request.add_unredirected_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode("utf-8", "replace")


def test_a_rebinding_host_name_gets_no_page_and_no_websocket(app_url):
    """DNS rebinding: a foreign name that resolves to 127.0.0.1 sends its own Host."""
    port = app_url.rsplit(":", 1)[1].strip("/")
    status, text = _get(app_url, host=f"rebind.example:{port}")
    assert status == 421 and "answers only at its own address" in text
    sock = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
    with pytest.raises(InvalidStatus) as refused:
        connect(
            f"ws://rebind.example:{port}/_stcore/stream", sock=sock,
            origin=f"http://rebind.example:{port}", subprotocols=["streamlit"], open_timeout=10,
        )  # fmt: skip
    assert refused.value.response.status_code == 403
    assert _get(app_url, host=f"localhost:{port}")[0] == 200  # the loopback names still answer


def test_the_metrics_endpoint_is_off(app_url):
    status, text = _get(app_url.rstrip("/") + "/_stcore/metrics")
    assert status == 404 and "cache" not in text


def test_an_upload_larger_than_the_server_takes_is_refused_from_its_declared_length(app_url):
    status, text = _get(
        app_url.rstrip("/") + "/_stcore/upload_file/x/y", method="PUT",
        headers={"Content-Length": str(190 * 10**6), "Content-Type": "application/octet-stream"},
    )  # fmt: skip
    assert status == 413 and "at most 50 MB" in text


def test_chromium_on_a_rebinding_name_shows_no_dashboard(browser, app_url):
    port = app_url.rsplit(":", 1)[1].strip("/")
    from tests.e2e.conftest import CHROMIUM_FLAGS, chromium_path

    rebinding = browser.browser_type.launch(
        executable_path=chromium_path(),
        args=[*CHROMIUM_FLAGS, "--host-resolver-rules=MAP rebind.example 127.0.0.1"],
    )
    try:
        page = rebinding.new_page()
        page.goto(f"http://rebind.example:{port}/training", timeout=30_000)
        page.wait_for_timeout(3000)
        text = page.inner_text("body")
    finally:
        rebinding.close()
    assert "answers only at its own address" in text
    assert "Training" not in text and "Data matching" not in text
