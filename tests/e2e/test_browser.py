"""The dashboard in a real headless Chromium: what a user sees on each page."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import ARTIFACTS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def metric_value(page, label: str) -> str:
    """The value of the metric labelled exactly ``label`` (a substring would also find, say,
    "Non-Cancer rows" for "Cancer rows": Playwright's text match ignores case)."""
    exact = page.locator(
        '[data-testid="stMetricLabel"]', has_text=re.compile(rf"^{re.escape(label)}$")
    )
    card = page.locator('[data-testid="stMetric"]').filter(has=exact).first
    return card.locator('[data-testid="stMetricValue"]').inner_text().strip()


def test_data_matching_and_class_balance_pages(app_url, page, small_demo):
    _, truth = small_demo
    counts = truth["counts"]
    page.goto(app_url)
    page.get_by_role("heading", name="Data matching").wait_for()
    page.get_by_text("Unmatched rows").first.wait_for()
    assert metric_value(page, "Keys matched") == str(counts["cancer_key_matched"])
    assert metric_value(page, "Cancer rows") == str(counts["cancer_rows"])
    assert metric_value(page, "Validation rows") == str(counts["validation_rows"])
    page.locator(".js-plotly-plot").first.wait_for()
    page.screenshot(path=ARTIFACTS / "page1_data_matching.png", full_page=True)

    page.get_by_role("link", name="Class balance").click()
    page.get_by_role("heading", name="Class balance").wait_for()
    page.get_by_text("Patient-grouped split").wait_for()
    assert metric_value(page, "Cancer images") == str(counts["cancer_images_found"])
    accuracy = metric_value(page, "Accuracy of always 'no cancer'")
    assert re.fullmatch(r"\d+\.\d%", accuracy)
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 6")
    page.screenshot(path=ARTIFACTS / "page2_class_balance.png", full_page=True)


def test_a_wrong_data_root_typed_in_the_sidebar_shows_a_sentence(app_url, page):
    page.goto(app_url)
    page.get_by_role("heading", name="Data matching").wait_for()
    box = page.get_by_label("Data root", exact=True)
    box.fill("demo/no-such-folder")  # below the allowed folder: named as typed, not listed
    box.press("Enter")
    alert = page.locator('[data-testid="stAlert"]', has_text="Data root not found")
    alert.wait_for()
    assert "Choose the folder" in alert.inner_text()
    assert "demo/no-such-folder" in alert.inner_text()
    page.screenshot(path=ARTIFACTS / "page1_bad_root.png", full_page=True)
    box.fill("/etc")  # outside the allowed folder: refused, nothing listed
    box.press("Enter")
    alert = page.locator('[data-testid="stAlert"]', has_text="not an allowed data root")
    alert.wait_for()
    assert "passwd" not in alert.inner_text()


def test_a_text_file_dropped_on_prediction_gets_a_sentence_not_a_mime_type(app_url, page, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("reading list, not a mammogram")
    page.goto(app_url + "/predict")
    page.get_by_role("heading", name="Prediction").wait_for()
    page.locator('input[type="file"]').set_input_files(str(notes))
    page.get_by_text("Cannot read notes.txt as an image: it is a text file").wait_for()
    assert "text/plain" not in page.inner_text("body")
    assert "files are not allowed" not in page.inner_text("body")
