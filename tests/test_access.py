"""Who may do what (bcp_core.access), the audit log (bcp_core.audit) on real files, and the
threshold history a bundle keeps."""

from __future__ import annotations

import json
import threading

import pytest

from bcp_core import access, audit, settings
from bcp_core.access import Action, can, can_stop
from bcp_core.errors import UserError
from bcp_core.model.meta import ThresholdChoice


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("none", set()),
        ("viewer", {Action.VIEW, Action.FEEDBACK}),
        (
            "analyst",
            {
                Action.VIEW,
                Action.FEEDBACK,
                Action.UNMASK,
                Action.CHOOSE_DATA_ROOT,
                Action.CHOOSE_BUNDLE,
                Action.TRAIN,
                Action.SAVE_THRESHOLD,
            },
        ),
        ("admin", set(Action)),
        ("root", set()),  # an unknown role may do nothing
    ],
)
def test_each_role_may_do_exactly_its_actions(role, allowed):
    assert {a for a in Action if can(role, a)} == allowed


def test_only_the_owner_or_an_admin_may_stop_a_run():
    assert can_stop("analyst", "ana@h.org", "ana@h.org")
    assert not can_stop("analyst", "bob@h.org", "ana@h.org")
    assert can_stop("admin", "root@h.org", "ana@h.org")
    assert not can_stop("viewer", "ana@h.org", "ana@h.org")  # viewers never train
    assert not can_stop("analyst", "", "")  # an unknown owner is nobody's


def test_the_mode_follows_the_setting_and_the_sign_in_configuration(monkeypatch):
    assert access.resolve_mode("", auth_configured=True) == access.MODE_SIGNIN
    assert access.resolve_mode("", auth_configured=False) == access.MODE_LOCAL
    assert access.resolve_mode("demo", auth_configured=True) == access.MODE_DEMO
    monkeypatch.setenv("BCP_MODE", "Demo")
    assert settings.mode() == "demo"
    monkeypatch.setenv("BCP_MODE", "open")
    with pytest.raises(UserError, match="BCP_MODE must be demo or unset"):
        settings.mode()


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost"])
def test_local_mode_is_allowed_on_loopback_addresses(address):
    access.check_local_address(address)


@pytest.mark.parametrize("address", ["", "0.0.0.0", "10.1.2.3", "::", "example.org"])
def test_local_mode_is_refused_on_addresses_others_can_reach(address):
    with pytest.raises(UserError, match="without sign-in, so anyone on the network"):
        access.check_local_address(address)


def test_roles_come_from_email_or_group_and_unknown_users_get_the_default(tmp_path):
    path = tmp_path / "roles.toml"
    path.write_text(
        'group_claim = "groups"\n'
        '[users]\n"Ana@H.org" = "analyst"\n"root@h.org" = "admin"\n'
        '[groups]\n"radiology" = "viewer"\n"research" = "analyst"\n'
    )
    roles = access.load_roles(path)
    assert roles.role_of("ana@h.org") == "analyst"  # case-insensitive
    assert roles.role_of("ROOT@h.org", ["radiology"]) == "admin"  # the strongest wins
    assert roles.role_of("eve@h.org", ["radiology"]) == "viewer"
    assert roles.role_of("eve@h.org", access.claim_groups("research")) == "analyst"
    assert roles.role_of("eve@h.org") == "none"  # not named: no access by default
    path.write_text('default = "viewer"\n')
    assert access.load_roles(path).role_of("eve@h.org") == "viewer"
    assert access.load_roles(tmp_path / "missing.toml").role_of("ana@h.org") == "none"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[users]\n"a@h.org" = "superuser"\n', "users.a@h.org must be one of"),
        ('default = "analyst2"\n', "default must be one of"),
        ("users = 3\n", "must be tables of name = role"),
        ("[users\n", "is not valid TOML"),
    ],
)
def test_a_bad_roles_file_gets_one_sentence(tmp_path, text, message):
    path = tmp_path / "roles.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        access.load_roles(path)


def test_the_audit_log_appends_lines_and_reads_the_last_newest_first(tmp_path):
    log = tmp_path / "audit" / "audit.jsonl"
    audit.append(log, "local", "train_start", run="20260101-seed_cnn", what="seed_cnn")
    audit.append(log, "ana@h.org", "threshold_save", bundle="run-1", threshold=0.25)
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["who"] == "local" and first["action"] == "train_start" and first["time"]
    events = audit.last_events(log, 1)
    assert [e["action"] for e in events] == ["threshold_save"]
    assert events[0]["threshold"] == 0.25
    assert audit.last_events(tmp_path / "none.jsonl") == []
    with open(log, "a") as fh:
        fh.write("not json\n")
    assert len(audit.last_events(log)) == 2  # a damaged line is skipped


def test_the_audit_log_refuses_unknown_actions_and_details(tmp_path):
    log = tmp_path / "audit.jsonl"
    with pytest.raises(UserError, match="Unknown audit action"):
        audit.append(log, "local", "format_disk")
    with pytest.raises(UserError, match="cannot carry patient_id"):
        audit.append(log, "local", "export", patient_id="DIT000000001")
    with pytest.raises(UserError, match="cannot carry path"):
        audit.append(log, "local", "export", path="/data/Cancer/FILE0001.jpg")
    assert not log.exists()


def test_concurrent_sessions_never_interleave_audit_lines(tmp_path):
    log = tmp_path / "audit.jsonl"

    def write(who: str) -> None:
        for i in range(200):
            audit.append(log, who, "export", file=f"manifest-{i}.csv", what="x" * 150)

    threads = [threading.Thread(target=write, args=(f"user{n}@h.org",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = log.read_text().splitlines()
    assert len(lines) == 800
    assert all(json.loads(line)["action"] == "export" for line in lines)


def test_an_unwritable_audit_log_gets_a_sentence(tmp_path):
    blocker = tmp_path / "audit"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(UserError, match="audit log audit.jsonl cannot be written"):
        audit.append(blocker / "audit.jsonl", "local", "sign_in")


def test_saved_thresholds_keep_every_earlier_choice_with_who_and_when():
    start = ThresholdChoice(0.3, "youden", "2026-01-01T00:00:00+00:00", on="validation images")
    one = start.replaced_by(0.25, "manual", "chosen on image level", by="ana@h.org")
    two = one.replaced_by(0.5, "top 10%", by="bob@h.org")
    assert [c.value for c in two.past()] == [0.3, 0.25]
    assert two.past()[1].by == "ana@h.org" and two.by == "bob@h.org" and two.chosen
    assert two.previous["value"] == 0.25 and two.previous["by"] == "ana@h.org"
    assert "history" not in two.previous and "previous" not in two.previous
    again = ThresholdChoice.from_json(json.loads(json.dumps(two.to_json())), "bundle.json")
    assert again == two


def test_a_bundle_saved_before_the_history_reads_its_one_previous_choice():
    old = {
        "value": 0.25,
        "method": "manual",
        "chosen": "2025-06-01T00:00:00+00:00",
        "note": "",
        "previous": {"value": 0.3, "method": "youden", "chosen": "2025-05-01T00:00:00+00:00"},
    }
    choice = ThresholdChoice.from_json(old, "bundle.json")
    assert choice.to_json() == old  # round-trips key for key: nothing added
    assert [(c.value, c.method) for c in choice.past()] == [(0.3, "youden")]
    new = choice.replaced_by(0.4, "manual", by="local")
    assert [c.value for c in new.past()] == [0.3, 0.25]


def test_the_access_settings_default_to_files_of_the_repository(monkeypatch):
    for name in ("BCP_ROLES_FILE", "BCP_AUDIT_LOG", "BCP_VIEWER_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    assert settings.roles_file() == settings.REPO_DIR / "roles.toml"
    assert settings.audit_log() == settings.REPO_DIR / "audit" / "audit.jsonl"
    assert settings.viewer_bundle() == "demo"
    monkeypatch.setenv("BCP_VIEWER_BUNDLE", "run-7")
    assert settings.viewer_bundle() == "run-7"


@pytest.mark.parametrize(
    ("host", "served", "answered"),
    [
        ("localhost:8501", (), True),
        ("127.0.0.1:8501", (), True),
        ("[::1]:8501", (), True),
        ("LOCALHOST.", (), True),
        ("rebind.example:8501", (), False),  # a foreign name resolving to 127.0.0.1
        ("127.0.0.1.nip.io:8501", (), False),
        ("mammo.hospital.org", ("mammo.hospital.org",), True),
        ("a.hospital.org", ("*.hospital.org",), True),
        ("hospital.org.evil.example", ("*.hospital.org",), False),
        ("user@localhost", (), False),
        ("localhost:99999", (), False),
        ("localhost/x", (), False),
        ("", (), False),
        (None, (), False),
    ],
)
def test_only_the_deployments_host_names_are_answered(host, served, answered):
    assert access.host_allowed(host, served) is answered


@pytest.mark.parametrize(
    ("claims", "email"),
    [
        ({"email": "ana@h.org", "email_verified": True}, "ana@h.org"),
        ({"email": "ana@h.org", "email_verified": "true"}, "ana@h.org"),
        ({"email": "ana@h.org", "email_verified": False}, ""),
        ({"email": "ana@h.org", "email_verified": "false"}, ""),
        ({"email": "ana@h.org"}, ""),  # a provider that says nothing verified nothing
        ({"email_verified": True}, ""),
    ],
)
def test_only_a_verified_email_names_someone(claims, email):
    assert access.verified_email(claims) == email


def test_an_identity_issued_before_its_owners_sign_out_or_expired_is_ended():
    """Security row 6: a cookie saved before "Sign out" and replayed signed the person in."""
    sign_outs = access.SignOuts()
    claims = {"sub": "ana", "iat": 1000.0, "exp": 4600.0}
    assert access.session_refusal(claims, 2000.0, sign_outs) == ""
    sign_outs.record("ana", 2000.0)
    assert "You signed out" in access.session_refusal(claims, 2001.0, sign_outs)
    fresh = {"sub": "ana", "iat": 2500.0, "exp": 6100.0}  # signed in again afterwards
    assert access.session_refusal(fresh, 2600.0, sign_outs) == ""
    assert access.session_refusal({"sub": "bob", "iat": 1000.0}, 2001.0, sign_outs) == ""
    assert "expired" in access.session_refusal(claims, 4600.0, access.SignOuts())
