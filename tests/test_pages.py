"""Each dashboard page, driven through the real app with Streamlit's AppTest."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from bcp_core.model.files import META_FILE
from tests.conftest import (
    edit_workbook,
    fill_tiny_training_form,
    open_app,
    typed_root,
    watch_job,
)


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
    assert str(tmp_path) not in at.error[0].value  # shown below its allowed folder
    assert at.sidebar.text_input(key="data_root").value == typed_root(tmp_path / "nowhere")


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
def fresh_jobs(monkeypatch, tmp_path, idle_jobs):
    """An empty training slot and a bundles folder of the test's own."""
    monkeypatch.setenv("BCP_BUNDLES_DIR", str(tmp_path / "bundles"))
    return idle_jobs


@pytest.mark.slow
def test_training_page_runs_a_tiny_configuration_to_the_end(small_demo, fresh_jobs, tmp_path):

    from bcp_core.model.bundle import load_bundle

    root, _ = small_demo
    at = open_app(root, "pages/training.py")
    assert "No run since this server started" in at.info[0].value
    fill_tiny_training_form(at)
    at.button(key="tr_start").click().run()
    assert not at.error, [e.value for e in at.error]
    job = fresh_jobs.current
    assert job is not None and job.cfg.model == "seed_cnn"
    watch_job(job, at)
    assert job.status == "completed", job.message
    assert any("best epoch" in s.value for s in at.success)
    assert at.get("plotly_chart"), "the per-epoch charts are drawn"
    runs = next(d.value for d in at.dataframe if "bundle" in d.value.columns)
    assert runs["bundle"].tolist() == [job.out_dir.name]
    row = runs.iloc[0]  # the settings as columns, and the epoch kept named as such
    assert row["image_size"] == "64 x 48" and row["epochs"] == 2
    assert 1 <= row["best_epoch"] <= 2 and row["runs"] == 1
    assert load_bundle(job.out_dir).meta.training["epochs"] == 2
    # The hand-off: a word when no better than chance, then "Use this model" and the next pages
    from bcp_core.evaluation.intervals import better_than_chance
    from bcp_core.inference.assessment import evaluate_level

    result = evaluate_level(load_bundle(job.out_dir).val_predictions, "image")[0]
    chance = any("No better than chance" in w.value for w in at.warning)
    assert chance == (not better_than_chance(result.roc_auc_ci))
    # and, a handful of patients with cancer validating it, what its figures are worth
    k = result.n_positive_patients
    assert any(f"Only {k} patients with cancer validate" in w.value for w in at.warning)
    assert at.button(key="tr_use").label == "Use this model"
    # Clicking it is checked in the browser journey: AppTest keeps the sidebar's first values.


@pytest.mark.slow
def test_choosing_a_model_fills_the_form_with_its_recipe_and_the_run_keeps_it(
    small_demo, fresh_jobs
):

    from bcp_core.config import MODEL_SPECS
    from bcp_core.model.bundle import load_bundle

    at = open_app(small_demo[0], "pages/training.py")
    at.selectbox(key="tr_model").set_value("default_cnn").run()
    assert (at.number_input(key="tr_h").value, at.number_input(key="tr_epochs").value) == (160, 60)
    # a network trained from scratch has no backbone to fine-tune or freeze
    assert "tr_frozen" not in [w.key for w in at.number_input]
    assert not {"tr_bn", "tr_finetune"} & {w.key for w in [*at.selectbox, *at.checkbox]}
    at.selectbox(key="tr_model").set_value("efficientnet_lite0").run()
    recipe = MODEL_SPECS["efficientnet_lite0"].recipe
    form = {key: at.number_input(key=key).value for key in ("tr_h", "tr_w", "tr_epochs")}
    assert form == {"tr_h": 320, "tr_w": 256, "tr_epochs": recipe.epochs}
    assert at.number_input(key="tr_patience").value == recipe.patience == 4
    assert (
        at.number_input(key="tr_frozen").value == recipe.frozen_stages == 4
        and at.selectbox(key="tr_bn").value == "train"
    )
    assert at.checkbox(key="tr_finetune").value is True
    assert at.select_slider(key="tr_lr").value == 3e-4
    assert "320 x 256, up to 10 epochs" in " ".join(c.value for c in at.caption)
    # A tiny run keeps the recipe's fine-tuning settings in its bundle; what was changed wins.
    for key, value in (("tr_h", 64), ("tr_w", 48), ("tr_epochs", 1), ("tr_batch", 8)):
        at.number_input(key=key).set_value(value)
    at.button(key="tr_start").click().run()
    assert not at.error, [e.value for e in at.error]
    job = fresh_jobs.current
    watch_job(job)
    assert job.status == "completed", job.message
    kept = load_bundle(job.out_dir).meta.training
    assert kept["model"] == "efficientnet_lite0" and kept["image_size"] == [64, 48]
    assert (kept["fine_tune"], kept["frozen_stages"], kept["batch_norm"]) == (True, 4, "train")
    assert (kept["learning_rate"], kept["patience"], kept["epochs"]) == (3e-4, 4, 1)


def test_training_page_offers_a_cluster_only_when_one_is_configured(
    small_demo, fresh_jobs, monkeypatch
):
    root, _ = small_demo
    monkeypatch.delenv("BCP_RAY_ADDRESS", raising=False)
    at = open_app(root, "pages/training.py")
    assert not at.get("radio"), "nothing to choose on a machine without GPUs or a cluster"
    pytest.importorskip("ray", reason="Ray is not installed (requirements-scale.txt)")
    monkeypatch.setenv("BCP_RAY_ADDRESS", "auto")
    at = open_app(root, "pages/training.py")
    assert at.radio(key="tr_distribute").options == ["this process", "the Ray cluster"]


def test_training_page_refuses_bad_settings_before_starting(small_demo, fresh_jobs):
    root, _ = small_demo
    at = open_app(root, "pages/training.py")
    fill_tiny_training_form(at)
    at.selectbox(key="tr_model").set_value("inceptionv3").run()
    assert "tr_weights" in [w.key for w in at.selectbox]  # a backbone: its weights are offered
    at.number_input(key="tr_h").set_value(64)
    at.button(key="tr_start").click().run()
    assert at.error[0].value.startswith("The inceptionv3 model needs images of at least 75x75")
    assert fresh_jobs.current is None
    at.selectbox(key="tr_model").set_value("default_cnn").run()  # nothing to fine-tune here
    assert not {"tr_weights", "tr_bn"} & {w.key for w in at.selectbox}


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


def test_a_cleared_cache_keeps_the_running_job_its_stop_and_the_one_run_rule(
    small_demo, fresh_jobs
):
    """Security row 1: Streamlit's clear-cache request emptied the training slot."""
    from streamlit.runtime import caching

    from bcp_core.config import TrainConfig
    from dashboard.jobs import TrainingJob, registry

    busy = TrainingJob(TrainConfig(epochs=7), Path("elsewhere"), owner="another session")
    busy.status = "running"
    fresh_jobs.current = busy
    caching.cache_data.clear()  # what the clear-cache message does, for every session
    caching.cache_resource.clear()
    assert registry().current is busy
    root, _ = small_demo
    at = open_app(root, "pages/training.py")
    fill_tiny_training_form(at)
    at.button(key="tr_start").click().run()
    assert "Another training run is in progress" in at.error[0].value


@pytest.fixture
def hostile_root(tmp_path):
    """A data root whose workbook cells hold a formula, a link and a spreadsheet function."""
    from tests.test_matching import make_root

    link = '<a href="http://x">v</a>'
    cancer = [
        ["FILE0001", 20150101, 101010, "DIT000000001", link, "L"],
        ['=HYPERLINK("http://x","y")', 20150101, 101010, "DIT000000002", "CC", "L"],
    ]
    validation = [["FILE0001", 20150101, "101010", "DIT000000001", "C:\\data\\FILE0001.jpg"]]
    non_cancer = [
        ["FILE0002", 20150101, 101010, "DIT000000003", link, "R"],
        ["FILE0003", 20150101, 101010, "DIT000000004", "@SUM(1+1)", "R"],
    ]
    files = ["C/FILE0001.jpg", "N/FILE0002.jpg", "N/FILE0003.jpg"]
    root = make_root(tmp_path, cancer, validation, non_cancer, files)

    def as_typed(book) -> None:  # openpyxl stores text starting with "=" as a formula
        book["Cancer"]["A3"].data_type = "s"

    edit_workbook(root / "datacombined.xlsx", as_typed)
    return root


def test_csv_downloads_quote_formula_cells_from_the_workbooks(hostile_root, monkeypatch):
    """Threat row 11: workbook formulas leave the data-matching page as text, not formulas."""
    from tests.test_output_safety import (
        assert_no_formula_cells,
        download_text,
        keep_media_storages,
    )

    kept = keep_media_storages(monkeypatch)
    at = open_app(hostile_root)
    manifest = download_text(at, kept, "Download manifest (CSV)")
    unmatched = download_text(at, kept, "Download unmatched rows (CSV)")
    views = [row["view"] for row in csv.DictReader(io.StringIO(manifest))]
    assert "'@SUM(1+1)" in views
    keys = [row["key"] for row in csv.DictReader(io.StringIO(unmatched))]
    assert any(k.startswith('\'=HYPERLINK("HTTP://X","Y")-20150101-101010-DIT') for k in keys)
    assert_no_formula_cells(manifest)
    assert_no_formula_cells(unmatched)


def test_class_balance_charts_show_a_link_in_a_workbook_as_text(hostile_root):
    """Threat row 12: a ViewPosition holding ``<a href>`` is a label, never a link."""
    import json

    from tests.test_output_safety import assert_no_html_in_figure, json_strings

    at = open_app(hostile_root, "pages/class_balance.py")
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    by_view = next(s for s in charts if '"Per view"' in s)
    labels = [t.lower() for t in json_strings(json.loads(by_view))]
    assert '&lt;a href="http://x"&gt;v&lt;/a&gt;' in labels  # the workbook reader upper-cases
    for spec in charts:
        assert_no_html_in_figure(spec)


# --- Data roots, paths shown and training limits (threat rows 3, 4, 7, 9, 10, 16, 17) --------

NOT_ALLOWED = "That folder is not an allowed data root: choose allowed or a folder inside it"


def errors_read(at: AppTest) -> list[str]:
    """The page's error messages as a reader sees them (markdown escapes removed)."""
    import re

    return [re.sub(r"\\(.)", r"\1", e.value) for e in at.error]


@pytest.fixture
def allowed(tmp_path, monkeypatch):
    """The one allowed folder, ``allowed``, with a link inside it to a real dataset elsewhere."""
    folder = tmp_path / "allowed"
    (folder / "empty").mkdir(parents=True)
    monkeypatch.setenv("BCP_ALLOWED_ROOTS", str(folder))
    return folder


@pytest.mark.parametrize(
    "typed", ["/", "/etc", "/root", "~", "../../etc", "allowed/../..", "{demo}", "allowed/link"]
)
def test_data_roots_outside_the_allowed_folder_are_refused_listing_nothing(
    small_demo, allowed, typed
):
    """Rows 3 and 4: a server folder was listed; another dataset could be matched and exported."""
    root, _ = small_demo
    (allowed / "link").symlink_to(root, target_is_directory=True)
    at = open_app(typed.format(demo=root))
    assert errors_read(at) == [
        f"{NOT_ALLOWED} (the server's BCP_ALLOWED_ROOTS setting names the allowed folders)."
    ]
    assert not at.metric and not at.get("download_button") and not at.dataframe


def test_a_nul_character_in_the_data_root_gets_a_sentence_not_a_traceback(allowed):
    """Row 16: ``ValueError: embedded null byte`` crashed the page."""
    at = open_app("allowed/empty\0")
    assert not at.exception
    assert errors_read(at) == [
        "The data root contains a NUL character; type the folder's name again."
    ]


def test_a_folder_inside_the_allowed_one_lists_only_itself_by_its_short_name(allowed):
    (allowed / "empty" / "notes.txt").write_text("x")
    at = open_app(str(allowed / "empty"))
    message = errors_read(at)[0]
    assert message.startswith("allowed/empty has neither datacombined.xlsx")
    assert "it holds: notes.txt." in message and str(allowed) not in message


def test_pages_show_paths_below_the_allowed_folder_never_server_paths(
    small_demo, bundles_dir, monkeypatch
):
    """Row 17: the manifest's path column, the data-root caption and the bundles help."""
    from tests.test_output_safety import download_text, keep_media_storages, markdown_sources

    root, truth = small_demo
    monkeypatch.setenv("BCP_ALLOWED_ROOTS", str(root.parent))
    kept = keep_media_storages(monkeypatch)
    at = open_app(root)
    shown_root = f"{root.parent.name}/{root.name}"
    assert any(shown_root in c.value for c in at.caption)
    manifest = download_text(at, kept, "Download manifest (CSV)")
    paths = [row["path"] for row in csv.DictReader(io.StringIO(manifest))]
    counts = truth["counts"]
    assert len(paths) == counts["cancer_images_found"] + counts["non_cancer_images_found"]
    assert all(p.startswith(shown_root + "/") for p in paths)
    server_paths = (str(root.parent), str(bundles_dir), str(Path.home()))
    assert not any(s in manifest for s in server_paths)
    assert not any(s in m for m in markdown_sources(at) for s in server_paths)
    assert "Bundles found in the server's bundles folder" in at.sidebar.selectbox(key="bundle").help


def test_the_sidebar_starts_with_the_data_root_by_name(small_demo, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import APP

    root, truth = small_demo
    monkeypatch.delenv("BCP_ALLOWED_ROOTS")  # the default: the configured data root only
    monkeypatch.setenv("BCP_DATA_ROOT", str(root))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception and not at.error
    assert at.sidebar.text_input(key="data_root").value == root.name
    assert metric(at, "Cancer rows") == str(truth["counts"]["cancer_rows"])


def test_backbone_weights_are_chosen_from_the_weights_folder_not_typed(
    small_demo, fresh_jobs, tmp_path, monkeypatch
):
    """Row 10: a free path box let anyone probe which server files exist."""
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "resnet50_notop.h5").write_text("x")
    (weights / "readme.txt").write_text("x")
    monkeypatch.setenv("BCP_WEIGHTS_DIR", str(weights))
    root, _ = small_demo
    at = open_app(root, "pages/training.py")
    assert not [t for t in at.text_input if t.label == "Backbone weights"]
    at.selectbox(key="tr_model").set_value("resnet50").run()
    choice = at.selectbox(key="tr_weights")
    assert choice.options == ["default", "none", "imagenet", "resnet50_notop.h5"]


@pytest.mark.parametrize(
    ("form", "env", "message"),
    [
        (
            {"tr_h": 4096, "tr_w": 4096, "tr_batch": 512},
            {},
            r"^Training seed_cnn at 4096 x 4096 with batch size 512 needs about [\d,]+ GB of "
            r"memory, more than the [\d.,]+ GB this server allows for training",
        ),
        ({}, {"BCP_MAX_BUNDLES": "1"}, r"^The bundles folder already holds 1 bundles, the most"),
    ],
)
def test_training_over_the_memory_budget_or_the_bundle_quota_is_refused_before_it_starts(
    small_demo, fresh_jobs, monkeypatch, tmp_path, form, env, message
):
    """Rows 7 and 9: 4096 x 4096 at batch 512 was accepted; the disk could fill with bundles."""
    import re

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "bundles" / "old").mkdir(parents=True)
    (tmp_path / "bundles" / "old" / META_FILE).write_text("{}")  # counted, not read
    root, _ = small_demo
    at = open_app(root, "pages/training.py")
    fill_tiny_training_form(at)
    for key, value in form.items():
        at.number_input(key=key).set_value(value)
    at.button(key="tr_start").click().run()
    assert re.match(message, errors_read(at)[0]), errors_read(at)
    assert fresh_jobs.current is None
