"""The whole journey in a real browser: match -> balance -> train -> threshold -> predict (with
a reader's mark) -> compare the new run with the demo bundle."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import ARTIFACTS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def goto_page(page, name: str, heading: str) -> None:
    page.get_by_role("link", name=name).click()
    page.get_by_role("heading", name=heading).wait_for()


def choose(page, label: str, option: str) -> None:
    """Pick an option of a Streamlit selectbox."""
    page.get_by_role("combobox", name=label, exact=True).click()
    page.get_by_role("option", name=re.compile(option)).first.click()


def set_number(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Tab")


def test_whole_journey(app_url, page, small_demo):
    root, truth = small_demo
    page.goto(app_url)

    # 1. Data matching: the matched count a user came for.
    page.get_by_role("heading", name="Data matching").wait_for()
    page.get_by_text("Unmatched rows").first.wait_for()
    page.get_by_text(str(truth["counts"]["cancer_key_matched"]), exact=True).first.wait_for()
    page.screenshot(path=ARTIFACTS / "journey_1_matching.png", full_page=True)

    # 2. Class balance: the accuracy trap is spelled out.
    goto_page(page, "Class balance", "Class balance")
    page.get_by_text(re.compile(r"finds 0 of \d+")).first.wait_for()
    page.screenshot(path=ARTIFACTS / "journey_2_balance.png", full_page=True)

    # 3. Training: a tiny run, watched to the end.
    goto_page(page, "Training", "Training")
    choose(page, "Model", "notebook's 3-layer CNN")
    page.get_by_text("Starts from seed_cnn's recipe").wait_for()  # the form refilled
    set_number(page, "Image height", "64")
    set_number(page, "Image width", "48")
    set_number(page, "Epochs", "2")
    set_number(page, "Batch size", "8")
    set_number(page, "Seed", "3")  # the demo bundle's seed: the same validation patients
    page.get_by_role("button", name="Start training").click()
    page.get_by_text(re.compile(r"best epoch \d of 2")).wait_for(timeout=240_000)
    page.locator(".js-plotly-plot").first.wait_for()
    run = page.get_by_role("heading", name=re.compile(r"^Run \d{8}-\d{6}-seed_cnn")).first
    name = run.inner_text().removeprefix("Run ").strip()
    # The run's end reruns the whole page once: the table of runs then lists the new bundle
    # (in the grid's accessible cells) and the hand-off stands below the run.
    runs_table = page.locator('[data-testid="stDataFrame"]').last
    runs_table.locator('[role="gridcell"]', has_text=name).wait_for(state="attached")
    # While a rerun draws the page again, the last run's elements stand beside the new ones,
    # marked stale until it ends: the button is looked for among the current ones only.
    current = page.locator('[data-testid="stElementContainer"][data-stale="false"]')
    use_it = current.get_by_role("button", name="Use this model")
    use_it.wait_for()
    page.screenshot(path=ARTIFACTS / "journey_3_training.png", full_page=True)

    # 4. The hand-off: use the new model, go on to its threshold; apply a rule, save it.
    use_it.click()
    page.get_by_role("link", name="Tune its threshold").click()
    page.get_by_role("heading", name="Threshold explorer").wait_for()
    page.get_by_text(re.compile(r"-seed_cnn \(seed_cnn\): saved threshold")).wait_for()
    page.get_by_text("Recommended thresholds").wait_for()
    page.get_by_role("button", name="Apply", exact=True).nth(3).click()  # sensitivity target
    page.wait_for_timeout(2000)  # the click reruns the page
    page.get_by_role("button", name=re.compile(r"Save threshold")).click()
    page.get_by_text(re.compile(r"Saved: .* now decides at .* \(Sensitivity target\)")).wait_for()
    page.screenshot(path=ARTIFACTS / "journey_4_threshold.png", full_page=True)

    # 5. Prediction: upload a demo image, see a probability, a decision and a heatmap.
    goto_page(page, "Prediction", "Prediction")
    page.get_by_text(re.compile(r"chosen on the threshold page|saved with the bundle")).wait_for()
    image = next(i for i in truth["images"] if i["on_disk"] and i["label"] == 1)
    page.locator('input[type="file"]').set_input_files(str(root / image["relpath"]))
    page.get_by_text(re.compile(r"^Grad-CAM: where the model looked")).wait_for(timeout=120_000)
    decision = page.get_by_text(re.compile(r"at threshold \d\.\d{4} \(probability \d\.\d{4}\)"))
    assert decision.count() >= 1
    # The page has finished (the reader's form comes last) and the film and its heatmap have
    # loaded, so the screenshot shows them even on a busy machine.
    page.get_by_role("button", name="Record my reading").wait_for()
    page.wait_for_function(
        """() => {
            const shown = [...document.querySelectorAll('[data-testid="stImage"] img')];
            return shown.length >= 2 && shown.every((img) => img.complete && img.naturalWidth > 0);
        }"""
    )
    page.screenshot(path=ARTIFACTS / "journey_5_prediction.png", full_page=True)

    # 5b. The reader marks the prediction; the mark is recorded beside the bundle.
    page.get_by_text("disagree: it is not cancer").click()
    page.get_by_label("Note (optional)").fill("dense breast, benign-looking")
    page.get_by_role("button", name="Record my reading").click()
    page.get_by_text("Recorded: disagree: it is not cancer.").wait_for()

    # 6. Compare: the new run against the demo bundle, on the validation patients they share.
    goto_page(page, "Compare", "Compare runs")
    page.get_by_text(re.compile(r"Compared on \d+ validation images of \d+ patients")).wait_for(
        timeout=120_000
    )
    page.locator(".js-plotly-plot").first.wait_for()
    page.screenshot(path=ARTIFACTS / "journey_6_compare.png", full_page=True)


def test_the_clinicians_demo(demo_app, page):
    """Demo mode: it opens on Prediction; an example film gets a probability, a decision and a
    heatmap; the threshold explorer is there to look at, not to change; Training is refused."""
    url, _ = demo_app
    page.goto(url)
    page.get_by_role("heading", name="Prediction").wait_for()
    assert page.get_by_text("Research tool, not a medical device").count() >= 1
    page.get_by_role("button", name=re.compile(r"^Example: cancer")).click()
    page.get_by_text(re.compile(r"^Grad-CAM: where the model looked")).wait_for(timeout=120_000)
    assert page.get_by_text(re.compile(r"at threshold \d\.\d{4} \(probability")).count() >= 1
    assert page.get_by_text("Record my reading").count() == 0  # no marks in the demo
    page.locator(".js-plotly-plot").first.wait_for()  # the probability gauge
    page.wait_for_timeout(1000)
    page.screenshot(path=ARTIFACTS / "journey_demo_1_prediction.png", full_page=True)

    goto_page(page, "Threshold explorer", "Threshold explorer")
    page.get_by_text("Recommended thresholds").wait_for()
    assert page.get_by_role("button", name=re.compile(r"Save threshold")).is_disabled()
    page.screenshot(path=ARTIFACTS / "journey_demo_2_threshold.png", full_page=True)

    page.goto(url + "/training")
    page.get_by_text("Training needs the analyst role.").wait_for()
    assert page.get_by_role("button", name="Start training").count() == 0


def test_a_quick_batch_prediction_to_csv(app_url, page, small_demo, tmp_path):
    """The ad-hoc user: drop several films on Prediction, read the table, take the CSV."""
    root, truth = small_demo
    films = [root / i["relpath"] for i in truth["images"] if i["on_disk"]][:3]
    page.goto(app_url)
    page.get_by_role("heading", name="Data matching").wait_for()
    goto_page(page, "Prediction", "Prediction")
    page.locator('input[type="file"]').set_input_files([str(f) for f in films])
    page.get_by_text("Show the heatmap of").wait_for(timeout=120_000)
    page.locator(".js-plotly-plot").first.wait_for()
    page.wait_for_timeout(1000)
    page.screenshot(path=ARTIFACTS / "journey_batch_1_table.png", full_page=True)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download results (CSV)").click()
    path = tmp_path / "predictions.csv"
    download.value.save_as(path)
    import pandas as pd

    table = pd.read_csv(path, keep_default_na=False)
    assert list(table["file"]) == [f.name for f in films]
    assert table["probability"].between(0, 1).all() and set(table["label"]) <= {0, 1}
    assert set(table["seen_in"]) <= {"training split", "validation split"}  # demo films
    assert (table["view"] != "").all()  # from the workbook: the names do not say
