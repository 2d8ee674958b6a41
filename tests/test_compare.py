"""Comparing runs: the paired patient bootstrap, the common patients, the compare command and
page 6 (Compare)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bcp_core.cli import main
from bcp_core.errors import UserError
from bcp_core.evaluation import intervals
from bcp_core.evaluation.compare import RunInput, compare_runs, differing_settings
from bcp_core.evaluation.metrics import ranking_metrics
from bcp_core.model.files import META_FILE
from bcp_core.plots import plot_compare_pr, plot_compare_roc
from tests.conftest import open_app


def table(n_patients: int = 40, seed: int = 0, noise: float = 0.3) -> pd.DataFrame:
    """Two images per patient, a quarter of the patients with cancer, scores with some signal."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = int(p % 4 == 0)
        for view in ("CC", "MLO"):
            score = np.clip(0.3 + 0.4 * label + rng.normal(0, noise), 0, 1)
            rows.append(
                {"file": f"P{p:03d}_{view}.jpg", "patient_id": f"P{p:03d}", "label": label,
                 "probability": float(score)}
            )  # fmt: skip
    return pd.DataFrame(rows)


def run(name: str, df: pd.DataFrame, threshold: float = 0.5, fingerprint="abc", **settings):
    return RunInput(name, df, threshold, {"training.seed": 1, **settings}, fingerprint)


def test_paired_difference_is_the_plain_difference_when_patients_coincide():
    a, b = table(seed=1), table(seed=2)
    c = compare_runs([run("a", a), run("b", b)], n_boot=200)
    plain = (
        ranking_metrics(a["label"], a["probability"])["roc_auc"]
        - ranking_metrics(b["label"], b["probability"])["roc_auc"]
    )
    pair = c.pairs[0]
    assert pair.roc_auc_diff == pytest.approx(plain)
    low, high = pair.roc_auc_diff_ci
    assert low <= pair.roc_auc_diff <= high and low < high
    assert 0.0 <= pair.p_value <= 1.0 and pair.n_used > 150
    assert (c.n_images, c.n_patients, c.n_positive) == (80, 40, 20)
    assert c.dropped_images == {"a": 0, "b": 0}


def test_the_bootstrap_reuses_the_intervals_resamples():
    """Each run's own AUC interval is the one ``intervals`` gives on the same patients."""
    a, b = table(seed=1), table(seed=2)
    c = compare_runs([run("a", a), run("b", b)], n_boot=100, seed=5)
    own = intervals.bootstrap_auc_intervals(
        a["label"], a["probability"], a["patient_id"], n_boot=100, seed=5
    )
    assert c.runs[0].result.roc_auc_ci == pytest.approx(own["roc_auc"])


def test_a_model_compared_with_itself_differs_by_zero():
    a = table(seed=3)
    c = compare_runs([run("a", a), run("a again", a.copy())], n_boot=100)
    pair = c.pairs[0]
    assert pair.roc_auc_diff == 0.0 and pair.roc_auc_diff_ci == (0.0, 0.0)
    assert pair.pr_auc_diff == 0.0 and pair.pr_auc_diff_ci == (0.0, 0.0)
    assert pair.p_value == 1.0
    assert c.differing == {}


def test_runs_of_different_splits_meet_on_their_common_patients():
    a, b = table(seed=1), table(seed=2)
    b = b[~b["patient_id"].isin(["P000", "P001", "P002"])]  # b validated without them
    a = a[a["patient_id"] != "P039"]
    a = a[a["file"] != "P010_MLO.jpg"]  # one image only a lacks
    c = compare_runs([run("a", a), run("b", b)], n_boot=50)
    assert c.n_patients == 36 and c.n_images == 71
    assert c.dropped_images == {"a": len(a) - 71, "b": len(b) - 71}
    common = set(zip(a["file"], a["patient_id"])) & set(zip(b["file"], b["patient_id"]))
    assert c.runs[0].result.n == len(common) == 71
    both = a.merge(b[["file", "patient_id"]], on=["file", "patient_id"])
    assert c.runs[0].result.roc_auc == pytest.approx(
        ranking_metrics(both["label"], both["probability"])["roc_auc"]
    )


def test_runs_on_different_data_are_refused_with_a_sentence():
    a = table(seed=1)
    with pytest.raises(UserError, match="trained on different data"):
        compare_runs([run("a", a), run("b", a, fingerprint="other")])
    flipped = a.assign(label=1 - a["label"])
    with pytest.raises(UserError, match="disagree on the label"):
        compare_runs([run("a", a), run("b", flipped, fingerprint="")])
    other = a.assign(patient_id="X" + a["patient_id"])
    with pytest.raises(UserError, match="share no validation image"):
        compare_runs([run("a", a), run("b", other)])
    with pytest.raises(UserError, match="at least two"):
        compare_runs([run("a", a)])
    with pytest.raises(UserError, match="'a' is named twice"):
        compare_runs([run("a", a), run("a", a)])
    with pytest.raises(UserError, match="b has no validation predictions"):
        compare_runs([run("a", a), run("b", a.iloc[:0])])


def test_settings_that_differ_and_the_json_and_figures():
    a, b, c3 = table(seed=1), table(seed=2), table(seed=4)
    runs = [
        run("a", a, **{"training.epochs": 5}),
        run("b", b, 0.4, **{"training.epochs": 8}),
        run("<b>c</b>", c3, **{"training.epochs": 5, "preprocessing.height": 256}),
    ]
    assert differing_settings(runs) == {
        "preprocessing.height": (None, None, 256),
        "training.epochs": (5, 8, 5),
    }
    result = compare_runs(runs, n_boot=50)
    data = json.loads(json.dumps(result.to_json()))
    assert [p["a"] + "-" + p["b"] for p in data["pairs"]] == ["a-b", "a-<b>c</b>", "b-<b>c</b>"]
    assert data["runs"][1]["threshold"] == 0.4
    assert set(data["runs"][0]) >= {"roc_auc", "roc_auc_ci", "sensitivity_ci", "specificity_ci"}
    assert data["common_images"] == 80 and data["common_patients"] == 40
    assert data["differing_settings"]["training.epochs"] == [5, 8, 5]
    for fig in (plot_compare_roc(result.runs), plot_compare_pr(result.runs)):
        names = " ".join(str(t.name) for t in fig.data)
        assert "<b>" not in names and "&lt;b&gt;c" in names


def second_bundle(demo_bundle: Path, where: Path, **meta_changes) -> Path:
    """A copy of the demo bundle with other validation scores, a patient fewer and another seed."""
    out = where / "run-b"
    shutil.copytree(demo_bundle, out)
    preds = pd.read_csv(out / "val_predictions.csv")
    rng = np.random.default_rng(9)
    preds["probability"] = np.clip(preds["probability"] + rng.normal(0, 0.2, len(preds)), 0, 1)
    preds = preds[preds["patient_id"] != preds["patient_id"].iloc[0]]
    preds.to_csv(out / "val_predictions.csv", index=False)
    meta = json.loads((out / META_FILE).read_text())
    meta["training"]["seed"] = 11
    meta.update(meta_changes)
    (out / META_FILE).write_text(json.dumps(meta))
    return out


def test_compare_command_json_and_table(demo_bundle, tmp_path, capsys):
    other = second_bundle(demo_bundle, tmp_path)
    full = pd.read_csv(demo_bundle / "val_predictions.csv")
    common = pd.read_csv(other / "val_predictions.csv")
    assert main(["compare", str(demo_bundle), str(other), "--json", "--n-boot", "100"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in data["runs"]] == ["tiny-demo", "run-b"]
    assert data["common_images"] == len(common)
    assert data["common_patients"] == common["patient_id"].nunique()
    assert data["dropped_images"] == {"tiny-demo": len(full) - len(common), "run-b": 0}
    assert data["differing_settings"]["training.seed"] == [3, 11]
    pair = data["pairs"][0]
    assert pair["a"] == "tiny-demo" and len(pair["roc_auc_diff_ci"]) == 2
    assert "paired patient bootstrap" in data["test"]

    assert main(["compare", str(demo_bundle), str(other), "--n-boot", "50"]) == 0
    out = capsys.readouterr().out
    assert f"{len(common)} common validation images" in out
    assert "tiny-demo - run-b" in out and "training.seed: 3 | 11" in out


def test_compare_command_refuses_runs_on_other_data(demo_bundle, tmp_path, capsys):
    other = second_bundle(demo_bundle, tmp_path, data_fingerprint="0000other")
    assert main(["compare", str(demo_bundle), str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "different data" in err and err.count("\n") == 1


def test_compare_page_shows_curves_table_differences_and_settings(small_demo, bundles_dir):
    second_bundle(bundles_dir / "demo", bundles_dir)
    at = open_app(small_demo[0], "pages/compare.py")
    assert sorted(Path(p).name for p in at.multiselect(key="cmp_bundles").value) == [
        "demo",
        "run-b",
    ]
    frames = {tuple(d.value.columns)[0]: d.value for d in at.dataframe}
    assert len(frames["run"]) == 2 and "sensitivity (95% CI)" in frames["run"].columns
    assert len(frames["runs"]) == 1
    settings = next(d.value for d in at.dataframe if d.value.index.name == "setting")
    assert "training.seed" in settings.index
    captions = " ".join(c.value for c in at.caption)
    assert "Paired patient bootstrap" in captions and "validation images of" in captions
    charts = " ".join(c.proto.spec for c in at.get("plotly_chart"))
    assert "ROC curves" in charts and "Precision-recall curves" in charts


def test_compare_page_refuses_other_data_and_viewers_see_only_the_servers_bundle(
    small_demo, bundles_dir, monkeypatch
):
    second_bundle(bundles_dir / "demo", bundles_dir, data_fingerprint="0000other")
    at = open_app(small_demo[0], "pages/compare.py")
    assert "different data" in at.error[0].value
    monkeypatch.setenv("BCP_MODE", "demo")
    monkeypatch.setenv("BCP_DATA_ROOT", str(small_demo[0]))
    at = open_app(small_demo[0], "pages/compare.py")
    assert not at.multiselect and "server's bundle only" in at.info[0].value
