"""Page 4 (threshold explorer) through AppTest, and the evaluate / predict commands around it."""

from __future__ import annotations

import json
import re

import numpy as np
from sklearn import metrics as skm
from streamlit.testing.v1 import AppTest

from bcp_core.cli import main
from bcp_core.evaluation.result import FEW_CANCER_PATIENTS
from bcp_core.model.bundle import read_bundle_meta
from tests.conftest import open_app


def open_threshold_page(data_root) -> AppTest:
    return open_app(data_root, "pages/threshold.py")


def confusion_text(at: AppTest) -> str:
    chart = next(c for c in at.get("plotly_chart") if "Confusion" in c.proto.spec)
    return chart.proto.spec


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_moving_the_slider_changes_the_confusion_matrix(small_demo, bundles_dir):
    root, _ = small_demo
    at = open_threshold_page(root)
    saved = read_bundle_meta(bundles_dir / "demo").threshold.value
    assert at.slider(key="thr_value").value == saved
    before = (confusion_text(at), metric(at, "Sensitivity"), metric(at, "Specificity"))
    at.slider(key="thr_value").set_value(0.0).run()
    after = (confusion_text(at), metric(at, "Sensitivity"), metric(at, "Specificity"))
    assert after != before
    assert metric(at, "Sensitivity") == "100.0%" and metric(at, "Specificity") == "0.0%"


def test_a_typed_threshold_moves_the_slider_and_survives_a_change_of_level(small_demo, bundles_dir):
    root, _ = small_demo
    at = open_threshold_page(root)
    at.number_input(key="thr_box").set_value(0.1234).run()
    assert at.slider(key="thr_value").value == 0.1234
    assert "0.1234" in at.button(key="thr_save").label
    at.radio(key="thr_level").set_value("patient").run()
    assert at.slider(key="thr_value").value == 0.1234  # applied, so kept across levels
    at.slider(key="thr_value").set_value(0.5).run()
    assert at.number_input(key="thr_box").value == 0.5  # and the box follows the slider


def test_zoom_narrows_the_slider_around_the_operating_point(small_demo, bundles_dir):
    root, _ = small_demo
    at = open_threshold_page(root)
    at.number_input(key="thr_box").set_value(0.9709).run()
    at.toggle(key="thr_zoom").set_value(True).run()
    slider = at.slider(key="thr_value")
    assert (slider.min, slider.max) == (0.9509, 0.9909) and slider.value == 0.9709


def test_applying_a_recommendation_moves_the_slider(small_demo, bundles_dir):
    root, _ = small_demo
    at = open_threshold_page(root)
    at.slider(key="thr_value").set_value(0.0).run()
    at.button(key="apply_rec_3").click().run()  # sensitivity >= target, best specificity
    moved = at.slider(key="thr_value").value
    assert moved > 0.0
    assert at.session_state["thr_method"] != "manual"


def test_saving_the_threshold_updates_the_bundle_and_predict_uses_it(
    small_demo, bundles_dir, capsys
):
    import shutil

    root, truth = small_demo
    run = bundles_dir / "run-1"  # the demo bundle is read-only in the dashboard
    shutil.copytree(bundles_dir / "demo", run)
    at = open_app(root, "pages/threshold.py", bundle=str(run))
    at.slider(key="thr_value").set_value(0.25).run()
    at.button(key="thr_save").click().run()
    assert "Saved" in at.success[0].value
    meta = read_bundle_meta(run)
    assert meta.threshold.value == 0.25 and meta.threshold.method == "manual"
    assert meta.threshold.previous["method"] == "youden"
    assert meta.threshold.by == "local"
    image = root / next(i["relpath"] for i in truth["images"] if i["on_disk"])
    assert main(["predict", "--bundle", str(run), str(image), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["threshold"] == 0.25
    assert out[0]["label"] == int(out[0]["probability"] >= 0.25)


def test_page_without_bundles_says_how_to_get_one(small_demo, tmp_path, monkeypatch):
    monkeypatch.setenv("BCP_BUNDLES_DIR", str(tmp_path / "empty"))
    root, _ = small_demo
    at = open_threshold_page(root)
    assert "train one on the Training page" in at.info[0].value


def test_evaluate_json_agrees_with_scikit_learn(bundles_dir, capsys):
    bundle = bundles_dir / "demo"
    assert main(["evaluate", "--bundle", str(bundle), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    import pandas as pd

    v = pd.read_csv(bundle / "val_predictions.csv")
    y, p = v["label"].to_numpy(), v["probability"].to_numpy()
    t = out["threshold"]
    pred = (p >= t).astype(int)
    assert out["roc_auc"] == skm.roc_auc_score(y, p)
    assert out["pr_auc"] == skm.average_precision_score(y, p)
    assert out["sensitivity"] == skm.recall_score(y, pred)
    assert out["specificity"] == skm.recall_score(1 - y, 1 - pred)
    assert out["f1"] == skm.f1_score(y, pred)
    assert out["n"] == len(y) and out["n_positive"] == int(y.sum())
    for key in ("precision", "npv"):
        assert key in out
    low, high = out["sensitivity_ci"]
    assert low is None or low <= out["sensitivity"] <= high
    assert np.isfinite(out["brier"])
    # The demo validates on a handful of patients with cancer, and says so.
    cancer_patients = v.loc[v["label"] == 1, "patient_id"].nunique()
    assert cancer_patients < FEW_CANCER_PATIENTS
    assert out["caution"].startswith(f"Only {cancer_patients} patients with cancer validate")
    assert main(["evaluate", "--bundle", str(bundle)]) == 0
    assert f"Caution: Only {cancer_patients} patients" in capsys.readouterr().out


def test_the_page_cautions_when_few_patients_with_cancer_validate(small_demo, bundles_dir):
    root, _ = small_demo
    at = open_threshold_page(root)
    cautions = [w.value for w in at.warning if "patients with cancer validate" in w.value]
    assert len(cautions) == 1 and "rough guide" in cautions[0]
    assert "train again with another seed" in cautions[0]  # the analyst's page: the advice too


def test_aucs_read_as_numbers_and_proportions_as_percentages(small_demo, bundles_dir):
    root, _ = small_demo
    at = open_threshold_page(root)
    auc = metric(at, "ROC-AUC")
    assert re.fullmatch(r"[01]\.\d{3}", auc), auc  # 0.861, not 86.1%
    assert metric(at, "Sensitivity").endswith("%")
    card = next(m for m in at.metric if m.label == "ROC-AUC")
    assert re.fullmatch(r"95% CI [01]\.\d\d-[01]\.\d\d", card.proto.delta), card.proto.delta
