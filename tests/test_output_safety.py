"""Output safety: file names and workbook or header strings stay data in CSVs, charts and text.

Threat rows of the security issue: 11 (spreadsheet formulas in CSV downloads), 12 (HTML in
Plotly labels), 13 (markdown in Streamlit messages). The page-level tests are in
``test_pages.py`` and ``test_predict_page.py``; they use the helpers at the bottom of this file.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re

import numpy as np
import pandas as pd
import pytest

from bcp_core.output_safety import (
    FORMULA_START,
    neutralise_cell,
    neutralised_df,
    plain_label,
    plain_markdown,
)

THREAT_CELLS = ['=HYPERLINK("http://x","y")', "@SUM(1+1)", "+cmd|' /C calc'!A0.png", "-2+3+cmd"]
LINK = '<a href="http://x">v</a>'
BEACON = "![b](http://host/beacon.png).png"


# --- Row 11: CSV injection ------------------------------------------------------------------


@pytest.mark.parametrize("lead", FORMULA_START)
def test_every_formula_lead_character_gets_a_quote(lead):
    assert neutralise_cell(f"{lead}cmd|' /C calc'!A0") == f"'{lead}cmd|' /C calc'!A0"


@pytest.mark.parametrize("cell", THREAT_CELLS)
def test_the_reported_formulas_are_quoted(cell):
    assert neutralise_cell(cell) == "'" + cell


@pytest.mark.parametrize(
    "value", [-1, -2.5, 0, np.int64(-3), np.float64(-0.25), True, None, float("nan"), pd.NA]
)
def test_numbers_and_missing_values_stay_as_they_are(value):
    assert neutralise_cell(value) is value


@pytest.mark.parametrize("text", ["-1.5", "+2", "-3e-4", "-.5", "FILE0001", "a=b", "", "'=x"])
def test_plain_numbers_written_as_text_and_ordinary_text_stay(text):
    assert neutralise_cell(text) == text


def test_a_number_followed_by_more_is_not_a_number():
    assert neutralise_cell("-1+cmd") == "'-1+cmd"
    assert neutralise_cell("-1\n=cmd") == "'-1\n=cmd"


def test_neutralised_df_quotes_text_cells_and_names_and_keeps_numbers():
    df = pd.DataFrame(
        {
            "file": ["+cmd|' /C calc'!A0.png", "ok.png"],
            "probability": [-0.5, 0.25],
            "label": [1, 0],
            "=name": pd.Categorical(["@SUM(1+1)", "CC"]),
        }
    )
    out = neutralised_df(df)
    assert list(out.columns) == ["file", "probability", "label", "'=name"]
    assert out["file"].tolist() == ["'+cmd|' /C calc'!A0.png", "ok.png"]
    assert out["'=name"].tolist() == ["'@SUM(1+1)", "CC"]
    assert out["probability"].dtype == df["probability"].dtype
    assert out["label"].dtype == df["label"].dtype
    assert df["file"].iloc[0].startswith("+"), "the input is not modified"
    rows = list(csv.reader(io.StringIO(out.to_csv(index=False))))
    assert rows[1] == ["'+cmd|' /C calc'!A0.png", "-0.5", "1", "'@SUM(1+1)"]
    assert_no_formula_cells(out.to_csv(index=False))


# --- Row 12: HTML in Plotly labels ----------------------------------------------------------


def test_plain_label_escapes_markup_and_reads_back_as_written():
    assert plain_label(LINK) == '&lt;a href="http://x"&gt;v&lt;/a&gt;'
    for text in (LINK, "&lt;b&gt; already escaped", "CC", "Sağ <br> & sol"):
        assert "<" not in plain_label(text) and ">" not in plain_label(text)
        assert html.unescape(plain_label(text)) == text
    assert plain_label("MLO") == "MLO"
    assert plain_label(3) == "3" and plain_label(None) == ""


def test_class_count_figure_shows_a_link_label_as_text():
    from bcp_core.plots import plot_class_counts

    counts = pd.DataFrame(
        {"view": [LINK, "CC"], "class": ["cancer", "non-cancer"], "images": [1, 2], "patients": 1}
    )
    fig = plot_class_counts(counts, "view", "images", "Per view")
    assert_no_html_in_figure(fig.to_json())
    labels = [x for trace in fig.data for x in trace.x]
    assert html.escape(LINK, quote=False) in labels


# --- Row 13: markdown in messages -----------------------------------------------------------

READABLE = [
    BEACON,
    "[a]: http://host/x",
    "<img src=http://host/x.png>",
    "1) scan",
    "# heading",
    "- item",
    "> quote",
    "*em* _u_ ~~s~~ `code`",
    "|a|b|\n|-|-|",
    "$x^2$",
    "&lt; &amp;",
    "C:\\Users\\Aylın\\scan.dcm",
    "x\n===",
    "www.host.com http://host.com",
    "Another run is in progress (epoch 1 of 7, model seed_cnn).",
]


@pytest.mark.parametrize("text", READABLE)
def test_plain_markdown_renders_as_the_text_itself(text):
    rendered = render_markdown(plain_markdown(text))
    assert rendered == f"<p>{html.escape(' '.join(text.splitlines()), quote=False)}</p>"


def test_plain_markdown_leaves_ordinary_sentences_as_they_are():
    text = "no sheet 'Cancer'; its sheets are: 'Kanser'"
    assert plain_markdown(text) == text
    assert "\\" not in plain_markdown("Mamografi Verilerı 2024 scan 7")


def test_plain_markdown_fetches_nothing_from_a_beacon_name():
    source = plain_markdown(BEACON)
    assert not markdown_makes_a_request(source)
    assert markdown_makes_a_request(BEACON), "the check itself sees the image"


# --- Helpers for the page tests -------------------------------------------------------------


def assert_no_formula_cells(text: str) -> None:
    """No cell of the CSV ``text`` would run as a formula in a spreadsheet."""
    for row in csv.reader(io.StringIO(text)):
        for cell in row:
            bad = cell.startswith(FORMULA_START) and neutralise_cell(cell) != cell
            assert not bad, f"formula cell in the CSV: {cell!r}"


def json_strings(node) -> list[str]:
    """Every string in a parsed JSON value."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in json_strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in json_strings(v)]
    return []


def assert_no_html_in_figure(spec: str) -> None:
    """No text of the figure's JSON holds a tag Plotly would render (``<a``, ``<br>`` ...)."""
    for text in json_strings(json.loads(spec)):
        assert not re.search(r"<\s*(a|img|span|b|i|sup|sub|br)\b", text, re.I), text


def render_markdown(source: str) -> str:
    """``source`` rendered by a CommonMark parser with GFM tables and strikethrough."""
    markdown_it = pytest.importorskip("markdown_it")
    parser = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"])
    return parser.render(source).strip()


def markdown_makes_a_request(source: str) -> bool:
    """Whether rendering ``source`` yields an image, a link or raw HTML, or could (GFM)."""
    rendered = render_markdown(source)
    unescaped_link = re.search(r"(?<!\\)\]\(", source)
    return bool(re.search(r"<(img|a)\b", rendered) or unescaped_link)


def keep_media_storages(monkeypatch) -> list:
    """Keep each AppTest run's in-memory media storage, to read what download buttons serve.

    AppTest builds a fresh :class:`MemoryMediaFileStorage` per run and drops it afterwards; this
    real storage, kept in a list, lets a test read the exact bytes a download button offers.
    """
    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    kept: list[MemoryMediaFileStorage] = []

    class KeptStorage(MemoryMediaFileStorage):
        def __init__(self, media_endpoint: str) -> None:
            super().__init__(media_endpoint)
            kept.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", KeptStorage)
    return kept


def download_text(at, kept: list, label: str) -> str:
    """The text the download button ``label`` of the last run serves."""
    button = next(b for b in at.get("download_button") if b.proto.label == label)
    return kept[-1].get_file(button.proto.url.rsplit("/", 1)[-1]).content.decode("utf-8")


def markdown_sources(at) -> list[str]:
    """Every markdown string the page renders.

    Messages, headings and captions, image captions, button and metric labels.
    """
    elements = [
        *at.markdown,
        *at.caption,
        *at.title,
        *at.header,
        *at.subheader,
        *at.error,
        *at.warning,
        *at.info,
        *at.success,
    ]
    sources = [e.value for e in elements]
    sources += [caption for image in at.image for caption in image.captions]
    sources += [b.label for b in at.button] + [m.label for m in at.metric]
    return sources
