"""Forged messages from a raw websocket client: what the page never offers must still be refused.

Two real servers run side by side: one in local mode (one user with every right: the copy of
the app an attacker runs to learn widget ids) and one in demo mode (everyone a viewer). The
client sends widget values and clicks the page did not draw for its role; the server must
refuse them, record the refusal, and change nothing.
"""

from __future__ import annotations

import json
import time

import pytest

from bcp_core.data.datasource import read_data_root
from tests.conftest import viewable_copy
from tests.e2e.conftest import dashboard_server
from tests.rawclient import RawClient

pytestmark = pytest.mark.e2e

#: The delete box of page 3 (admins): the bundle chosen, its name typed, the button.
DELETE_KEYS = ("adm_delete_pick", "adm_delete_typed", "adm_delete")


def _bundles(here, demo_bundle, *names):
    folder = here / "bundles"
    for name in names:
        viewable_copy(demo_bundle, folder / name)
    return folder


@pytest.fixture(scope="module")
def local_app(small_demo, demo_bundle, tmp_path_factory):
    here = tmp_path_factory.mktemp("raw-local")
    bundles = _bundles(here, demo_bundle, "demo", "keep-me")
    env = {
        "BCP_DATA_ROOT": str(small_demo[0]),
        "BCP_ALLOWED_ROOTS": str(small_demo[0].parent),
        "BCP_BUNDLES_DIR": str(bundles),
        "BCP_AUDIT_LOG": str(here / "audit.jsonl"),
    }
    with dashboard_server(here, env) as url:
        yield url, here


def audit_lines(here) -> list[dict]:
    path = here / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def learned_ids(app_url: str, page: str, *keys: str) -> list[str]:
    """Widget ids as the attacker's own copy of the app (local mode) draws them."""
    with RawClient(app_url) as client:
        screen = client.run(page)
        return [screen.widget_id(key) for key in keys]


def test_a_forged_training_start_from_a_viewer_is_refused_and_recorded(local_app, demo_app):
    (start,) = learned_ids(local_app[0], "training", "tr_start")
    url, here = demo_app
    with RawClient(url) as client:
        screen = client.run("training", {start: True})
    assert "Training needs the analyst role" in screen.text
    assert "Start training" not in screen.text  # the form itself never ran
    time.sleep(2)  # a run that had started would have made its bundle folder by now
    assert sorted(p.name for p in (here / "bundles").iterdir()) == ["demo"]
    assert any(
        line["action"] == "denied" and line["what"] == "train" and line["role"] == "viewer"
        for line in audit_lines(here)
    )


def test_forging_the_mask_off_shows_a_viewer_no_patient_id(local_app, demo_app, small_demo):
    ids = {pid.encode() for pid in read_data_root(small_demo[0]).manifest["patient_id"]}
    (mask,) = learned_ids(local_app[0], "data_matching", "mask_ids")
    with RawClient(local_app[0]) as client:  # control: the same forged value where it is allowed
        unmasked = client.run("data_matching", {mask: False}).tables
    assert any(pid in unmasked for pid in ids)
    with RawClient(demo_app[0]) as client:
        screen = client.run("data_matching", {mask: False})
    assert screen.tables and not any(pid in screen.tables for pid in ids)


def test_a_forged_delete_acts_only_on_the_named_and_typed_bundle(local_app):
    url, here = local_app
    pick, typed, delete = learned_ids(url, "training", *DELETE_KEYS)
    with RawClient(url) as client:
        # A click on the button the page draws disabled, for a chosen bundle not typed.
        client.run("training", {pick: "keep-me", delete: True})
        assert (here / "bundles" / "keep-me").is_dir()
        # The demo bundle is never offered: naming and typing it anyway deletes nothing.
        client.run("training", {pick: "demo", typed: "demo", delete: True})
        assert (here / "bundles" / "demo").is_dir()
        # Control: named and typed, the same path deletes (the forged clicks were not lost).
        screen = client.run("training", {pick: "keep-me", typed: "keep-me", delete: True})
    assert "Deleted keep\\-me." in screen.text  # as markdown, the hyphen escaped
    assert not (here / "bundles" / "keep-me").exists()
    deleted = [line["bundle"] for line in audit_lines(here) if line["action"] == "bundle_delete"]
    assert deleted == ["keep-me"]


def test_a_visitor_cannot_make_the_server_hold_more_uploads_than_a_session_may(demo_app):
    """Security row 4: 20 uploads of 49 MB from one anonymous session were all held (980 MB,
    bench/bench_upload_hold.py); now a session holds at most BCP_MAX_SESSION_UPLOAD_MB."""
    with RawClient(demo_app[0]) as client:
        client.run("predict")
        first, second = (client.upload(bytes(10 * 10**6)) for _ in range(2))
        assert first[0] == second[0] == 204
        status, sentence, _ = client.upload(bytes(10 * 10**6))
        assert (
            status == 413
            and "holds 20 MB of uploads, the most one session may hold is 25 MB" in sentence
        )
        assert client.delete_upload(first[2]) == 204  # the page dropped one: room again
        assert client.upload(bytes(10 * 10**6))[0] == 204
