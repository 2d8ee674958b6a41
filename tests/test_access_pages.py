"""Roles on every page, through the real app with AppTest: the demo (viewer), sign-in with roles
from the roles file, local mode, stopping runs, the threshold history and the audit log."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from bcp_core.config import TrainConfig
from bcp_core.model.bundle import read_bundle_meta
from tests.conftest import APP, typed_root

AUTH = {
    "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
    "cookie_secret": "test-secret",
    "client_id": "bcp",
    "client_secret": "secret",
    "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
}
ROLES = (
    '[users]\n"ana@h.org" = "analyst"\n"bob@h.org" = "analyst"\n"root@h.org" = "admin"\n'
    '"val@h.org" = "viewer"\n'
)


def open_as(root, page=None, *, email=None, signed_in=True, **state) -> AppTest:
    """The app on ``root``; with ``email``, sign-in is configured and that user is signed in."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["data_root"] = typed_root(root)
    for key, value in state.items():
        at.session_state[key] = value
    if email is not None:
        at.secrets["auth"] = AUTH
        at.user = {"is_logged_in": signed_in, "email": email, "email_verified": True}
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def audit_actions() -> list[tuple[str, str]]:
    import os

    path = Path(os.environ["BCP_AUDIT_LOG"])
    if not path.exists():
        return []
    return [(e["who"], e["action"]) for e in map(json.loads, path.read_text().splitlines())]


def plain(text: str) -> str:
    """A message as the user reads it (Streamlit's markdown escapes removed)."""
    return text.replace("\\", "")


def keys_shown(at: AppTest) -> list[str]:
    return next(d.value for d in at.dataframe if "key" in d.value.columns)["key"].tolist()


@pytest.fixture
def demo_mode(monkeypatch, small_demo, bundles_dir):
    """BCP_MODE=demo with the server's data root the small demo dataset."""
    monkeypatch.setenv("BCP_MODE", "demo")
    monkeypatch.setenv("BCP_DATA_ROOT", str(small_demo[0]))
    return small_demo[0]


@pytest.fixture
def roles(monkeypatch, tmp_path, small_demo, bundles_dir):
    path = tmp_path / "roles.toml"
    path.write_text(ROLES)
    monkeypatch.setenv("BCP_ROLES_FILE", str(path))
    monkeypatch.setenv("BCP_DATA_ROOT", str(small_demo[0]))
    return path


def running_job(user: str):
    from dashboard.jobs import TrainingJob

    job = TrainingJob(TrainConfig(epochs=7), Path("run-x"), owner="another session", user=user)
    job.status = "running"
    return job


def test_demo_viewer_sees_pages_with_ids_masked_and_cannot_unmask_or_choose(demo_mode, tmp_path):
    # A viewer's session state asking for other things changes nothing.
    at = open_as(tmp_path / "elsewhere", mask_ids=False)
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Prediction"  # the clinician's demo opens where they predict
    assert at.sidebar.toggle(key="mask_ids").disabled
    assert at.sidebar.text_input(key="data_root").disabled
    assert at.sidebar.selectbox(key="bundle").disabled
    assert "Demo: view and predict only" in plain(" ".join(c.value for c in at.sidebar.caption))
    at.switch_page("pages/data_matching.py").run()
    assert all("*" in k for k in keys_shown(at) if k.count("-") >= 3)
    at.switch_page("pages/class_balance.py").run()
    assert not at.exception and not at.error
    assert ("demo visitor", "unmask") not in audit_actions()


def test_demo_viewer_has_no_training_page_and_the_page_itself_refuses(demo_mode, idle_jobs):
    idle_jobs.current = running_job("ana@h.org")
    at = AppTest.from_file(str(Path(APP).parent / "pages" / "training.py"), default_timeout=60)
    at.run()
    assert "Training needs the analyst role" in at.error[0].value
    assert not at.get("form") and not at.button
    # Typed addresses of pages the role may not open say so (hidden from the menu, not missing)
    for page, needs in (("pages/training.py", "analyst"), ("pages/audit.py", "admin")):
        typed = open_as(demo_mode, page)
        assert f"needs the {needs} role" in typed.error[0].value
        assert not typed.get("form") and not typed.get("dataframe")


def test_demo_viewer_explores_thresholds_but_cannot_save_or_restore(demo_mode, bundles_dir):
    at = open_as(demo_mode, "pages/threshold.py")
    at.slider(key="thr_value").set_value(0.1).run()
    assert at.button(key="thr_save").disabled
    assert "saving one needs the analyst role" in " ".join(c.value for c in at.caption)
    assert read_bundle_meta(bundles_dir / "demo").threshold.value != 0.1
    # The few-cancers caution, without the advice to train that a viewer cannot follow
    caution = next(w.value for w in at.warning if "patients with cancer validate" in w.value)
    assert caution.endswith("rough guide.") and "train again" not in caution


def test_demo_viewer_predicts_with_the_servers_bundle(demo_mode, small_demo, bundles_dir):
    root, truth = small_demo
    at = open_as(root, "pages/predict.py", bundle="/elsewhere/other")
    assert "Model demo" in at.caption[0].value
    rel = next(i["relpath"] for i in truth["images"] if i["on_disk"])
    at.file_uploader(key="pred_upload").upload(Path(rel).name, (root / rel).read_bytes()).run()
    assert not at.exception and not at.error
    assert "at threshold" in " ".join(m.value for m in at.markdown)
    assert len(at.get("image")) == 2  # the film and its Grad-CAM overlay, as for an analyst


def test_sign_in_is_required_when_an_identity_provider_is_configured(roles, small_demo):
    at = open_as(small_demo[0], email="", signed_in=False)
    assert "Sign in with your hospital account" in plain(at.warning[0].value)
    assert at.button(key="sign_in")
    assert not at.dataframe and not at.metric  # no page ran
    at = open_as(small_demo[0], email="eve@h.org")
    assert "eve@h.org has no access to this dashboard" in plain(at.warning[0].value)
    assert not at.dataframe


PAGE_FILES = sorted((Path(APP).parent / "pages").glob("*.py"))


@pytest.mark.parametrize("page", PAGE_FILES, ids=lambda p: p.stem)
def test_every_page_run_on_its_own_asks_for_sign_in_before_showing_anything(roles, page):
    """Until the app's navigation has run once in the server, Streamlit answers a page's address
    by running its file alone: the page must gate itself."""
    at = AppTest.from_file(str(page), default_timeout=120)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": False, "email": ""}
    at.run()
    assert not at.exception, at.exception
    assert "Sign in with your hospital account" in plain(at.warning[0].value)
    assert [t.value for t in at.title] == ["Breast Cancer Prediction"]  # the gate's, not the page's
    assert not at.dataframe and not at.metric and not at.get("plotly_chart")
    assert not at.file_uploader and not at.get("form")
    at.user = {"is_logged_in": True, "email": "eve@h.org", "email_verified": True}  # no role
    at.run()
    assert "eve@h.org has no access to this dashboard" in plain(at.warning[0].value)
    assert not at.dataframe and not at.metric


@pytest.mark.parametrize("page", PAGE_FILES, ids=lambda p: p.stem)
def test_every_page_run_on_its_own_keeps_to_the_demo_viewers_role(demo_mode, bundles_dir, page):
    at = AppTest.from_file(str(page), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    refused = [e.value for e in at.error if "needs the" in e.value]
    assert bool(refused) == (page.stem in ("training", "audit")), refused


def test_a_signed_in_analyst_may_unmask_choose_and_train(roles, small_demo, idle_jobs):
    root, truth = small_demo
    at = open_as(root, email="ana@h.org")
    assert ("ana@h.org", "sign_in") in audit_actions()
    assert not at.sidebar.toggle(key="mask_ids").disabled
    assert "Signed in as ana@h.org (analyst)" in plain(
        " ".join(c.value for c in at.sidebar.caption)
    )
    at.session_state["mask_ids"] = False
    at.run()
    assert not any("*" in k for k in keys_shown(at))
    # AppTest reruns only the page after the first run: the sidebar records on a fresh one.
    open_as(root, email="ana@h.org", mask_ids=False)
    assert ("ana@h.org", "unmask") in audit_actions()
    at.switch_page("pages/training.py").run()
    assert not at.error and at.button(key="tr_start")
    audit_page = AppTest.from_file(str(Path(APP).parent / "pages" / "audit.py"))
    audit_page.secrets["auth"] = AUTH
    audit_page.user = {"is_logged_in": True, "email": "ana@h.org", "email_verified": True}
    audit_page.run()
    assert "needs the admin role" in audit_page.error[0].value and not audit_page.dataframe


def test_a_non_owner_cannot_stop_a_run_but_the_owner_and_an_admin_can(roles, small_demo, idle_jobs):
    job = running_job("ana@h.org")
    idle_jobs.current = job
    bob = open_as(small_demo[0], "pages/training.py", email="bob@h.org")
    assert bob.button(key="tr_stop").disabled
    assert not job.stop_event.is_set()
    ana = open_as(small_demo[0], "pages/training.py", email="ana@h.org")
    assert not ana.button(key="tr_stop").disabled
    root = open_as(small_demo[0], "pages/training.py", email="root@h.org")
    root.button(key="tr_stop").click().run()
    assert job.stop_event.is_set()
    assert ("root@h.org", "train_stop") in audit_actions()


def test_local_mode_refuses_a_server_reachable_from_the_network(small_demo, bundles_dir):
    before = st_config.get_option("server.address")
    st_config.set_option("server.address", "0.0.0.0")
    try:
        at = open_as(small_demo[0])
    finally:
        st_config.set_option("server.address", before)
    assert "listens on 0.0.0.0 without sign-in" in plain(at.warning[0].value)
    assert not at.dataframe and not at.metric


def test_threshold_history_keeps_who_and_when_and_restores_in_one_click(small_demo, bundles_dir):
    run = bundles_dir / "run-1"
    shutil.copytree(bundles_dir / "demo", run)
    youden = read_bundle_meta(run).threshold.value
    at = open_as(small_demo[0], "pages/threshold.py", bundle=str(run))
    for value in (0.25, 0.5):
        at.slider(key="thr_value").set_value(value).run()
        at.button(key="thr_save").click().run()
        assert "Saved" in at.success[0].value
    meta = read_bundle_meta(run)
    assert [c.value for c in meta.threshold.past()] == [youden, 0.25]
    assert meta.threshold.by == "local" and meta.threshold.past()[1].by == "local"
    at.run()
    at.button(key="thr_restore_0").click().run()  # the training run's choice
    meta = read_bundle_meta(run)
    assert meta.threshold.value == youden and meta.threshold.method == "youden"
    assert [c.value for c in meta.threshold.past()] == [youden, 0.25, 0.5]
    assert "restored" in meta.threshold.note
    actions = [a for _, a in audit_actions()]
    assert actions.count("threshold_save") == 2 and actions.count("threshold_restore") == 1


def test_the_demo_bundle_is_read_only_in_the_dashboard(small_demo, bundles_dir):
    at = open_as(small_demo[0], "pages/threshold.py")
    assert at.button(key="thr_save").disabled
    assert "demo bundle is read-only" in " ".join(c.value for c in at.caption)


def test_admins_see_the_audit_log_and_no_patient_id_is_in_it(small_demo, bundles_dir):
    root, truth = small_demo
    at = open_as(root, mask_ids=False)  # local mode: one user with every right
    assert ("local", "unmask") in audit_actions()
    at.switch_page("pages/audit.py").run()
    table = next(d.value for d in at.dataframe if "action" in d.value.columns)
    assert "unmask" in table["action"].tolist()
    import os

    text = Path(os.environ["BCP_AUDIT_LOG"]).read_text()
    assert not any(i["patient_id"] in text for i in truth["images"])


def test_an_admin_deletes_a_bundle_but_never_the_demo_and_an_analyst_cannot(
    roles, small_demo, bundles_dir, idle_jobs
):
    run = bundles_dir / "run-1"
    shutil.copytree(bundles_dir / "demo", run)
    ana = open_as(small_demo[0], "pages/training.py", email="ana@h.org")
    assert not [s for s in ana.selectbox if s.key == "adm_delete_pick"]
    at = open_as(small_demo[0], "pages/training.py", email="root@h.org")
    assert at.selectbox(key="adm_delete_pick").options == ["run-1"]  # the demo is not offered
    assert at.selectbox(key="adm_delete_pick").value is None  # nothing chosen by default
    assert at.button(key="adm_delete").disabled  # until a bundle is named and confirmed
    at.selectbox(key="adm_delete_pick").set_value("run-1").run()
    at.text_input(key="adm_delete_typed").input("run-1").run()
    at.button(key="adm_delete").click().run()
    assert not run.exists() and (bundles_dir / "demo").exists()
    assert ("root@h.org", "bundle_delete") in audit_actions()


def test_a_forged_delete_never_falls_back_to_a_bundle(roles, small_demo, bundles_dir, idle_jobs):
    """Security row 13: a forged choice reset to the first option, and that bundle was deleted."""
    run = bundles_dir / "run-1"
    shutil.copytree(bundles_dir / "demo", run)
    at = open_as(small_demo[0], "pages/training.py", email="root@h.org")
    # A forged choice that is no option resets to the default: now none, not the first bundle,
    # and the confirmation names no bundle either.
    at.text_input(key="adm_delete_typed").input("run-1").run()
    assert at.selectbox(key="adm_delete_pick").value is None
    assert at.button(key="adm_delete").disabled
    assert run.exists()


def test_refused_actions_are_audited(roles, small_demo, bundles_dir, idle_jobs):
    """Security row 11: forged viewer actions left no trace."""
    viewer = AppTest.from_file(str(Path(APP).parent / "pages" / "training.py"))
    viewer.secrets["auth"] = AUTH
    viewer.user = {"is_logged_in": True, "email": "val@h.org", "email_verified": True}
    viewer.run(timeout=60)
    assert viewer.error and "analyst" in viewer.error[0].value, viewer.main
    forged = open_as(small_demo[0], email="val@h.org", data_root="/etc", bundle="/tmp/x")
    assert not forged.exception
    denied = [who for who, action in audit_actions() if action == "denied"]
    assert denied.count("val@h.org") >= 3  # the page, the data root, the bundle


def test_an_unverified_email_claim_names_nobody_and_gets_no_role(small_demo):
    """Security row 7: sub=mallory with email=ana@h.org, email_verified=false became analyst."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["data_root"] = typed_root(small_demo[0])
    at.secrets["auth"] = AUTH
    at.user = {
        "is_logged_in": True,
        "sub": "mallory",
        "email": "ana@h.org",
        "email_verified": False,
    }
    at.run()
    assert not at.exception
    refusal = at.warning[0].value
    assert "subject mallory" in refusal and "has no access to this dashboard" in refusal
    assert "ana@h.org" not in refusal
    assert not at.get("dataframe")


def test_a_replayed_or_expired_identity_meets_the_sign_in_prompt(roles, small_demo):
    import time

    from dashboard.auth import SIGN_OUTS

    now = time.time()
    user = {"is_logged_in": True, "email": "ana@h.org", "email_verified": True, "sub": "ana-1"}
    at = AppTest.from_file(APP, default_timeout=120)
    at.secrets["auth"] = AUTH
    at.user = {**user, "iat": now - 7200, "exp": now - 3600}
    at.run()
    assert "has expired" in at.warning[0].value and at.button(key="sign_in")
    SIGN_OUTS.record("ana-1", now)
    at.user = {**user, "iat": now - 60, "exp": now + 3600}  # the cookie saved before sign-out
    at.run()
    assert "You signed out" in at.warning[0].value and not at.get("dataframe")
    at.user = {**user, "iat": now + 1, "exp": now + 3600}  # a new sign-in
    at.run()
    assert not at.warning or "signed out" not in at.warning[0].value
