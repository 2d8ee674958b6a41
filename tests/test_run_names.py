"""Runs people can find again: a name and a note per run (kept in ``bundle.json``, given at the
start or edited after), the runs table that shows and filters them, and the Compare page's
training curves, one line per run."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bcp_core.cli import main
from bcp_core.errors import UserError
from bcp_core.inference.bundles_compared import training_curves
from bcp_core.model.bundle import list_bundles_df, read_bundle_meta, update_label, update_threshold
from bcp_core.model.files import META_FILE
from bcp_core.model.meta import MAX_NAME_CHARS, MAX_NOTE_CHARS, BundleMeta, RunLabel
from bcp_core.output_safety import plain_markdown
from bcp_core.plots import plot_run_curves
from tests.conftest import open_app, tiny_train_argv

FORMAT1 = Path(__file__).parent / "fixtures" / "bundle_format1" / "bundle"


def raw_meta(folder: Path) -> dict:
    return json.loads((folder / META_FILE).read_text(encoding="utf-8"))


def old_bundle(where: Path, name: str = "old") -> Path:
    """A copy of the bundle written before names existed (its history has 2 epochs)."""
    return Path(shutil.copytree(FORMAT1, where / name))


# --- The label and the bundle ----------------------------------------------------------------


def test_a_name_and_note_are_plain_text_and_refused_over_their_limit():
    label = RunLabel(" Lite0\tbatch\nnorm\u202e  \x00", "first line\r\nsecond\x07\u200b line\n")
    assert label == RunLabel("Lite0 batch norm", "first line\nsecond line")
    assert RunLabel("x" * MAX_NAME_CHARS, "y" * MAX_NOTE_CHARS).to_json() == {
        "name": "x" * MAX_NAME_CHARS,
        "note": "y" * MAX_NOTE_CHARS,
    }
    assert RunLabel().to_json() == {}
    with pytest.raises(UserError, match=r"^A run's name may be at most 80 characters long; "):
        RunLabel("x" * 81)
    with pytest.raises(UserError, match=r"this one has 1001\.$"):
        RunLabel(note="y" * 1001)


def test_an_old_bundle_is_named_then_cleared_back_to_the_file_it_was(tmp_path):
    folder = old_bundle(tmp_path)
    before = raw_meta(folder)
    assert read_bundle_meta(folder).label == RunLabel()

    meta = update_label(folder, "  Baseline ", "seed 42\nfrozen batch norm")
    after = raw_meta(folder)
    assert meta.label == RunLabel("Baseline", "seed 42\nfrozen batch norm")
    assert (after["name"], after["note"]) == ("Baseline", "seed 42\nfrozen batch norm")
    assert {k: v for k, v in after.items() if k not in ("name", "note")} == before

    update_label(folder, "", "")
    assert raw_meta(folder) == before  # key for key, as the old software wrote it

    update_label(folder, "Baseline", "")
    update_threshold(folder, 0.3, "manual")  # another save keeps the name
    assert read_bundle_meta(folder).label == RunLabel("Baseline")


def test_an_over_long_name_is_refused_and_the_bundle_left_as_it_was(tmp_path):
    folder = old_bundle(tmp_path)
    before = (folder / META_FILE).read_bytes()
    with pytest.raises(UserError, match="at most 80 characters"):
        update_label(folder, "x" * 200, "")
    assert (folder / META_FILE).read_bytes() == before


def test_a_hand_edited_name_and_note_read_tolerantly(tmp_path):
    folder = old_bundle(tmp_path)
    edited = raw_meta(folder) | {"name": "n" * 300 + "\x1b[31m", "note": {"by": "hand"}}
    (folder / META_FILE).write_text(json.dumps(edited), encoding="utf-8")
    meta = read_bundle_meta(folder)
    assert meta.label == RunLabel("n" * MAX_NAME_CHARS, "")
    assert BundleMeta.from_json(edited).to_json()["note"] == {"by": "hand"}  # not text: kept


# --- The runs table ----------------------------------------------------------------------------


def test_the_runs_table_shows_names_and_notes_and_finds_runs_by_them(tmp_path):
    root = tmp_path / "bundles"
    root.mkdir()
    long_note = "Lite0 at 320 x 256 " + "with batch norm learning " * 4 + "REPEATED on fold 1"
    update_label(old_bundle(root, "20261201-seed"), "Baseline", long_note)
    update_label(old_bundle(root, "20261202-seed"), "Focal <b>loss</b>", "")
    old_bundle(root, "20261203-unnamed")

    runs = list_bundles_df(root)
    assert list(runs.columns[:3]) == ["bundle", "name", "note"]
    shown = dict(zip(runs["bundle"], zip(runs["name"], runs["note"])))
    assert shown["20261202-seed"] == ("Focal <b>loss</b>", "")
    assert shown["20261203-unnamed"] == ("", "")
    name, note = shown["20261201-seed"]
    assert name == "Baseline" and len(note) == 60 and note.endswith("…")

    def found(text: str) -> list[str]:
        return sorted(list_bundles_df(root, matching=text)["bundle"])

    assert found("BASELINE") == ["20261201-seed"]  # the name, any case
    assert found("repeated on fold") == ["20261201-seed"]  # the note beyond its preview
    assert found("unnamed") == ["20261203-unnamed"]  # the folder
    assert found("seed") == ["20261201-seed", "20261202-seed"]
    assert found("  ") == sorted(runs["bundle"]) and found("nothing like it") == []


# --- Training curves on Compare ----------------------------------------------------------------


def test_training_curves_are_named_by_run_and_mark_the_epoch_kept(tmp_path):
    a, b, c = (old_bundle(tmp_path, n) for n in ("run-a", "run-b", "run-c"))
    update_label(a, "Baseline", "")
    update_label(b, "Baseline", "")  # the same name twice: told apart by the folder
    history = pd.read_csv(c / "history.csv")
    history.drop(columns="val_loss").to_csv(c / "history.csv", index=False)

    runs = training_curves([a, b, c])
    assert [r.name for r in runs] == ["Baseline (run-a)", "Baseline (run-b)", "run-c"]
    assert runs[0].best_epoch == raw_meta(a)["metrics"]["best_epoch"] == 1
    assert runs[2].has("val_pr_auc") and not runs[2].has("val_loss")

    fig = plot_run_curves(runs, "val_pr_auc", "Validation PR-AUC")
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    kept = [t for t in fig.data if t.mode == "markers"]
    assert [t.name for t in lines] == [r.name for r in runs]
    assert list(lines[2].y) == pytest.approx(history["val_pr_auc"].tolist())
    assert [list(t.x) for t in kept] == [[1], [1], [1]]
    assert [t.marker.color for t in kept] == [t.line.color for t in lines]
    assert len([t for t in plot_run_curves(runs, "val_loss", "").data if t.mode != "markers"]) == 2

    update_label(c, "<a href='http://x'>c</a>", "")
    names = " ".join(t.name for t in plot_run_curves(training_curves([c]), "loss", "").data)
    assert "<a" not in names and "&lt;a href" in names


# --- The command line --------------------------------------------------------------------------


def test_train_refuses_an_over_long_name_before_reading_data(tmp_path, capsys):
    out = tmp_path / "b"
    code = main(["train", "--data-root", str(tmp_path / "none"), "--out", str(out), "--name",
                 "x" * 81])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: A run's name may be at most 80 characters long")
    assert not out.exists()


def test_train_help_names_the_limits(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"--name TEXT a short title for the run (at most {MAX_NAME_CHARS} characters)" in text
    assert f"(at most {MAX_NOTE_CHARS} characters)" in text


@pytest.mark.slow
def test_train_writes_the_name_and_note_given(small_demo, tmp_path, capsys):
    out = tmp_path / "bundles" / "named"
    argv = tiny_train_argv(small_demo[0], out, "--epochs", "1", "--batch-size", "8",
                           "--name", "Tiny seed CNN", "--note", "one epoch\nto test names",
                           "--json")  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    raw = raw_meta(out)
    assert (raw["name"], raw["note"]) == ("Tiny seed CNN", "one epoch\nto test names")
    assert "name" not in raw["training"]  # a label, not a setting: Compare does not diff it
    assert list_bundles_df(out.parent)["name"].tolist() == ["Tiny seed CNN"]


# --- The dashboard -----------------------------------------------------------------------------


def audit_actions() -> list[dict]:
    from bcp_core import settings

    path = settings.audit_log()
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_name_editor_saves_and_the_runs_table_finds_the_run(small_demo, bundles_dir, idle_jobs):
    shutil.copytree(bundles_dir / "demo", bundles_dir / "run-b")
    at = open_app(small_demo[0], "pages/training.py")
    assert at.selectbox(key="tr_label_pick").options == ["run-b"]  # never the demo bundle
    at.selectbox(key="tr_label_pick").set_value("run-b").run()
    at.text_input(key="tr_label_name:run-b").input("Baseline ![x](http://h/x.png)")
    at.text_area(key="tr_label_note:run-b").input("seed 3\n2 epochs")
    at.button(key="tr_label_save").click().run()
    assert not at.error, [e.value for e in at.error]
    assert at.success[0].value == plain_markdown("Saved the name and note of run-b.")
    label = read_bundle_meta(bundles_dir / "run-b").label
    assert label == RunLabel("Baseline ![x](http://h/x.png)", "seed 3\n2 epochs")
    runs = next(d.value for d in at.dataframe if "bundle" in d.value.columns)
    assert runs.set_index("bundle").loc["run-b", "name"] == label.name  # drawn after the save
    event = audit_actions()[-1]
    assert (event["action"], event["bundle"]) == ("bundle_label", "run-b")

    at.text_input(key="tr_runs_filter").input("baseline").run()
    runs = next(d.value for d in at.dataframe if "bundle" in d.value.columns)
    assert runs["bundle"].tolist() == ["run-b"]
    at.text_input(key="tr_runs_filter").input("no such run").run()
    assert any("No run matches" in c.value for c in at.caption)


def test_the_bundle_of_the_run_going_on_cannot_be_named(small_demo, bundles_dir, idle_jobs):
    from bcp_core.config import TrainConfig
    from dashboard.jobs import TrainingJob

    for name in ("run-b", "run-c"):
        shutil.copytree(bundles_dir / "demo", bundles_dir / name)
    busy = TrainingJob(TrainConfig(epochs=7), bundles_dir / "run-c", owner="another session")
    busy.status = "running"
    idle_jobs.current = busy
    at = open_app(small_demo[0], "pages/training.py")
    assert at.selectbox(key="tr_label_pick").options == ["run-b"]


@pytest.mark.slow
def test_a_run_started_on_the_page_is_written_with_its_name_and_note(
    small_demo, tmp_path, monkeypatch, idle_jobs
):
    monkeypatch.setenv("BCP_BUNDLES_DIR", str(tmp_path / "bundles"))
    at = open_app(small_demo[0], "pages/training.py")
    at.selectbox(key="tr_model").set_value("seed_cnn").run()  # loads the model's recipe
    for key, value in (("tr_h", 64), ("tr_w", 48), ("tr_epochs", 1), ("tr_batch", 8)):
        at.number_input(key=key).set_value(value)
    at.text_input(key="tr_name").input("From the page")
    at.text_input(key="tr_note").input("one epoch")
    at.button(key="tr_start").click().run()
    assert not at.error, [e.value for e in at.error]
    job = idle_jobs.current
    assert job is not None and job.label == RunLabel("From the page", "one epoch")
    assert job.thread is not None
    job.thread.join(timeout=300)
    assert job.status == "completed", job.message
    assert read_bundle_meta(job.out_dir).label == job.label


def array(values: list | dict) -> np.ndarray:
    """A trace's values from a chart's JSON (Plotly writes arrays as typed base64 data)."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values)


def test_the_compare_page_draws_one_curve_per_chosen_run(small_demo, bundles_dir):
    other = Path(shutil.copytree(bundles_dir / "demo", bundles_dir / "run-b"))
    history = pd.read_csv(other / "history.csv")
    longer = pd.concat([history, history.tail(1).assign(epoch=len(history) + 1)])
    longer.to_csv(other / "history.csv", index=False)
    update_label(other, "Baseline", "")
    at = open_app(small_demo[0], "pages/compare.py")
    weak = read_bundle_meta(other).metrics.chance == "no better than chance"  # the tiny model
    mark = " · no better than chance" if weak else ""
    assert sorted(at.multiselect(key="cmp_bundles").options) == [
        f"demo{mark}",
        f"run-b · Baseline{mark}",
    ]

    charts = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        charts[spec["layout"]["title"]["text"]] = spec["data"]
    assert {"Validation ROC-AUC", "Validation PR-AUC", "Validation loss", "Training loss"} <= set(
        charts
    )
    lines = [t for t in charts["Validation PR-AUC"] if t["mode"] == "lines+markers"]
    assert sorted(t["name"] for t in lines) == ["Baseline", "demo"]
    epochs = {t["name"]: array(t["x"]).tolist() for t in lines}
    assert epochs == {"demo": [1, 2], "Baseline": [1, 2, 3]}
    kept = [t for t in charts["Validation PR-AUC"] if t["mode"] == "markers"]
    best = raw_meta(other)["metrics"]["best_epoch"]
    assert [array(t["x"]).tolist() for t in kept] == [[best], [best]]  # each run's kept epoch
