"""Each dashboard page, driven through the real app with Streamlit's AppTest."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import open_app


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_data_matching_page_shows_the_ground_truth_counts(small_demo):
    root, truth = small_demo
    at = open_app(root)
    counts = truth["counts"]
    assert metric(at, "Cancer rows") == str(counts["cancer_rows"])
    assert metric(at, "Keys matched") == str(counts["cancer_key_matched"])
    assert metric(at, "Cancer images") == str(counts["cancer_images_found"])
    assert metric(at, "Non-cancer images") == str(counts["non_cancer_images_found"])
    assert metric(at, "Validation rows") == str(counts["validation_rows"])
    unmatched = next(
        df.value
        for df in at.dataframe
        if "reason" in df.value.columns and "key" in df.value.columns
    )
    assert len(unmatched) == len(truth["unmatched"])


def test_patient_ids_are_masked_by_default_and_can_be_shown(small_demo):
    root, truth = small_demo
    at = open_app(root)

    def keys():
        df = next(d.value for d in at.dataframe if "key" in d.value.columns)
        return df["key"].tolist()

    assert all("*" in k for k in keys() if k.count("-") >= 3)
    patient = truth["images"][0]["patient_id"]
    assert not any(patient in k for k in keys())
    at.session_state["mask_ids"] = False
    at.run()
    assert not any("*" in k for k in keys())


def test_missing_data_root_gives_one_sentence_and_the_app_keeps_running(tmp_path):
    at = open_app(tmp_path / "nowhere")
    assert not at.exception
    assert len(at.error) == 1
    assert "Data root not found" in at.error[0].value
    assert "Choose the folder" in at.error[0].value
    assert at.sidebar.text_input(key="data_root").value == str(tmp_path / "nowhere")


def test_wrong_sheet_names_are_named_on_the_page(tmp_path):
    from tests.conftest import write_xlsx

    root = tmp_path / "root"
    write_xlsx(root / "datacombined.xlsx", {"Kanser": [["a"], [1]]})
    write_xlsx(root / "data_validation_x.xlsx", {"Sheet1": [["a"], [1]]})
    (root / "Cancer").mkdir()
    (root / "Non-Cancer").mkdir()
    at = open_app(root)
    assert "no sheet 'Cancer'; its sheets are: 'Kanser'" in at.error[0].value


def test_class_balance_page_shows_the_accuracy_trap(small_demo):
    root, truth = small_demo
    at = open_app(root, "pages/class_balance.py")
    found = truth["counts"]
    cancer, normal = found["cancer_images_found"], found["non_cancer_images_found"]
    assert metric(at, "Cancer images") == str(cancer)
    assert metric(at, "Accuracy of always 'no cancer'") == f"{normal / (cancer + normal):.1%}"
    assert metric(at, "Imbalance") == f"1 : {normal / cancer:.1f}"
    assert f"finds **0 of {cancer}** cancers" in at.warning[0].value
    assert len(at.get("plotly_chart")) == 6


@pytest.mark.parametrize("share", [0.3, 0.5])
def test_class_balance_split_slider_reruns_without_error(small_demo, share):
    root, _ = small_demo
    at = open_app(root, "pages/class_balance.py")
    at.slider(key="balance_val").set_value(share).run()
    assert not at.exception
    at.radio(key="balance_measure").set_value("patients").run()
    assert not at.exception


@pytest.fixture
def fresh_jobs(monkeypatch, tmp_path):
    """An empty training slot and a bundles folder of the test's own."""
    from dashboard.jobs import registry

    registry.clear()
    monkeypatch.setenv("BCP_BUNDLES_DIR", str(tmp_path / "bundles"))
    yield registry()
    job = registry().current
    if job is not None and job.thread is not None:
        job.stop_event.set()
        job.thread.join(timeout=120)
    registry.clear()


def fill_tiny_training_form(at: AppTest, **extra) -> None:
    at.selectbox(key="tr_model").set_value("seed_cnn")
    at.number_input(key="tr_h").set_value(64)
    at.number_input(key="tr_w").set_value(48)
    at.number_input(key="tr_epochs").set_value(2)
    at.number_input(key="tr_batch").set_value(8)
    for key, value in extra.items():
        at.text_input(key=key).set_value(value)


@pytest.mark.slow
def test_training_page_runs_a_tiny_configuration_to_the_end(small_demo, fresh_jobs, tmp_path):
    import time

    from bcp_core.model.bundle import load_bundle

    root, _ = small_demo
    at = open_app(root, "pages/training.py")
    assert "No training run yet" in at.info[0].value
    fill_tiny_training_form(at)
    at.button(key="tr_start").click().run()
    assert not at.error, [e.value for e in at.error]
    job = fresh_jobs.current
    assert job is not None and job.cfg.model == "seed_cnn"
    deadline = time.monotonic() + 300
    while job.running and time.monotonic() < deadline:
        time.sleep(1)
        at.run()
        assert not at.exception
    at.run()
    assert job.status == "completed", job.message
    assert any("best epoch" in s.value for s in at.success)
    assert at.get("plotly_chart"), "the per-epoch charts are drawn"
    runs = next(d.value for d in at.dataframe if "bundle" in d.value.columns)
    assert runs["bundle"].tolist() == [job.out_dir.name]
    assert load_bundle(job.out_dir).meta.training["epochs"] == 2


def test_training_page_refuses_bad_settings_before_starting(small_demo, fresh_jobs):
    root, _ = small_demo
    at = open_app(root, "pages/training.py")
    fill_tiny_training_form(at, tr_weights="imagenet")
    at.selectbox(key="tr_model").set_value("default_cnn")
    at.button(key="tr_start").click().run()
    assert "Pretrained weights apply to" in at.error[0].value
    assert fresh_jobs.current is None


def test_a_second_training_request_is_refused_politely(small_demo, fresh_jobs):
    from bcp_core.config import TrainConfig
    from dashboard.jobs import TrainingJob

    busy = TrainingJob(TrainConfig(epochs=7), Path("elsewhere"), owner="another session")
    busy.status = "running"
    fresh_jobs.current = busy
    root, _ = small_demo
    at = open_app(root, "pages/training.py")
    fill_tiny_training_form(at)
    at.button(key="tr_start").click().run()
    assert "Another training run is in progress (epoch 1 of 7" in at.error[0].value
    assert fresh_jobs.current is busy
    assert "(started by another session)" in at.subheader[0].value
