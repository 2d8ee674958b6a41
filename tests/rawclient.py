"""A raw client of the dashboard's websocket, speaking Streamlit's own protocol.

A browser sends only what the page offers; a script can send any message and any widget
value: a click on a button the page never drew, a value outside a select box's options, a
page its role may not open, the clear-cache message. Security tests use this client to show
that every guard lives on the server.

    with RawClient(app_url) as client:
        screen = client.run("training")                  # what the page draws for this session
        button = screen.widget_id("tr_start")            # ids come from the server's own deltas
        screen = client.run("training", {button: True})  # a forged click
        assert "needs the analyst role" in screen.text

Widget ids depend only on the widget's label, key and parameters, so an id learned from one
server (a local copy of the app) is the id on another: exactly what an attacker would do.
"""

from __future__ import annotations

import http.cookiejar
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.sync.client import ClientConnection, connect

#: Element fields whose text a person would read on the page.
_TEXT_FIELDS = ("body", "label", "help", "caption", "text", "message")


def stream_url(app_url: str) -> str:
    """The websocket address of a dashboard served at ``app_url``."""
    return app_url.replace("http://", "ws://").rstrip("/") + "/_stcore/stream"


@dataclass
class Screen:
    """What one script run sent: its elements in order, and how the run ended."""

    elements: list[Any] = field(default_factory=list)
    finished: str = ""

    @property
    def text(self) -> str:
        """Every readable string of every element, one per line."""
        lines = []
        for element in self.elements:
            for name in _TEXT_FIELDS:
                value = getattr(element, name, "")
                if isinstance(value, str) and value:
                    lines.append(value)
        return "\n".join(lines)

    @property
    def tables(self) -> bytes:
        """The serialised data of every table and data frame drawn (Arrow IPC bytes)."""
        found = []
        for element in self.elements:
            arrow = getattr(element, "arrow_data", None)  # st.dataframe
            found.append(arrow.data if arrow is not None else getattr(element, "data", b""))
        return b"".join(found)

    def widget_id(self, key: str) -> str:
        """The id of the widget drawn with this ``key`` (AssertionError when not drawn)."""
        ids = [e.id for e in self.elements if getattr(e, "id", "").endswith(f"-{key}")]
        assert len(ids) == 1, f"{len(ids)} widgets with the key {key!r} on this screen"
        return ids[0]


def widget_state(widget_id: str, value: Any) -> WidgetState:
    """A widget's value as the browser would send it: True is a click, a str a text or a
    select box's choice, an int or float a number, a list of str a multiselect."""
    state = WidgetState(id=widget_id)
    if value is True:
        state.trigger_value = True
    elif isinstance(value, bool):
        state.bool_value = value
    elif isinstance(value, int):
        state.int_value = value
    elif isinstance(value, float):
        state.double_value = value
    elif isinstance(value, str):
        state.string_value = value
    elif isinstance(value, list):
        state.string_array_value.data.extend(value)
    else:
        raise TypeError(f"no widget value of type {type(value).__name__}")
    return state


class RawClient:
    """One websocket session of a dashboard, driven message by message."""

    def __init__(self, app_url: str, *, origin: str | None = None, cookie: str | None = None):
        headers = {"Cookie": cookie} if cookie else None
        self.app_url = app_url.rstrip("/")
        self.session_id = ""  # the server's name for this session, from its first reply
        self._http: urllib.request.OpenerDirector | None = None
        self._xsrf = ""
        self._socket: ClientConnection = connect(
            stream_url(app_url),
            origin=origin or app_url.rstrip("/"),  # type: ignore[arg-type]
            subprotocols=["streamlit"],  # type: ignore[list-item]
            additional_headers=headers,
            open_timeout=10,
            max_size=None,
        ).__enter__()  # this client is the context manager; closed by close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._socket.close()

    def send(self, message: BackMsg) -> None:
        """Send any message, whether or not a browser would."""
        self._socket.send(message.SerializeToString())

    def run(
        self, page: str = "", widgets: dict[str, Any] | None = None, timeout: float = 120
    ) -> Screen:
        """Rerun the script on ``page`` (its address, "" for the home page) with these widget
        values, and collect what the run draws until it finishes.

        A new session first opens the home page, as a browser does (a session whose first run
        names another page is sent that page without the sidebar)."""
        if page and not self.session_id:
            self.run("", timeout=timeout)
        message = BackMsg()
        state = message.rerun_script
        state.page_name = page
        state.widget_states.widgets.extend(
            widget_state(key, value) for key, value in (widgets or {}).items()
        )
        self.send(message)
        return self.collect(timeout)

    def upload(self, data: bytes, name: str = "f.dcm") -> tuple[int, str, str]:
        """PUT one file to this session's upload address, as the browser does (multipart, with
        the XSRF token the server gives any visitor); returns the status, the reply's text and
        the file id used."""
        if self._http is None:
            jar = http.cookiejar.CookieJar()
            self._http = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
            self._http.open(self.app_url + "/_stcore/health", timeout=30).read()
            self._xsrf = next((c.value for c in jar if c.name == "_streamlit_xsrf"), "")
        boundary, file_id = uuid.uuid4().hex, str(uuid.uuid4())
        part = f'form-data; name="file"; filename="{name}"'
        head = f"--{boundary}\r\nContent-Disposition: {part}\r\n\r\n"
        body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
        return (*self._http_call("PUT", file_id, body, boundary), file_id)

    def delete_upload(self, file_id: str) -> int:
        """The browser's removal of an uploaded file; returns the status."""
        return self._http_call("DELETE", file_id, None, "")[0]

    def _http_call(self, method: str, file_id: str, body: bytes | None, boundary: str):
        assert self._http is not None and self.session_id, "upload after the first run()"
        headers = {"X-Xsrftoken": self._xsrf}
        if boundary:
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        request = urllib.request.Request(
            f"{self.app_url}/_stcore/upload_file/{self.session_id}/{file_id}",
            data=body, method=method, headers=headers,
        )  # fmt: skip
        try:
            with self._http.open(request, timeout=120) as reply:
                return reply.status, reply.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as refused:
            return refused.code, refused.read().decode("utf-8", "replace")

    def clear_cache(self) -> None:
        """Streamlit's "Clear caches" message (a browser offers it in developer mode only)."""
        self.send(BackMsg(clear_cache=True))

    def collect(self, timeout: float = 120) -> Screen:
        """The elements sent until the running script finishes."""
        screen = Screen()
        while True:
            raw = self._socket.recv(timeout=timeout)
            message = ForwardMsg()
            message.ParseFromString(raw)
            kind = message.WhichOneof("type")
            if kind == "new_session":
                self.session_id = message.new_session.initialize.session_id
            elif kind == "delta" and message.delta.WhichOneof("type") == "new_element":
                element = message.delta.new_element
                inner = element.WhichOneof("type")
                if inner:
                    screen.elements.append(getattr(element, inner))
            elif kind == "script_finished":
                screen.finished = ForwardMsg.ScriptFinishedStatus.Name(message.script_finished)
                if "EARLY_FOR_RERUN" not in screen.finished:
                    return screen
