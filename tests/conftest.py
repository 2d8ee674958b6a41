"""Shared fixtures: tiny workbooks, JPEGs and demo datasets made on the fly, the command lines
and dashboard forms of a tiny training run, the server's training slot and a Ray cluster."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from openpyxl import Workbook, load_workbook
from PIL import Image

from bcp_core.config import DemoConfig
from bcp_demo.writer import write_demo_dataset

#: A data-root name with the Turkish dotless i and a space, as on the user's machine.
NON_ASCII_ROOT = "Mamografi Verilerı"
#: The repository's root folder (the working folder of the tests' command lines).
REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "streamlit_app.py")


def typed_root(data_root) -> str:
    """``data_root`` as a user types it in the sidebar: its allowed folder's name and the part
    below it (the dashboard takes no absolute path); a folder outside them stays as it is."""
    from bcp_core import settings
    from bcp_core.data.roots import allowed_roots

    try:
        path = Path(data_root).resolve()
    except (ValueError, OSError):  # a NUL character, say: typed as it is
        return str(data_root)
    for root in allowed_roots(settings.allowed_roots()):
        if path == root.path or path.is_relative_to(root.path):
            return str(Path(root.label, path.relative_to(root.path)))
    return str(data_root)


def open_app(data_root, page: str | None = None, user: dict | None = None, **state):
    """Run the dashboard on ``data_root`` with Streamlit's AppTest, optionally on ``page``,
    as ``user`` (``st.user``) and with more session ``state`` set before the first run.

    Sidebar settings are set through session state: with st.navigation, AppTest drops the
    sidebar's elements from its tree after the first run (the browser tests cover the widgets).
    """
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["data_root"] = typed_root(data_root)
    for key, value in state.items():
        at.session_state[key] = value
    if user is not None:
        at.user = user
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


@pytest.fixture(autouse=True)
def _allowed_test_roots(monkeypatch, tmp_path_factory):
    """Let the dashboard read the tests' data roots, which all lie under pytest's temporary folder
    (by default it reads only under $BCP_DATA_ROOT); tests of the rule set their own."""
    monkeypatch.setenv("BCP_ALLOWED_ROOTS", str(tmp_path_factory.getbasetemp()))


@pytest.fixture(autouse=True)
def _audit_log_in_tmp(monkeypatch, tmp_path):
    """Every test's audit log is its own (never the repository's audit/ folder)."""
    monkeypatch.setenv("BCP_AUDIT_LOG", str(tmp_path / "audit" / "audit.jsonl"))
    monkeypatch.delenv("BCP_MODE", raising=False)
    monkeypatch.setenv("BCP_ROLES_FILE", str(tmp_path / "roles.toml"))


@pytest.fixture(autouse=True)
def _image_cache_in_tmp(monkeypatch, tmp_path):
    """Training runs of a test keep prepared images in its own folder (never the repository's
    image_cache/), so no test reads another's inputs."""
    monkeypatch.setenv("BCP_IMAGE_CACHE", str(tmp_path / "image_cache"))
    monkeypatch.delenv("BCP_IMAGE_CACHE_GB", raising=False)


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


def write_data_root(
    root: Path,
    cancer: list[list[object]],
    non_cancer: list[list[object]],
    validation: list[list[object]],
    files: list[str],
    cancer_dir: str = "Cancer",
    non_cancer_dir: str = "Non-Cancer",
) -> Path:
    """A data root: the combined workbook's two sheets and the validation workbook (each a list
    of rows, the header first), the two class folders and a JPEG for each of ``files``
    ("C/..." in the cancer folder, "N/..." in the non-cancer one)."""
    write_xlsx(root / "datacombined.xlsx", {"Cancer": cancer, "Non-Cancer": non_cancer})
    write_xlsx(root / "data_validation_x.xlsx", {"Sheet1": validation})
    for folder in (cancer_dir, non_cancer_dir):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for rel in files:
        cls, _, rest = rel.partition("/")
        write_jpeg(root / (cancer_dir if cls == "C" else non_cancer_dir) / rest)
    return root


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


def edit_workbook(path: Path, edit: Callable[[Workbook], None]) -> Path:
    """The workbook at ``path`` opened with openpyxl, changed by ``edit`` and saved."""
    book = load_workbook(path)
    edit(book)
    book.save(path)
    return path


def demo_copy(small_demo, dest: Path, edit: Callable[[Workbook], None] | None = None) -> Path:
    """A copy of the small demo dataset at ``dest``; ``edit`` changes its combined workbook
    (:func:`edit_workbook`)."""
    from bcp_core.config import COMBINED_WORKBOOK

    shutil.copytree(small_demo[0], dest)
    if edit is not None:
        edit_workbook(dest / COMBINED_WORKBOOK, edit)
    return dest


def cli_command(*argv: str) -> list[str]:
    """The command that runs ``python -m bcp_core`` with ``argv`` in a process of its own."""
    return [sys.executable, "-m", "bcp_core", *argv]


def tiny_train_argv(data_root, out, *more: str) -> list[str]:
    """``train``'s arguments for a tiny run (the seed CNN at 64 x 48) from ``data_root`` into
    ``out``, then ``more``."""
    return [
        "train", "--data-root", str(data_root), "--out", str(out),
        "--model", "seed_cnn", "--image-size", "64", "48", *more,
    ]  # fmt: skip


def blob_image(positive: bool, rng: np.random.Generator, size=(64, 52)) -> np.ndarray:
    """A breast-like half disc on black; positives carry a bright round spot."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = (((xx / (0.8 * w)) ** 2 + ((yy - h / 2) / (0.45 * h)) ** 2) < 1) * 110.0
    img += rng.normal(0, 12, size) * (img > 0)
    if positive:
        cy, cx = rng.integers(h // 3, 2 * h // 3), rng.integers(4, w // 2)
        img += ((yy - cy) ** 2 + (xx - cx) ** 2 < 16) * 120.0
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory):
    """40 tiny JPEGs of 20 patients (8 with cancer) as a manifest DataFrame."""
    import pandas as pd

    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    rows = []
    for p in range(20):
        for v, view in enumerate(("CC", "MLO")):
            label = int(p < 8)
            path = root / f"P{p:02d}_{view}.jpg"
            Image.fromarray(blob_image(bool(label), rng)).save(path, format="JPEG", quality=95)
            rows.append(
                {
                    "path": str(path),
                    "relpath": path.name,
                    "label": label,
                    "patient_id": f"P{p:02d}",
                    "view": view,
                    "laterality": "L",
                    "key": path.stem,
                    "sheet": "test",
                    "row": 2 + 2 * p + v,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def demo_bundle(small_demo, tmp_path_factory):
    """A tiny bundle (seed_cnn, 64 x 48, 2 epochs) trained on the small demo dataset."""
    from bcp_core.config import TrainConfig
    from bcp_core.data.datasource import read_data_root
    from bcp_core.model.training import train_model

    root, _ = small_demo
    out = tmp_path_factory.mktemp("bundles") / "tiny-demo"
    cfg = TrainConfig(model="seed_cnn", image_size=(64, 48), epochs=2, batch_size=16, seed=3)
    train_model(read_data_root(root).manifest, cfg, out)
    return out


def viewable_copy(bundle: Path, dest: Path) -> Path:
    """A copy of the tiny demo bundle that viewers may use: two epochs at 64 x 48 rank the
    validation images no better than chance, so, as a deployment would, an analyst's approval
    is recorded in it (tests of that gate use an unapproved copy)."""
    import shutil

    from bcp_core.model.bundle import approve_for_viewers

    shutil.copytree(bundle, dest)
    approve_for_viewers(dest, "test fixture", "a two-epoch model for tests of the dashboard")
    return dest


@pytest.fixture
def bundles_dir(demo_bundle, tmp_path, monkeypatch):
    """A bundles folder of the test's own holding a copy of the tiny demo bundle (one viewers
    may use: :func:`viewable_copy`)."""
    folder = tmp_path / "bundles"
    viewable_copy(demo_bundle, folder / "demo")
    monkeypatch.setenv("BCP_BUNDLES_DIR", str(folder))
    return folder


def fill_tiny_training_form(at, **extra) -> None:
    """The training page's form set for a tiny run (the seed CNN at 64 x 48, 2 epochs of 8);
    ``extra``: more select boxes by key."""
    at.selectbox(key="tr_model").set_value("seed_cnn").run()  # loads the model's recipe
    at.number_input(key="tr_h").set_value(64)
    at.number_input(key="tr_w").set_value(48)
    at.number_input(key="tr_epochs").set_value(2)
    at.number_input(key="tr_batch").set_value(8)
    for key, value in extra.items():
        at.selectbox(key=key).set_value(value)


def watch_job(job, at=None, timeout: float = 300) -> None:
    """Wait until the training ``job`` ends (at most ``timeout`` seconds); with ``at``, rerun
    that page every second as its polling would, failing on any exception, and once more at
    the end."""
    deadline = time.monotonic() + timeout
    while job.running and time.monotonic() < deadline:
        time.sleep(1)
        if at is not None:
            at.run()
            assert not at.exception
    if at is not None:
        at.run()


@pytest.fixture
def idle_jobs():
    """The server's training slot, empty for the test; a run the test started is stopped after."""
    from dashboard.jobs import registry

    registry().current = None
    yield registry()
    job = registry().current
    if job is not None and job.thread is not None:
        job.stop_event.set()
        job.thread.join(timeout=120)
    registry().current = None


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray cluster of two CPUs on this machine for the tests of one module; without the scale
    extra (requirements-scale.txt: Ray Data and Ray Train) the test skips."""
    missing = "Ray is not installed (pip install -r requirements-scale.txt)"
    ray = pytest.importorskip("ray", reason=missing)
    for part in ("ray.data", "ray.train"):
        pytest.importorskip(part, reason=missing)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def on_padded_canvas(film: np.ndarray, pad: int, film_background: int = 12) -> np.ndarray:
    """``film`` centred on a canvas ``pad`` columns wider on each side, as digitised screen
    films are often distributed (the MIAS database's): the film's own background a dim,
    slightly noisy grey, the padding pure black."""
    rng = np.random.default_rng(0)
    dim = film_background + rng.integers(0, 3, film.shape)
    inside = np.where(film > film_background, film, dim).astype(np.uint8)
    return np.pad(inside, ((0, 0), (pad, pad)))
