"""Privacy: no patient ID or data path in what the product logs or prints while it works."""

from __future__ import annotations

import logging

import pytest

from bcp_core.config import TrainConfig
from bcp_core.data.privacy import mask_df, mask_id, mask_key
from bcp_core.model.training import train_model


def test_masking_keeps_only_a_hint_of_the_id():
    assert mask_id("DIT439120108") == "DIT*******08"
    assert mask_key("FILE0004-20141225-112603-DIT439120108") == (
        "FILE0004-20141225-112603-DIT*******08"
    )
    assert mask_key("FILE0004") == "FILE0004"


def test_mask_df_masks_ids_and_keys_only(tiny_manifest):
    masked = mask_df(tiny_manifest)
    assert not masked["patient_id"].isin(tiny_manifest["patient_id"]).any()
    assert masked["path"].equals(tiny_manifest["path"])


@pytest.mark.slow
def test_training_logs_no_patient_id_or_data_path(tiny_manifest, tmp_path, capfd, caplog):
    manifest = tiny_manifest.copy()
    manifest["patient_id"] = [f"DIT{439120100 + i // 2:09d}" for i in range(len(manifest))]
    broken = tmp_path / "secret-folder" / "broken.jpg"
    broken.parent.mkdir()
    broken.write_bytes(b"not an image")
    manifest.loc[0, "path"] = str(broken)
    caplog.set_level(logging.DEBUG)
    events = []
    result = train_model(
        manifest,
        TrainConfig(model="seed_cnn", image_size=(64, 48), epochs=1, batch_size=8, seed=1),
        tmp_path / "b",
        on_event=events.append,
    )
    assert str(broken) in result.read_failures  # reported to the caller who owns the data
    out, err = capfd.readouterr()
    shown = out + err + caplog.text + repr(events)
    for pid in manifest["patient_id"].unique():
        assert pid not in shown
    assert "secret-folder" not in shown
