"""Readers' marks on predictions: the library, the CLI, page 5 (marking) and page 4 (the count)."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest

from bcp_core.cli import main
from bcp_core.errors import UserError
from bcp_core.inference.feedback import COLUMNS, FILE_NAME, read_marks, record, summarise
from tests.conftest import open_app

SHA = hashlib.sha256(b"image bytes").hexdigest()


def mark(folder, kind="agree", **extra):
    args = dict(who="local", file="P0001_L_CC.jpg", image_sha256=SHA, probability=0.7)
    return record(folder, threshold=0.5, mark=kind, **{**args, **extra})


def test_marks_append_and_read_back_with_a_summary(tmp_path):
    mark(tmp_path)
    mark(tmp_path, "disagree_cancer", keep_name=True, note="mass upper outer")
    mark(tmp_path, "disagree_not_cancer")
    lines = (tmp_path / FILE_NAME).read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 4
    marks = read_marks(tmp_path)
    assert [m.mark for m in marks] == ["agree", "disagree_cancer", "disagree_not_cancer"]
    assert marks[0].file == ""  # masked: the hash alone identifies the image
    assert marks[1].file == "P0001_L_CC.jpg" and marks[1].note == "mass upper outer"
    assert marks[0].image_sha256 == SHA and marks[0].probability == 0.7
    assert marks[0].threshold == 0.5 and marks[0].who == "local"
    summary = summarise(marks)
    assert (summary.n, summary.agree, summary.disagree_cancer) == (3, 1, 1)
    assert summary.agreement_rate == pytest.approx(1 / 3)
    assert summarise([]).to_json()["agreement_rate"] is None
    assert read_marks(tmp_path / "nowhere") == []


def test_unknown_marks_and_bad_hashes_are_refused(tmp_path):
    with pytest.raises(UserError, match="Unknown mark"):
        mark(tmp_path, "maybe")
    with pytest.raises(UserError, match="SHA-256"):
        mark(tmp_path, image_sha256="P0001")
    assert not (tmp_path / FILE_NAME).exists()


def test_a_full_file_takes_no_more_marks(tmp_path, monkeypatch):
    from bcp_core.inference import feedback

    mark(tmp_path)
    monkeypatch.setattr(feedback, "MAX_FILE_BYTES", 10)
    with pytest.raises(UserError, match="full"):
        mark(tmp_path)
    assert len(read_marks(tmp_path)) == 1


def test_formula_and_markdown_notes_and_names_are_neutralised(tmp_path):
    mark(tmp_path, note='=HYPERLINK("http://x","y")', keep_name=True, file="@SUM(A1).jpg")
    mark(tmp_path, note="![x](http://host/x.png)\n# heading\r\n=1+1")
    first, second = read_marks(tmp_path)
    assert first.note.startswith("'=") and first.file.startswith("'@")
    assert "\n" not in second.note and "\r" not in second.note
    assert len((tmp_path / FILE_NAME).read_text(encoding="utf-8").splitlines()) == 3


def test_concurrent_appends_from_threads_never_interleave(tmp_path):
    def work(i):
        for j in range(25):
            mark(tmp_path, note=f"thread {i} mark {j} " + "x" * 300)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / FILE_NAME).read_text(encoding="utf-8").splitlines()
    assert lines.count(",".join(COLUMNS)) == 1 and len(lines) == 201
    marks = read_marks(tmp_path)
    assert len(marks) == 200
    notes = {m.note.split(" x")[0] for m in marks}
    assert notes == {f"thread {i} mark {j}" for i in range(8) for j in range(25)}


def test_cli_lists_marks_and_disagreements(demo_bundle, tmp_path, capsys):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(demo_bundle, bundle)
    mark(bundle)
    mark(bundle, "disagree_cancer", keep_name=True, note="look again")
    assert main(["feedback", "--bundle", str(bundle), "--json", "--disagree-only"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["n"] == 2 and out["summary"]["agreement_rate"] == 0.5
    assert [m["mark"] for m in out["marks"]] == ["disagree_cancer"]
    assert out["marks"][0]["file"] == "P0001_L_CC.jpg"
    assert main(["feedback", "--bundle", str(bundle)]) == 0
    text = capsys.readouterr().out
    assert "2 marks, 1 agree (50%)" in text and "look again" in text and SHA[:16] in text
    assert main(["feedback", "--bundle", str(tmp_path / "none")]) == 2
    assert "Bundle not found" in capsys.readouterr().err


def test_the_demo_takes_no_marks_from_anonymous_visitors(small_demo, bundles_dir, monkeypatch):
    """Security row 10: one demo connection forged 229 marks that page 4 then showed to all."""
    root, truth = small_demo
    monkeypatch.setenv("BCP_MODE", "demo")
    monkeypatch.setenv("BCP_DATA_ROOT", str(root))
    image = next(i for i in truth["images"] if i["on_disk"])
    at = open_app(root, "pages/predict.py")
    data = (root / image["relpath"]).read_bytes()
    at.file_uploader(key="pred_upload").upload("x.jpg", data, "image/jpeg").run()
    assert not at.exception, at.exception
    assert not [r for r in at.radio if r.key == "pred_mark"]
    assert any("signed-in readers" in c.value for c in at.caption)
    assert read_marks(bundles_dir / "demo") == []


def test_marks_are_limited_per_person():
    from bcp_core.access import RateLimit

    limit = RateLimit(3, 600)
    assert [limit.allow("ana", now=t) for t in (0, 1, 2, 3)] == [True, True, True, False]
    assert limit.allow("bob", now=3)  # per person
    assert limit.allow("ana", now=601)  # the window moves on


@pytest.mark.parametrize("who", ["local"])
def test_prediction_page_records_a_mark_and_page_4_counts_it(
    who, small_demo, bundles_dir, monkeypatch
):
    root, truth = small_demo
    image = next(i for i in truth["images"] if i["on_disk"])
    data = (root / image["relpath"]).read_bytes()
    at = open_app(root, "pages/predict.py")
    at.file_uploader(key="pred_upload").upload("P123_name.jpg", data, "image/jpeg").run()
    assert not at.exception, at.exception
    assert at.radio(key="pred_mark").value is None  # no reading is suggested
    at.radio(key="pred_mark").set_value("disagree_not_cancer")
    at.text_input(key="pred_note").input("**benign** =cmd")
    at.button[-1].click().run()
    assert not at.exception, at.exception
    assert any("Recorded" in s.value for s in at.success)
    (stored,) = read_marks(bundles_dir / "demo")
    assert stored.mark == "disagree_not_cancer" and stored.who == who
    assert stored.file == "" and stored.image_sha256 == hashlib.sha256(data).hexdigest()
    assert stored.note == "**benign** =cmd"
    at.switch_page("pages/threshold.py").run()
    assert not at.exception, at.exception
    text = " ".join(c.value for c in at.caption)
    assert "Readers' marks (page 5): 1, of which 0 agree" in text
