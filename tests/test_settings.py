"""Server settings (``bcp_core.settings``) and where the dashboard listens by default."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib

import pytest

from bcp_core import settings
from bcp_core.errors import UserError
from bcp_core.imaging.cache import CacheSettings
from bcp_core.model.resources import TrainingLimits, machine_memory_bytes
from tests.conftest import REPO


def make_run_command(*variables: str) -> str:
    """The command ``make run`` would start (a dry run: nothing is built or started)."""
    out = subprocess.run(
        ["make", "--no-print-directory", "-n", "run", *variables],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return next(line for line in out.splitlines() if "streamlit run" in line)


def test_make_run_listens_on_this_machine_only_unless_told():
    """Threat row 1: ``make run`` served on 0.0.0.0, to anyone on the network."""
    assert "--server.address 127.0.0.1" in make_run_command()
    assert "--server.address 0.0.0.0" in make_run_command("ADDRESS=0.0.0.0")
    server = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())["server"]
    assert server["address"] == "127.0.0.1"


def test_the_readme_says_how_and_when_to_serve_to_a_network():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Serving to a network\n(.*?)(?=^## )", readme, re.M | re.S)
    assert section, "README needs a section 'Serving to a network'"
    text = " ".join(section.group(1).split())
    for needed in ("make run ADDRESS=0.0.0.0", "SECURITY.md", "sslCertFile", "sslKeyFile"):
        assert needed in text
    for needed in ("sign-in", "bcp_mode=demo", "local mode", "https", "reverse proxy"):
        assert needed in text.lower()


def test_defaults_without_any_setting(monkeypatch):
    for name in ("BCP_DATA_ROOT", "BCP_ALLOWED_ROOTS", "BCP_WEIGHTS_DIR", "BCP_MAX_BUNDLES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("BCP_TRAIN_MEMORY_GB", raising=False)
    assert settings.data_root() == REPO / "demo_data"
    assert settings.allowed_roots() == [REPO / "demo_data"]
    assert settings.weights_dir() == REPO / "weights"
    assert settings.max_bundles() == 50
    budget = settings.train_memory_budget_bytes()
    assert budget == int(0.6 * machine_memory_bytes())
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < machine_memory_bytes() <= physical


def test_settings_are_read_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BCP_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("BCP_ALLOWED_ROOTS", raising=False)
    assert settings.allowed_roots() == [tmp_path / "data"]
    folders = f"{tmp_path / 'a'}{os.pathsep}{os.pathsep}{tmp_path}/b "
    monkeypatch.setenv("BCP_ALLOWED_ROOTS", folders)
    assert settings.allowed_roots() == [tmp_path / "a", tmp_path / "b"]
    monkeypatch.setenv("BCP_WEIGHTS_DIR", str(tmp_path / "w"))
    assert settings.weights_dir() == tmp_path / "w"
    monkeypatch.setenv("BCP_TRAIN_MEMORY_GB", "1.5")
    assert settings.train_memory_budget_bytes() == int(1.5e9)
    monkeypatch.setenv("BCP_MAX_BUNDLES", "3")
    assert settings.max_bundles() == 3


def test_the_training_limits_are_read_together_for_the_entry_points(monkeypatch):
    for name in ("BCP_TRAIN_MEMORY_GB", "BCP_MAX_BUNDLES", "BCP_MAX_BUNDLES_GB"):
        monkeypatch.delenv(name, raising=False)
    assert settings.training_limits() == TrainingLimits()  # the defaults
    assert TrainingLimits() == TrainingLimits(int(0.6 * machine_memory_bytes()), 50, 20 * 10**9)
    monkeypatch.setenv("BCP_TRAIN_MEMORY_GB", "1.5")
    monkeypatch.setenv("BCP_MAX_BUNDLES", "3")
    monkeypatch.setenv("BCP_MAX_BUNDLES_GB", "7")
    assert settings.training_limits() == TrainingLimits(int(1.5e9), 3, 7 * 10**9)


def test_the_image_cache_is_on_by_default_moves_with_its_setting_and_turns_off(
    monkeypatch, tmp_path
):
    for name in ("BCP_IMAGE_CACHE", "BCP_IMAGE_CACHE_GB"):
        monkeypatch.delenv(name, raising=False)
    assert settings.image_cache() == CacheSettings(REPO / "image_cache", 10 * 10**9)
    monkeypatch.setenv("BCP_IMAGE_CACHE", str(tmp_path / "prepared"))
    monkeypatch.setenv("BCP_IMAGE_CACHE_GB", "3")
    assert settings.image_cache() == CacheSettings(tmp_path / "prepared", 3 * 10**9)
    for off in ("off", "OFF", " none "):
        monkeypatch.setenv("BCP_IMAGE_CACHE", off)
        assert settings.image_cache() is None


#: Unusable values of each numeric setting, and the sentence that names it.
UNUSABLE = {
    "BCP_TRAIN_MEMORY_GB": (["lots", "-1", "0", "nan", "inf"], "must be a positive number of GB"),
    "BCP_MAX_BUNDLES": (["0", "2.5", "-3", "many"], "must be a whole number of at least 1"),
    "BCP_IMAGE_CACHE_GB": (["0", "1.5", "big"], "must be a whole number of at least 1"),
}


@pytest.mark.parametrize(
    ("name", "value"), [(name, v) for name, (values, _) in UNUSABLE.items() for v in values]
)
def test_unusable_settings_end_in_a_sentence_naming_them(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    read = {
        "BCP_TRAIN_MEMORY_GB": settings.train_memory_budget_bytes,
        "BCP_MAX_BUNDLES": settings.max_bundles,
        "BCP_IMAGE_CACHE_GB": settings.image_cache,
    }[name]
    with pytest.raises(UserError, match=re.escape(f"{name} {UNUSABLE[name][1]}, got {value!r}.")):
        read()
