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
    set_number(page, "Image height", "64")
    set_number(page, "Image width", "48")
    set_number(page, "Epochs", "2")
    set_number(page, "Batch size", "8")
    set_number(page, "Seed", "3")  # the demo bundle's seed: the same validation patients
    page.get_by_role("button", name="Start training").click()
    page.get_by_text(re.compile(r"best epoch \d of 2")).wait_for(timeout=240_000)
    page.locator(".js-plotly-plot").first.wait_for()
    page.screenshot(path=ARTIFACTS / "journey_3_training.png", full_page=True)

    # 4. The hand-off: use the new model, go on to its threshold; apply a rule, save it.
    page.get_by_role("button", name="Use this model").click()
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
