"""What a training run may take from the server: memory (row 7), bundles (row 9), weights (row 10).

Each limit is checked before a run reads any data, in the library, the CLI and ``train_model``.
The library takes the limits as values (``TrainingLimits``); only the entry points read them
from the ``BCP_*`` settings.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from bcp_core import settings
from bcp_core.cli import main
from bcp_core.config import TrainConfig
from bcp_core.errors import UserError
from bcp_core.model.files import META_FILE
from bcp_core.model.resources import (
    TrainingLimits,
    check_bundle_quota,
    check_training_memory,
    check_training_resources,
    count_bundles,
    default_memory_budget,
    estimate_training_bytes,
    weight_files,
    weights_setting,
)
from bcp_core.runs import TrainRequest

#: The CNN at its recipe: the figures below are its.
CNN = TrainConfig(model="default_cnn")
HUGE = TrainConfig(model="default_cnn", image_size=(4096, 4096), batch_size=512)


def fake_bundles(folder, n):
    for i in range(n):
        (folder / f"run{i}").mkdir(parents=True)
        (folder / f"run{i}" / META_FILE).write_text(json.dumps({}))
    return folder


#: Peak resident memory of short real runs (bench/bench_memory.py): model, side, batch, fine-tuned
#: -> GB. The estimate must lie above each (a run that fits by it fits) and not far above.
MEASURED_PEAKS = {
    ("default_cnn", 256, 16, False): 1.21,
    ("default_cnn", 512, 16, False): 1.77,
    ("default_cnn", 256, 8, False): 1.10,
    ("default_cnn", 768, 8, False): 1.89,
    ("seed_cnn", 256, 16, False): 2.10,
    ("seed_cnn", 512, 16, False): 5.89,
    ("seed_cnn", 512, 4, False): 4.56,
    ("efficientnet_lite0", 256, 16, True): 2.01,
    ("efficientnet_lite0", 512, 16, True): 4.41,
    ("efficientnet_lite0", 512, 4, True): 3.19,
    ("resnet50", 224, 8, False): 3.15,
    ("resnet50", 448, 8, False): 6.2,
}


@pytest.mark.parametrize(("run", "peak"), MEASURED_PEAKS.items(), ids=str)
def test_the_estimate_lies_above_every_measured_peak_and_not_far_above(run, peak):
    model, side, batch, fine_tune = run
    cfg = TrainConfig(model=model, image_size=(side, side), batch_size=batch, fine_tune=fine_tune)
    estimate = estimate_training_bytes(cfg) / 1e9
    assert peak <= estimate <= 1.6 * peak


def test_the_estimate_grows_with_batch_pixels_and_weights():
    base = estimate_training_bytes(CNN)
    assert estimate_training_bytes(replace(CNN, batch_size=32)) > base
    assert estimate_training_bytes(replace(CNN, image_size=(320, 256))) > base
    assert estimate_training_bytes(HUGE) > 1e12  # one input batch alone is 32 GiB
    # seed_cnn's Dense weights grow with the image even at batch 1
    small = estimate_training_bytes(TrainConfig(model="seed_cnn", batch_size=1))
    large = estimate_training_bytes(
        TrainConfig(model="seed_cnn", image_size=(1024, 1024), batch_size=1)
    )
    assert large - small > 1024 * 1024 * 256 * 4 * 4  # at least weights, gradients, moments


def test_a_run_over_the_memory_budget_is_refused_with_the_estimate():
    """Threat row 7: 4096 x 4096 at batch 512 was accepted."""
    defaults = TrainingLimits()
    assert defaults.memory_bytes == default_memory_budget()  # 60% of this machine's
    with pytest.raises(UserError) as info:
        check_training_memory(HUGE, defaults)
    message = str(info.value)
    assert re.match(
        r"Training default_cnn at 4096 x 4096 with batch size 512 needs about 1,8\d\d GB of "
        r"memory, more than the [\d.,]+ GB this server allows for training "
        r"\(BCP_TRAIN_MEMORY_GB\); choose a smaller batch size or image size\.$",
        message,
    ), message
    assert check_training_memory(TrainConfig(), defaults) == estimate_training_bytes(TrainConfig())


def test_the_budget_is_the_limits_and_the_entry_points_read_it_from_the_setting(monkeypatch):
    one_gb = TrainingLimits(memory_bytes=10**9)
    with pytest.raises(UserError, match=r"needs about 1\.6 GB of memory, more than the 1\.0 GB"):
        check_training_memory(replace(CNN, image_size=(320, 256)), one_gb)
    assert check_training_memory(HUGE, TrainingLimits(memory_bytes=2000 * 10**9)) > 1e12
    monkeypatch.setenv("BCP_TRAIN_MEMORY_GB", "1")
    assert settings.training_limits().memory_bytes == 10**9


def test_a_full_bundles_folder_refuses_a_new_run_and_says_how_to_free_room(tmp_path):
    """Threat row 9: the disk could be filled with bundles."""
    folder = fake_bundles(tmp_path / "bundles", 3)
    (folder / "notes").mkdir()  # not a bundle: not counted
    assert count_bundles(folder) == 3
    check_bundle_quota(folder / "new", TrainingLimits(max_bundles=4))
    with pytest.raises(UserError) as info:
        check_bundle_quota(folder / "new", TrainingLimits(max_bundles=3))
    assert str(info.value) == (
        "The bundles folder already holds 3 bundles, the most this server keeps "
        "(BCP_MAX_BUNDLES = 3); delete the bundles of runs you no longer need (each is one "
        "sub-folder of the bundles folder) or raise the limit, then start again."
    )
    # replacing a bundle takes no new room; a folder yet to be made holds no bundle
    check_bundle_quota(folder / "run0", TrainingLimits(max_bundles=3))
    check_bundle_quota(tmp_path / "missing" / "new", TrainingLimits(max_bundles=1))


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
    quota = TrainingLimits(max_bundles_bytes=7 * 10**8)
    with pytest.raises(UserError, match=r"would take about 0\.8 GB .* of the 0\.7 GB this"):
        check_bundle_quota(bundles / "new", quota, cfg=big)
    check_bundle_quota(bundles / "new", quota, cfg=cfg)  # a small one fits
    with pytest.raises(UserError, match="already holds"):
        check_bundle_quota(bundles / "new", TrainingLimits(max_bundles_bytes=written + 1000), cfg)


def test_weight_files_are_the_h5_files_of_the_weights_folder(tmp_path):
    """Threat row 10: the page offered a free path box that could probe server files."""
    folder = tmp_path / "weights"
    folder.mkdir()
    for name in ("resnet50_notop.h5", "vgg19.weights.h5", "notes.txt", ".hidden.h5"):
        (folder / name).write_text("x")
    (folder / "sub.h5").mkdir()
    assert weight_files(folder) == ["resnet50_notop.h5", "vgg19.weights.h5"]
    chosen = weights_setting("resnet50_notop.h5", "resnet50", folder)
    assert chosen == str(folder / "resnet50_notop.h5")
    assert weights_setting("none", "resnet50", folder) == "none"
    assert weights_setting("imagenet", "resnet50", folder) == "imagenet"
    assert weights_setting("default", "resnet50", folder) == "none"  # imagenet would go online
    assert weights_setting("default", "efficientnet_lite0", folder) == "imagenet"  # installed
    refusal = r"is not a weights file of this server; .* \(BCP_WEIGHTS_DIR\)\.$"
    for typed in ("/etc/passwd", "../weights/resnet50_notop.h5", "notes.txt", "sub.h5", ""):
        with pytest.raises(UserError, match=refusal):
            weights_setting(typed, "resnet50", folder)
    assert weight_files(tmp_path / "absent") == []


def test_train_model_refuses_before_anything_is_written(tiny_manifest, tmp_path):
    from bcp_core.model.training import train_model

    cfg = TrainConfig(model="seed_cnn", image_size=(64, 48), epochs=1, batch_size=8)
    half_a_gb = TrainingLimits(memory_bytes=int(0.5e9))
    with pytest.raises(UserError, match="more than the 0.5 GB"):
        train_model(tiny_manifest, cfg, tmp_path / "out" / "b", limits=half_a_gb)
    fake_bundles(tmp_path / "full", 2)
    with pytest.raises(UserError, match="already holds 2 bundles"):
        train_model(
            tiny_manifest, cfg, tmp_path / "full" / "b", limits=TrainingLimits(max_bundles=2)
        )
    assert not (tmp_path / "out").exists() and not (tmp_path / "full" / "b").exists()


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        (
            ["--model", "default_cnn", "--image-size", "4096", "4096", "--batch-size", "512"],
            {},
            "needs about 1,8",
        ),
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


def test_the_library_reads_no_setting_the_entry_points_do(tmp_path, capsys, monkeypatch):
    """Settings at the edge: an unusable ``BCP_*`` value stops the CLI or the page that reads it,
    with its sentence, never a library call that was given its limits."""
    for name in ("BCP_TRAIN_MEMORY_GB", "BCP_MAX_BUNDLES", "BCP_MAX_BUNDLES_GB"):
        monkeypatch.setenv(name, "abc")
    request = TrainRequest(TrainConfig(), tmp_path, tmp_path / "bundles" / "b")
    assert request.check() is request  # the defaults, as no entry point gave others
    check_training_resources(TrainConfig(), tmp_path / "bundles" / "b", TrainingLimits())
    with pytest.raises(UserError, match=r"^BCP_TRAIN_MEMORY_GB must be a positive number of GB"):
        settings.training_limits()
    args = ["train", "--data-root", str(tmp_path / "no-such-root"), "--out", str(tmp_path / "b")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error: BCP_TRAIN_MEMORY_GB must be a positive number of GB, got 'abc'." in err, err
