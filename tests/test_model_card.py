"""The model card: written with every bundle, rewritten with every threshold save, shown on
the threshold page (also for bundles written before cards existed, without writing), and every
string from the user's data escaped for markdown."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from bcp_core.config import TrainConfig
from bcp_core.model.bundle import bundle_card, load_bundle, update_threshold
from bcp_core.model.card import CARD_FILE, NOTICE, render_card
from bcp_core.model.files import META_FILE
from bcp_core.model.meta import BundleMeta, ThresholdChoice
from tests.conftest import open_app

FORMAT1 = Path(__file__).parent / "fixtures" / "bundle_format1" / "bundle"


def card_file(folder: Path) -> str:
    return (folder / CARD_FILE).read_text(encoding="utf-8")


@pytest.fixture
def bundle_copy(demo_bundle, tmp_path) -> Path:
    copy = tmp_path / "bundles" / "run-1"
    shutil.copytree(demo_bundle, copy)
    return copy


def test_a_trained_bundle_has_a_card_with_counts_threshold_intervals_and_notice(demo_bundle):
    text = card_file(demo_bundle)
    bundle = load_bundle(demo_bundle, with_model=False)
    meta, split = bundle.meta, bundle.meta.split
    assert split is not None
    assert NOTICE in text
    assert (
        f"| train | {split.train_images} | {split.train_positives} | "
        f"{split.train_images - split.train_positives} | {split.train_patients} |"
    ) in text
    assert (
        f"| validation | {split.val_images} | {split.val_positives} | "
        f"{split.val_images - split.val_positives} | {split.val_patients} |"
    ) in text
    assert meta.data_fingerprint in text
    assert f"Now: {meta.threshold.value:.4f} (youden), by the training run" in text
    for row in ("| Sensitivity |", "| Specificity |", "| ROC-AUC |", "| PR-AUC |"):
        line = next(x for x in text.splitlines() if x.startswith(row))
        assert " to " in line or "n/a" in line  # the interval column
    assert "bootstrap over patients" in text
    assert "Undo an inverted grey scale: yes" in text
    assert "ranked held-out women at ROC-AUC 0.65" in " ".join(text.split()) and "Grad-CAM" in text
    assert f"TensorFlow: {meta.versions['tensorflow'].replace('.', chr(92) + '.')}" in text
    # What the dashboard shows is the file's text.
    assert bundle_card(bundle) == text
    # A handful of patients with cancer validate the demo: the card says what that is worth.
    val = pd.read_csv(demo_bundle / "val_predictions.csv")
    k = val.loc[val["label"] == 1, "patient_id"].nunique()
    assert f"**Caution.** Only {k} patients with cancer validate this model" in text


def test_saving_a_threshold_rewrites_the_card(bundle_copy):
    old = load_bundle(bundle_copy, with_model=False).meta.threshold
    update_threshold(bundle_copy, 0.25, "manual", note="chosen on image level", by="ana@x.org")
    text = card_file(bundle_copy)
    assert "Now: 0.2500 (manual), by ana@x\\.org" in text
    assert "chosen on image level" in text
    assert "at the saved threshold 0.2500" in text
    assert f"- {old.value:.4f} (youden), by the training run" in text  # the history
    assert bundle_card(load_bundle(bundle_copy, with_model=False)) == text
    assert sorted(p.name for p in bundle_copy.iterdir() if p.name.startswith(".")) == []


def test_an_old_bundle_gets_a_card_on_display_without_a_write(tmp_path):
    old = tmp_path / "old"
    shutil.copytree(FORMAT1, old)
    before = {p.name: p.stat().st_mtime_ns for p in old.iterdir()}
    text = bundle_card(load_bundle(old, with_model=False))
    assert NOTICE in text and "| validation | 6 | 2 | 4 | 3 |" in text
    assert "0.3650 (youden)" in text
    assert {p.name: p.stat().st_mtime_ns for p in old.iterdir()} == before
    update_threshold(old, 0.5, "manual")  # a save writes one
    assert "Now: 0.5000 (manual)" in card_file(old)


def test_markdown_in_names_and_notes_is_escaped(bundle_copy):
    folder = bundle_copy.with_name("![b](x.png) *run* <i>")
    bundle_copy.rename(folder)
    update_threshold(folder, 0.3, "[click](http://evil)", note="# heading <b>", by="**me**")
    text = card_file(folder)
    assert "![b](" not in text and "[click](" not in text and "http://" not in text
    assert "# Model card: \\!\\[b\\](x\\.png\\) \\*run\\* \\<i\\>\n" in text
    assert "\\[click\\](http\\://evil\\)" in text
    assert "\\# heading \\<b\\>" in text and "\\*\\*me\\*\\*" in text
    assert "\n# heading" not in text


def test_the_threshold_page_shows_the_card(small_demo, bundles_dir):
    root, _ = small_demo
    at = open_app(root, "pages/threshold.py")
    assert any(e.label == "Model card" for e in at.expander)
    shown = next(m.value for m in at.markdown if NOTICE in m.value)
    title, _, rest = shown.partition("\n")
    assert title == "# Model card: demo"  # the copy's folder name, the rest as the file says
    assert rest == card_file(bundles_dir / "demo").partition("\n")[2].rstrip("\n")


def test_the_card_of_an_old_bundle_is_shown_and_nothing_is_written(
    small_demo, tmp_path, monkeypatch
):
    folder = tmp_path / "bundles"
    shutil.copytree(FORMAT1, folder / "demo")
    monkeypatch.setenv("BCP_BUNDLES_DIR", str(folder))
    root, _ = small_demo
    monkeypatch.setenv("BCP_MODE", "demo")  # no better than chance: viewers get the reason
    at = open_app(root, "pages/threshold.py")
    assert any("no better than chance" in w.value for w in at.warning)
    monkeypatch.delenv("BCP_MODE")
    at = open_app(root, "pages/threshold.py")
    assert any(NOTICE in m.value and "0.3650 (youden)" in m.value for m in at.markdown)
    assert not (folder / "demo" / CARD_FILE).exists()
    assert sorted(p.name for p in (folder / "demo").iterdir()) == sorted(
        p.name for p in FORMAT1.iterdir()
    )
    assert (folder / "demo" / META_FILE).read_bytes() == (FORMAT1 / META_FILE).read_bytes()


def test_a_card_that_cannot_be_written_leaves_the_threshold_unsaved(bundle_copy, monkeypatch):
    import errno
    import tempfile

    from bcp_core.errors import UserError

    before = {p.name: p.read_bytes() for p in bundle_copy.iterdir()}
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        if str(kwargs.get("prefix", "")).startswith(f".{CARD_FILE}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    with pytest.raises(UserError, match="free some disk space"):
        update_threshold(bundle_copy, 0.3, "manual")
    assert {p.name: p.read_bytes() for p in bundle_copy.iterdir()} == before  # no temp file left


@pytest.mark.parametrize(
    ("settings", "shown"),
    [
        ({"model": "efficientnet_lite0", "fine_tune": True, "batch_norm": "frozen"}, "frozen"),
        (
            {
                "model": "efficientnet_lite2",
                "fine_tune": True,
                "batch_norm": "frozen",
                "frozen_stages": 2,
            },
            "frozen",
        ),
        ({"model": "efficientnet_lite0", "fine_tune": True, "batch_norm": "train"}, "train"),
        ({"model": "resnet50", "weights": "imagenet", "fine_tune": True}, "frozen"),
        ({"model": "efficientnet_lite0", "fine_tune": False, "batch_norm": "frozen"}, None),
        (
            {
                "model": "efficientnet_lite0",
                "weights": "none",
                "fine_tune": True,
                "batch_norm": "frozen",
            },
            None,
        ),
        ({"model": "default_cnn", "fine_tune": True}, None),
    ],
)
def test_the_card_says_the_batch_norm_of_a_fine_tuned_pretrained_backbone(settings, shown):
    """bundle.json leaves out a frozen batch norm (older bundles read as before); the card of a
    backbone fine-tuned from pretrained weights says it all the same."""
    cfg = TrainConfig(**{"frozen_stages": 0, **settings}).validate()
    training = cfg.to_dict()
    meta = BundleMeta(cfg.model, cfg.spec, ThresholdChoice(0.5), training=training)
    lines = render_card(meta, pd.DataFrame()).splitlines()
    rows = [line for line in lines if line.startswith("| batch\\_norm |")]
    assert rows == ([f"| batch\\_norm | {shown} |"] if shown else [])
    if shown == "frozen":
        assert "batch_norm" not in training
        before = "| frozen\\_stages | 2 |" if cfg.frozen_stages else "| fine\\_tune | True |"
        assert lines.index(rows[0]) == lines.index(before) + 1
