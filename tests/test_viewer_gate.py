"""A model no better than chance reaches viewers only through an analyst's explicit, audited
approval, kept in the bundle and on its model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bcp_core.errors import UserError
from bcp_core.model.bundle import MAX_REASON_CHARS, approve_for_viewers, read_bundle_meta
from bcp_core.model.card import CARD_FILE
from bcp_core.model.files import META_FILE
from tests.conftest import open_app

FORMAT1 = Path(__file__).parent / "fixtures" / "bundle_format1" / "bundle"


def test_an_approval_is_kept_with_its_author_time_and_reason(demo_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(demo_bundle, copy)
    assert read_bundle_meta(copy).viewer_approval is None
    with pytest.raises(UserError, match="Say why"):
        approve_for_viewers(copy, "ana", " \t ")
    with pytest.raises(UserError, match=f"at most {MAX_REASON_CHARS} characters"):
        approve_for_viewers(copy, "ana", "x" * (MAX_REASON_CHARS + 1))
    assert read_bundle_meta(copy).viewer_approval is None  # nothing half-written
    approve_for_viewers(copy, "ana", "demo for\nthe board\x07")
    given = read_bundle_meta(copy).viewer_approval
    assert given is not None and given["by"] == "ana" and given["reason"] == "demo for the board"
    assert json.loads((copy / META_FILE).read_text())["viewer_approval"] == given
    assert "approved for viewers by ana" in (copy / CARD_FILE).read_text()


def test_an_older_bundle_has_no_approval_and_keeps_its_keys(tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(FORMAT1, copy)
    before = json.loads((copy / META_FILE).read_text())
    assert read_bundle_meta(copy).viewer_approval is None
    approve_for_viewers(copy, "ana", "checked by hand")
    after = json.loads((copy / META_FILE).read_text())
    assert {k: v for k, v in after.items() if k != "viewer_approval"}.keys() >= before.keys()


@pytest.fixture
def unapproved(demo_bundle, tmp_path, monkeypatch, small_demo):
    """A demo server whose viewers' bundle is the tiny chance-level one, not approved."""
    folder = tmp_path / "bundles"
    shutil.copytree(demo_bundle, folder / "demo")
    monkeypatch.setenv("BCP_BUNDLES_DIR", str(folder))
    monkeypatch.setenv("BCP_DATA_ROOT", str(small_demo[0]))
    monkeypatch.setenv("BCP_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    return folder / "demo"


def test_viewers_get_a_chance_level_model_only_after_an_analysts_approval(
    unapproved, small_demo, monkeypatch, tmp_path
):
    root = small_demo[0]
    monkeypatch.setenv("BCP_MODE", "demo")
    at = open_app(root, "pages/predict.py")
    warning = " ".join(w.value for w in at.warning)
    assert "no better than chance" in warning and "approves it on the Training page" in warning
    assert not at.get("file_uploader")  # the page stopped: nothing to predict with

    monkeypatch.delenv("BCP_MODE")  # local mode: the analyst
    at = open_app(root, "pages/training.py")
    at.text_input(key="tr_approve_reason").input("shown to the board as a demo").run()
    at.button(key="FormSubmitter:tr_approve-Let viewers use it").click().run()
    assert "Tick the box" in " ".join(e.value for e in at.error)
    assert read_bundle_meta(unapproved).viewer_approval is None
    at.text_input(key="tr_approve_reason").input("shown to the board as a demo")
    at.checkbox(key="tr_sure").check()
    at.button(key="FormSubmitter:tr_approve-Let viewers use it").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert read_bundle_meta(unapproved).viewer_approval["reason"] == "shown to the board as a demo"
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert any(e["action"] == "viewer_override" and e["bundle"] == "demo" for e in lines)

    monkeypatch.setenv("BCP_MODE", "demo")
    at = open_app(root, "pages/predict.py")
    assert not any("no better than chance" in w.value for w in at.warning)
    assert at.get("file_uploader")


def test_every_run_says_whether_it_beats_chance_where_runs_are_listed(demo_bundle, tmp_path):
    from bcp_core.model.bundle import list_bundles_df
    from bcp_core.model.meta import ValidationMetrics

    shutil.copytree(demo_bundle, tmp_path / "tiny")
    shutil.copytree(FORMAT1, tmp_path / "old")
    low, high = read_bundle_meta(tmp_path / "tiny").metrics.roc_auc_ci  # kept at training
    assert low < read_bundle_meta(tmp_path / "tiny").metrics.roc_auc < high
    runs = list_bundles_df(tmp_path).set_index("bundle")
    expected = "better than chance" if low > 0.5 else "no better than chance"
    assert runs.loc["tiny", "vs_chance"] == expected
    assert runs.loc["old", "vs_chance"] == ""  # written before the interval was kept
    for interval, said in (
        ((0.51, 0.7), "better than chance"),
        ((0.5, 0.9), "no better than chance"),
    ):
        assert ValidationMetrics(0.6, 0.5, 1, None, interval).chance == said
