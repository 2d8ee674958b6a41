"""Strings from the user's files made safe to hand to a spreadsheet, a chart or markdown.

File names, workbook cells and DICOM header values are data, never markup. Three places would
otherwise read them as markup:

- a spreadsheet opening a CSV download runs a cell that starts with ``=``, ``+``, ``-``, ``@``,
  a tab or a carriage return as a formula (OWASP "CSV injection"): :func:`neutralised_df`;
- Plotly renders a subset of HTML (``<a href>``, ``<br>``, ``<b>`` ...) in category labels,
  legends, titles and hover text: :func:`plain_label`;
- Streamlit renders markdown in messages, captions and labels, where ``![x](http://...)``
  makes the browser fetch a URL: :func:`plain_markdown`.
"""

from __future__ import annotations

import html
import numbers
import re

import pandas as pd

#: Leading characters that make a spreadsheet read a cell as a formula (OWASP).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: A plain number written as text ("-1.5", "+2e3"): a spreadsheet reads it as that number.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
#: Markdown and HTML punctuation escaped with a backslash. "(" is left alone: it only opens a
#: link target right after "]", which is escaped, and messages stay readable in their source.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\])!#+\-.|{}<>~$&])")
_URL_SCHEME = re.compile(r":(?=//)")  # "http://x" would become a link (GFM autolink literal)


def neutralise_cell(value: object) -> object:
    """``value`` as a spreadsheet cell that cannot be a formula.

    Text starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading
    single quote (shown by the spreadsheet as text); numbers, and text that is a plain number
    such as ``"-1.5"``, are returned unchanged.
    """
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def neutralised_df(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells and column names pass :func:`neutralise_cell`.

    Numeric and date columns keep their dtype; only columns that can hold text are rewritten.
    """
    out = df.copy()
    for column in out.columns:
        dtype = out[column].dtype
        if pd.api.types.is_object_dtype(dtype) or isinstance(
            dtype, (pd.StringDtype, pd.CategoricalDtype)
        ):
            out[column] = out[column].astype(object).map(neutralise_cell)
    out.columns = pd.Index([neutralise_cell(c) for c in out.columns])
    return out


def plain_label(text: object) -> str:
    """``text`` as a Plotly label, legend entry, title or hover text that shows it literally.

    ``<``, ``>`` and ``&`` become HTML entities, so ``<a href=...>`` is shown as text and never
    becomes a link. Numbers are written with ``str``.
    """
    if isinstance(text, numbers.Number) or text is None:
        return "" if text is None else str(text)
    return html.escape(str(text), quote=False)


def plain_markdown(text: object) -> str:
    """``text`` for a Streamlit markdown string (message, caption, label) that shows it literally.

    Markdown and HTML punctuation is backslash-escaped and line breaks become spaces, so a file
    name such as ``![b](http://host/x.png)`` is shown as written: no image is fetched, no link,
    heading, list, table, math or HTML is made. The rendered text reads exactly as ``text``.
    """
    flat = " ".join(str(text).splitlines())
    return _URL_SCHEME.sub(r"\\:", _MARKDOWN_SPECIAL.sub(r"\\\1", flat))
