"""Shared fixtures: tiny workbooks, JPEGs and demo datasets made on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from openpyxl import Workbook
from PIL import Image

from bcp_core.config import DemoConfig
from bcp_core.demo import write_demo_dataset

#: A data-root name with the Turkish dotless i and a space, as on the user's machine.
NON_ASCII_ROOT = "Mamografi Verilerı"


def write_xlsx(path: Path, sheets: dict[str, list[list[object]]]) -> Path:
    """Write a workbook whose sheets are lists of rows (the first row is the header)."""
    wb = Workbook()
    wb.remove(wb.active)
    for title, rows in sheets.items():
        ws = wb.create_sheet(title)
        for row in rows:
            ws.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path


def write_jpeg(
    path: Path, size: tuple[int, int] = (40, 32), value: int = 128, mode: str = "RGB"
) -> Path:
    """Write a small JPEG of (height, width) ``size`` with a gradient so it is not constant."""
    h, w = size
    arr = (np.linspace(0, 1, h * w).reshape(h, w) * value).astype(np.uint8)
    img = Image.fromarray(arr, mode="L")
    if mode != "L":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG")
    return path


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> tuple[Path, dict]:
    """The small demo dataset with tiny images, under a non-ASCII folder name."""
    root = tmp_path_factory.mktemp("demo") / NON_ASCII_ROOT
    truth = write_demo_dataset(root, DemoConfig(scale="small", seed=7, image_height=96), workers=1)
    return root, truth
