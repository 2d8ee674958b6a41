"""The application layer: the CLI and the dashboard start a run through the same functions."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from bcp_core.cli import main
from bcp_core.config import TrainConfig
from bcp_core.errors import UserError
from bcp_core.model.files import META_FILE
from bcp_core.runs import TrainRequest, bundle_name

ARGS = ["--epochs", "1", "--image-size", "64", "48", "--batch-size", "8", "--seed", "5"]


def _meta(folder: Path) -> dict:
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    return {key: meta[key] for key in ("model_name", "preprocessing", "training", "split")}


@pytest.mark.slow
def test_the_cli_and_the_dashboard_write_the_same_bundle_for_the_same_request(
    small_demo, tmp_path, capsys
):
    from bcp_core.cli import _train_config, build_parser
    from dashboard.jobs import JobRegistry, TrainingJob

    root, _ = small_demo
    assert main(["train", "--data-root", str(root), "--out", str(tmp_path / "cli"), *ARGS]) == 0
    capsys.readouterr()
    args = build_parser().parse_args(["train", "--data-root", str(root), "--out", "x", *ARGS])
    job = TrainingJob(_train_config(args), tmp_path / "page", owner="test", data_root=root)
    from bcp_core.runs import read_training_data

    manifest, job.metadata = read_training_data(job.request)
    JobRegistry().start(job, manifest)
    deadline = time.monotonic() + 300
    while job.running and time.monotonic() < deadline:
        time.sleep(0.5)
    assert job.status == "completed", job.message
    assert _meta(tmp_path / "cli") == _meta(tmp_path / "page")


def test_a_request_refuses_ray_options_without_a_multiworker_run(tmp_path):
    request = TrainRequest(TrainConfig(), tmp_path, tmp_path / "b", workers=3)
    with pytest.raises(UserError, match="--workers works with --distribute multiworker only"):
        request.check()
    with pytest.raises(UserError, match="Unknown way to spread training 'cloud'"):
        TrainRequest(TrainConfig(), tmp_path, tmp_path / "b", distribute="cloud").check()


def test_bundles_are_named_by_start_time_and_model():
    when = datetime(2026, 12, 2, 7, 11, 28)
    assert bundle_name(TrainConfig(model="efficientnet_lite0"), when) == (
        "20261202-071128-efficientnet_lite0"
    )


def test_a_models_recipe_gives_what_is_not_given_and_every_setting_travels_whole():
    from dataclasses import asdict

    from bcp_core.config import LITE_RECIPE, MODEL_SPECS, SCRATCH_RECIPE, recipe_of

    lite = TrainConfig(model="efficientnet_lite0", epochs=3)
    assert lite.epochs == 3 and lite.image_size == LITE_RECIPE.image_size == (320, 256)
    assert (lite.fine_tune, lite.frozen_stages, lite.batch_norm) == (True, 4, "train")
    cnn = TrainConfig(model="default_cnn")
    assert (cnn.image_size, cnn.epochs, cnn.learning_rate) == ((160, 128), 60, 1e-3)
    assert MODEL_SPECS["resnet50"].recipe == SCRATCH_RECIPE  # no fine-tuning unless asked
    assert recipe_of("efficientnet_lite2") == LITE_RECIPE
    # An unknown name gets the from-scratch recipe here and its sentence from validate().
    assert recipe_of("no_such_net") == recipe_of(None) == SCRATCH_RECIPE
    with pytest.raises(UserError, match="Unknown model 'no_such_net'"):
        TrainConfig(model="no_such_net").validate()
    # Settings sent elsewhere whole (a Ray worker) come back the same: a Lite run without frozen
    # stages and with frozen batch norm stays so, not the recipe's 4 stages and learning norm.
    mine = TrainConfig(model="efficientnet_lite0", frozen_stages=0, batch_norm="frozen")
    assert TrainConfig(**asdict(mine)) == mine
    # The bundle's form leaves out settings at their old defaults: never rebuild a run from it.
    assert TrainConfig(**mine.to_dict()).frozen_stages == 4
