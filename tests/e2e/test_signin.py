"""Real sign-in: the dashboard with ``[auth]`` pointing at a mock OpenID Connect provider
(oidc-provider-mock on 127.0.0.1), driven by Chromium; each role sees its own dashboard."""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import viewable_copy
from tests.e2e.conftest import ARTIFACTS, REPO, dashboard_server, free_port

ROLES = '[users]\n"ana@h.org" = "analyst"\n"val@h.org" = "viewer"\n'


@pytest.fixture(scope="module")
def provider():
    from oidc_provider_mock import run_server_in_thread

    with run_server_in_thread(port=free_port()) as server:
        yield f"http://localhost:{server.server_port}"


@contextmanager
def signin_server(provider: str, data_root: Path, demo_bundle: Path, here: Path):
    """A fresh dashboard process with sign-in configured in its own secrets file, files in
    ``here``; yields its address."""
    bundles = here / "bundles"
    viewable_copy(demo_bundle, bundles / "demo")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    secrets = here / "secrets.toml"
    secrets.write_text(
        "[auth]\n"
        f'redirect_uri = "{url}/oauth2callback"\n'
        'cookie_secret = "e2e-cookie-secret-not-for-production"\n'
        'client_id = "bcp-dashboard"\n'
        'client_secret = "e2e-client-secret"\n'
        f'server_metadata_url = "{provider}/.well-known/openid-configuration"\n'
    )
    (here / "roles.toml").write_text(ROLES)
    env = dict(
        BCP_DATA_ROOT=str(data_root),
        BCP_ALLOWED_ROOTS=str(data_root),
        BCP_BUNDLES_DIR=str(bundles),
        BCP_ROLES_FILE=str(here / "roles.toml"),
        BCP_AUDIT_LOG=str(here / "audit.jsonl"),
    )
    with dashboard_server(here, env, ("--secrets.files", str(secrets)), port=port) as served:
        yield served


@pytest.fixture(scope="module")
def signin_app(provider, small_demo, demo_bundle, tmp_path_factory):
    here = tmp_path_factory.mktemp("signin")
    with signin_server(provider, small_demo[0], demo_bundle, here) as url:
        yield url, here


def register(provider: str, email: str, verified: bool = True) -> None:
    """The provider's user ``email`` with a verified (or not) e-mail claim."""
    import json
    import urllib.request

    body = json.dumps({"email": email, "email_verified": verified}).encode()
    request = urllib.request.Request(
        f"{provider}/users/{email}", data=body, method="PUT",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    urllib.request.urlopen(request, timeout=10).close()


def sign_in(browser, url: str, email: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1600})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.get_by_text("Sign in with your hospital account").wait_for()
    page.get_by_role("button", name="Sign in").click()
    page.locator("input[name=sub]").fill(email)  # the mock provider's sign-in form
    page.get_by_role("button", name="Authorize").click()
    page.get_by_text(f"Signed in as {email}").wait_for()
    return context, page


def mask_toggle(page):
    return page.locator("label", has_text="Mask patient IDs").locator("input").first


def test_an_analyst_and_a_viewer_sign_in_and_see_their_own_dashboard(browser, signin_app, provider):
    url, here = signin_app
    register(provider, "ana@h.org")
    register(provider, "val@h.org")
    ARTIFACTS.mkdir(exist_ok=True)
    context, page = sign_in(browser, url, "ana@h.org")
    page.get_by_text("(analyst)").wait_for()
    nav = page.locator('[data-testid="stSidebarNav"]')
    assert nav.get_by_text("Training", exact=True).count() == 1
    page.get_by_text("Cancer rows").first.wait_for()
    assert (
        mask_toggle(page).is_enabled() and page.get_by_label("Data root", exact=True).is_enabled()
    )
    page.screenshot(path=str(ARTIFACTS / "signin-analyst.png"))
    context.close()

    context, page = sign_in(browser, url, "val@h.org")
    page.get_by_text("(viewer)").wait_for()
    page.get_by_role("heading", name="Prediction").wait_for()  # a reader's home
    nav = page.locator('[data-testid="stSidebarNav"]')
    assert nav.get_by_text("Training", exact=True).count() == 0
    assert nav.get_by_text("Prediction", exact=True).count() == 1
    assert (
        mask_toggle(page).is_disabled() and page.get_by_label("Data root", exact=True).is_disabled()
    )
    page.screenshot(path=str(ARTIFACTS / "signin-viewer.png"))
    context.close()

    log = (here / "audit.jsonl").read_text()
    assert '"who": "ana@h.org", "action": "sign_in"' in log
    assert '"who": "val@h.org", "action": "sign_in"' in log


def test_on_a_fresh_server_no_page_address_shows_anything_before_sign_in(
    browser, provider, small_demo, demo_bundle, tmp_path
):
    """Until someone has passed the gate, Streamlit serves a page's address by running its file
    alone (no streamlit_app.py): typed addresses must meet the sign-in prompt all the same."""
    with signin_server(provider, small_demo[0], demo_bundle, tmp_path) as url:
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(60_000)
        for name in sorted(p.stem for p in (REPO / "pages").glob("*.py")):
            page.goto(f"{url}/{name}")
            page.get_by_text("Sign in with your hospital account").wait_for()
            assert page.locator("h1").all_inner_texts() == ["Breast Cancer Prediction"], name
            for shown in ("Cancer rows", "Cancer images", "Upload", "Start training", "Entries"):
                assert page.get_by_text(shown).count() == 0, (name, shown)
        context.close()


def test_cookies_saved_before_sign_out_do_not_sign_in_again(browser, signin_app, provider):
    """Security row 6: replaying the cookies after "Sign out" signed the same person in."""
    url, here = signin_app
    register(provider, "ana@h.org")
    context, page = sign_in(browser, url, "ana@h.org")
    page.get_by_text("(analyst)").wait_for()
    saved = context.cookies()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_timeout(3000)  # the sign-out reaches the server (the provider may be shown)
    context.close()
    replay = browser.new_context(viewport={"width": 1400, "height": 1600})
    replay.add_cookies(saved)
    page = replay.new_page()
    page.goto(url)
    page.get_by_text(re.compile("You signed out|Sign in with your hospital account")).wait_for()
    assert page.get_by_text("(analyst)").count() == 0
    assert page.get_by_text("Cancer rows").count() == 0
    replay.close()
