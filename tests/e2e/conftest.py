"""A real dashboard server (``streamlit run``) and a real headless Chromium for browser tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import viewable_copy

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("No Chromium found: install Debian's chromium (apt-get install chromium).")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout} s")


def stop_server(proc: subprocess.Popen) -> None:
    """End a server started in its own process group (SIGTERM, then SIGKILL after 15 s)."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def serving(command: list[str], here: Path, port: int, env: dict[str, str] | None = None):
    """Run ``command`` (a dashboard server on ``port``) in its own process group, its output in
    ``here/streamlit.log`` and its process id in ``here/server.pid``; yield its address once
    it answers, and stop it afterwards."""
    url = f"http://127.0.0.1:{port}"
    with open(here / "streamlit.log", "wb") as log:
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    (here / "server.pid").write_text(str(proc.pid))
    try:
        wait_for_health(url, proc)
        yield url
    finally:
        stop_server(proc)


@contextmanager
def dashboard_server(
    here: Path, env: dict[str, str], args: tuple[str, ...] = (), port: int | None = None
) -> Iterator[str]:
    """A fresh dashboard process (``streamlit run serve.py``, its guards included) on a
    loopback port (a free one unless given), with these ``BCP_*`` settings over a clean
    environment (``BCP_MODE`` unset unless given); files as :func:`serving` says."""
    port = port or free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("BCP_")}
    command = [
        sys.executable, "-m", "streamlit", "run", "serve.py", "--server.headless", "true",
        "--server.port", str(port), "--server.address", "127.0.0.1", *args,
    ]  # fmt: skip
    with serving(command, here, port, {**base, **env}) as url:
        yield url


@pytest.fixture(scope="session")
def app_url(small_demo, demo_bundle, tmp_path_factory):
    """The dashboard started by the README's run command (``make run``) on a free port.

    The small demo dataset and a tiny demo bundle are made beforehand, so ``make run`` finds
    them and goes straight to serving (the real first start writes and trains them).
    """
    real_root, _ = small_demo
    # make cannot name targets with spaces: reach the (non-ASCII, spaced) demo through a link.
    root = tmp_path_factory.mktemp("e2e-data") / "demo"
    root.symlink_to(real_root, target_is_directory=True)
    bundles = tmp_path_factory.mktemp("e2e-bundles")
    viewable_copy(demo_bundle, bundles / "demo")
    port = free_port()
    command = [
        "make", "--no-print-directory", "run", f"PORT={port}", "ADDRESS=127.0.0.1",
        f"DEMO={root}", f"BUNDLES={bundles}", f"PYTHON={sys.executable}",
        f"VENV={Path(sys.executable).parent.parent}",
    ]  # fmt: skip
    with serving(command, tmp_path_factory.mktemp("server"), port) as url:
        yield url


@pytest.fixture(scope="session")
def demo_app(small_demo, demo_bundle, tmp_path_factory):
    """The locked clinician demo (``BCP_MODE=demo``: everyone a viewer) on its own server, with
    a session upload cap of 25 MB that tests can reach; yields (address, its folder)."""
    here = tmp_path_factory.mktemp("demo-mode")
    viewable_copy(demo_bundle, here / "bundles" / "demo")
    env = {
        "BCP_MODE": "demo",
        "BCP_MAX_SESSION_UPLOAD_MB": "25",
        "BCP_DATA_ROOT": str(small_demo[0]),
        "BCP_ALLOWED_ROOTS": str(small_demo[0].parent),
        "BCP_BUNDLES_DIR": str(here / "bundles"),
        "BCP_AUDIT_LOG": str(here / "audit.jsonl"),
    }
    with dashboard_server(here, env) as url:
        yield url, here


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 2200})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    context.close()
