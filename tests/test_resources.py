"""What a training run may take from the server: memory (row 7), bundles (row 9), weights (row 10).

Each limit is checked before a run reads any data, in the library, the CLI and ``train_model``.
"""

from __future__ import annotations

import json
import re

import pytest

from bcp_core.cli import main
from bcp_core.config import TrainConfig
from bcp_core.errors import UserError
from bcp_core.model.resources import (
    check_bundle_quota,
    check_training_memory,
    count_bundles,
    estimate_training_bytes,
    weight_files,
    weights_setting,
)

HUGE = TrainConfig(image_size=(4096, 4096), batch_size=512)


def fake_bundles(folder, n):
    for i in range(n):
        (folder / f"run{i}").mkdir(parents=True)
        (folder / f"run{i}" / "bundle.json").write_text(json.dumps({}))
    return folder


def test_the_estimate_grows_with_batch_and_pixels_and_fits_the_measurements():
    default = estimate_training_bytes(TrainConfig(image_size=(320, 256)))
    assert 1.1e9 < default < 1.5e9  # 320 x 256, batch 16: measured 1.37 GB at 224^2, batch 32
    # the default input (160 x 128) needs less, though the fixed overhead keeps it above 0.5 GB
    assert 0.5e9 < estimate_training_bytes(TrainConfig()) < default
    measured = {256: 1.10e9, 768: 1.89e9}  # bench/bench_memory.py, default_cnn, batch 8
    for side, peak in measured.items():
        estimate = estimate_training_bytes(TrainConfig(image_size=(side, side), batch_size=8))
        assert estimate == pytest.approx(peak, rel=0.05)
    assert estimate_training_bytes(HUGE) > 1e12  # one input batch alone is 32 GiB
    double = TrainConfig(batch_size=32)
    assert estimate_training_bytes(double) > estimate_training_bytes(TrainConfig())
    resnet = TrainConfig(model="resnet50", image_size=(448, 448), batch_size=8)
    assert estimate_training_bytes(resnet) == pytest.approx(6.2e9, rel=0.1)


def test_seed_cnn_counts_its_weights_that_grow_with_the_image():
    small = estimate_training_bytes(TrainConfig(model="seed_cnn", batch_size=1))
    large = estimate_training_bytes(
        TrainConfig(model="seed_cnn", image_size=(1024, 1024), batch_size=1)
    )
    assert large - small > 1024 * 1024 * 4096 * 0.9


def test_a_run_over_the_memory_budget_is_refused_with_the_estimate(monkeypatch):
    """Threat row 7: 4096 x 4096 at batch 512 was accepted."""
    monkeypatch.delenv("BCP_TRAIN_MEMORY_GB", raising=False)
    with pytest.raises(UserError) as info:
        check_training_memory(HUGE)
    message = str(info.value)
    assert re.match(
        r"Training default_cnn at 4096 x 4096 with batch size 512 needs about 1,61\d GB of "
        r"memory, more than the [\d.,]+ GB this server allows for training "
        r"\(BCP_TRAIN_MEMORY_GB\); choose a smaller batch size or image size\.$",
        message,
    ), message
    assert check_training_memory(TrainConfig()) == estimate_training_bytes(TrainConfig())


def test_the_budget_comes_from_the_setting(monkeypatch):
    monkeypatch.setenv("BCP_TRAIN_MEMORY_GB", "1")
    with pytest.raises(UserError, match=r"needs about 1\.2 GB of memory, more than the 1\.0 GB"):
        check_training_memory(TrainConfig(image_size=(320, 256)))
    monkeypatch.setenv("BCP_TRAIN_MEMORY_GB", "2000")
    assert check_training_memory(HUGE) > 1e12


def test_a_full_bundles_folder_refuses_a_new_run_and_says_how_to_free_room(tmp_path, monkeypatch):
    """Threat row 9: the disk could be filled with bundles."""
    folder = fake_bundles(tmp_path / "bundles", 3)
    (folder / "notes").mkdir()  # not a bundle: not counted
    assert count_bundles(folder) == 3
    check_bundle_quota(folder / "new", limit=4)
    with pytest.raises(UserError) as info:
        check_bundle_quota(folder / "new", limit=3)
    assert str(info.value) == (
        "The bundles folder already holds 3 bundles, the most this server keeps "
        "(BCP_MAX_BUNDLES = 3); delete the bundles of runs you no longer need (each is one "
        "sub-folder of the bundles folder) or raise the limit, then start again."
    )
    check_bundle_quota(folder / "run0", limit=3)  # replacing a bundle takes no new room
    monkeypatch.setenv("BCP_MAX_BUNDLES", "2")
    with pytest.raises(UserError, match="already holds 3 bundles"):
        check_bundle_quota(folder / "new")
    check_bundle_quota(tmp_path / "missing" / "new", limit=1)  # a folder yet to be made


@pytest.mark.slow
def test_the_bundle_estimate_bounds_a_real_bundle_and_the_quota_counts_bytes(
    tiny_manifest, tmp_path
):
    """Security row 8: seed_cnn at 512 x 512 wrote 757 MB and fifty such fit a folder quota."""
    from bcp_core.model.resources import estimate_bundle_bytes, folder_bytes
    from bcp_core.model.training import train_model

    cfg = TrainConfig(
        model="seed_cnn", image_size=(96, 96), epochs=1, batch_size=8, val_fraction=0.3
    )
    bundles = tmp_path / "bundles"
    train_model(tiny_manifest, cfg, bundles / "one")
    written = folder_bytes(bundles / "one")
    estimate = estimate_bundle_bytes(cfg)
    assert 0.8 * written < estimate < 1.5 * written  # within the model file's own size
    big = TrainConfig(model="seed_cnn", image_size=(512, 512))
    assert estimate_bundle_bytes(big) > 700e6  # the measured 757 MB bundle
    with pytest.raises(UserError, match=r"would take about 0\.8 GB .* of the 0\.7 GB this"):
        check_bundle_quota(bundles / "new", cfg=big, limit_bytes=7 * 10**8)
    check_bundle_quota(bundles / "new", cfg=cfg, limit_bytes=7 * 10**8)  # a small one fits
    with pytest.raises(UserError, match="already holds"):
        check_bundle_quota(bundles / "new", cfg=cfg, limit_bytes=written + 1000)


def test_weight_files_are_the_h5_files_of_the_weights_folder(tmp_path, monkeypatch):
    """Threat row 10: the page offered a free path box that could probe server files."""
    folder = tmp_path / "weights"
    folder.mkdir()
    for name in ("resnet50_notop.h5", "vgg19.weights.h5", "notes.txt", ".hidden.h5"):
        (folder / name).write_text("x")
    (folder / "sub.h5").mkdir()
    monkeypatch.setenv("BCP_WEIGHTS_DIR", str(folder))
    assert weight_files() == ["resnet50_notop.h5", "vgg19.weights.h5"]
    assert weights_setting("resnet50_notop.h5", "resnet50") == str(folder / "resnet50_notop.h5")
    assert weights_setting("none", "resnet50") == "none"
    assert weights_setting("imagenet", "resnet50") == "imagenet"
    assert weights_setting("default", "resnet50") == "none"  # imagenet would go online
    assert weights_setting("default", "efficientnet_lite0") == "imagenet"  # installed
    for typed in ("/etc/passwd", "../weights/resnet50_notop.h5", "notes.txt", "sub.h5", ""):
        with pytest.raises(UserError, match=r"is not a weights file of this server"):
            weights_setting(typed, "resnet50")
    assert weight_files(tmp_path / "absent") == []


def test_train_model_refuses_before_anything_is_written(tiny_manifest, tmp_path, monkeypatch):
    from bcp_core.model.training import train_model

    monkeypatch.setenv("BCP_TRAIN_MEMORY_GB", "0.5")
    cfg = TrainConfig(model="seed_cnn", image_size=(64, 48), epochs=1, batch_size=8)
    with pytest.raises(UserError, match="more than the 0.5 GB"):
        train_model(tiny_manifest, cfg, tmp_path / "out" / "b")
    monkeypatch.delenv("BCP_TRAIN_MEMORY_GB")
    fake_bundles(tmp_path / "full", 2)
    monkeypatch.setenv("BCP_MAX_BUNDLES", "2")
    with pytest.raises(UserError, match="already holds 2 bundles"):
        train_model(tiny_manifest, cfg, tmp_path / "full" / "b")
    assert not (tmp_path / "out").exists() and not (tmp_path / "full" / "b").exists()


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        (["--image-size", "4096", "4096", "--batch-size", "512"], {}, "needs about 1,61"),
        ([], {"BCP_MAX_BUNDLES": "1"}, "The bundles folder already holds 1 bundles"),
    ],
)
def test_the_cli_refuses_before_reading_data(tmp_path, capsys, monkeypatch, extra, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    fake_bundles(tmp_path / "bundles", 1)
    args = ["train", "--data-root", str(tmp_path / "no-such-root")]
    code = main([*args, "--out", str(tmp_path / "bundles" / "new"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err, err
