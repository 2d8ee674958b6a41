"""``train --distribute multiworker`` on a real two-worker Ray cluster on this machine.

Two worker processes train under MultiWorkerMirroredStrategy through Ray Train; the chief writes
the bundle. Checked: the bundle loads and predicts its validation images as the run scored
them; the run matches a single-process run of the same seed within the stated bound; progress
events reach the caller; a killed worker ends the run with one sentence and no half bundle.

Ray is the optional scale extra (installed by ``make test``); without it these tests skip.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bcp_core.cli import main
from bcp_core.config import TrainConfig
from bcp_core.errors import UserError
from bcp_core.inference.predict import predict_files
from bcp_core.model.bundle import load_bundle
from bcp_core.model.events import EpochEnded, Finished, Phase, Started
from bcp_core.model.files import META_FILE
from bcp_core.model.training import train_model
from tests.conftest import tiny_train_argv

pytestmark = pytest.mark.slow

#: Every step, the two workers' batches hold the images of one process's batch and the summed
#: gradients are those of one process (test_strategy.py checks that to 1e-5); what differs is
#: the random draws of augmentation and dropout, which each worker makes for its own half. After
#: one epoch of this tiny model the validation probabilities differ by a mean absolute 0.001 to
#: 0.011 (max 0.025; seeds 4-6, with and without augmentation): the bound is that, with room.
AGREEMENT = 0.05


def tiny_config(**changes) -> TrainConfig:
    settings = dict(
        model="seed_cnn", epochs=1, image_size=(64, 48), batch_size=8, val_fraction=0.3, seed=4
    )
    return TrainConfig(**(settings | changes))


def test_two_workers_write_a_bundle_that_agrees_with_one_process(
    ray_cluster, tiny_manifest, tmp_path
):
    from bcp_core.model.ray_train import train_on_ray

    events = []
    out = tmp_path / "two-workers"
    result = train_on_ray(tiny_manifest, tiny_config(), out, workers=2, on_event=events.append)
    assert result.bundle == out and result.epochs_run == 1 and result.split.patient_overlap == 0
    started = [e for e in events if not isinstance(e, Phase)]
    assert isinstance(started[0], Started) and isinstance(events[-1], Finished)
    assert any(isinstance(e, EpochEnded) for e in events)
    bundle = load_bundle(out)
    assert bundle.meta.training["distribute"] == {"mode": "multiworker", "workers": 2}
    val = bundle.val_predictions
    again = predict_files(bundle, val["file"].tolist())
    np.testing.assert_allclose([r.probability for r in again], val["probability"], atol=1e-5)

    single = load_bundle(train_model(tiny_manifest, tiny_config(), tmp_path / "one").bundle)
    assert single.val_predictions["file"].tolist() == val["file"].tolist()  # the same split
    difference = np.abs(single.val_predictions["probability"] - val["probability"]).mean()
    assert difference <= AGREEMENT
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written beside the bundles


def test_two_workers_train_a_model_on_image_plus_workbook_values(
    ray_cluster, tiny_manifest, tmp_path
):
    import pandas as pd

    from bcp_core.model.ray_train import train_on_ray

    rng = np.random.default_rng(5)
    values = pd.DataFrame({"Site": rng.choice(["north", "south"], len(tiny_manifest))})
    out = tmp_path / "with-values"
    cfg = tiny_config(metadata_columns=("Site",))
    train_on_ray(tiny_manifest, cfg, out, workers=2, metadata=values)
    bundle = load_bundle(out)
    assert bundle.metadata_encoder is not None and bundle.metadata_encoder.names == ["Site"]
    index = {p: i for i, p in enumerate(tiny_manifest["path"].astype(str))}
    files = bundle.val_predictions["file"].astype(str).tolist()
    rows = {f: {"Site": values["Site"][index[f]]} for f in files}
    again = predict_files(bundle, files, metadata=rows)
    np.testing.assert_allclose(
        [r.probability for r in again], bundle.val_predictions["probability"], atol=1e-5
    )


def _train_workers() -> list[int]:
    """Process ids of the Ray Train workers running now (Ray names its processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"RayTrainWorker" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return sorted(found)


def test_a_killed_worker_ends_the_run_with_a_sentence_and_no_half_bundle(
    ray_cluster, tiny_manifest, tmp_path
):
    from bcp_core.model.ray_train import train_on_ray

    events, killed = [], []

    def kill_after_first_epoch() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not any(isinstance(e, EpochEnded) for e in events):
            time.sleep(0.2)
        workers = _train_workers()
        if workers:
            os.kill(workers[-1], signal.SIGKILL)
            killed.append(workers[-1])

    out = tmp_path / "killed"
    threading.Thread(target=kill_after_first_epoch, daemon=True).start()
    with pytest.raises(UserError) as caught:
        train_on_ray(tiny_manifest, tiny_config(epochs=200, patience=200), out, workers=2,
                     on_event=events.append)  # fmt: skip
    assert killed, "no training worker was found to kill"
    message = str(caught.value)
    assert "Multi-worker training failed" in message and "died" in message
    if (out / META_FILE).exists():  # the best epoch before the kill, whole
        assert "best epoch written before the failure" in message
        bundle = load_bundle(out)
        assert predict_files(bundle, [bundle.val_predictions["file"][0]])[0].ok
    else:
        assert "no bundle was written" in message
    assert not [p for p in tmp_path.iterdir() if p.name != "killed"]  # no staging left


def test_stop_ends_every_worker_at_the_same_step_and_keeps_the_best(
    ray_cluster, tiny_manifest, tmp_path
):
    from bcp_core.model.ray_train import train_on_ray

    stop, events = threading.Event(), []

    def on_event(event) -> None:
        events.append(event)
        if isinstance(event, EpochEnded) and event.epoch == 2:
            stop.set()  # the training page's Stop button

    out = tmp_path / "stopped"
    result = train_on_ray(tiny_manifest, tiny_config(epochs=200, patience=200), out, workers=2,
                          on_event=on_event, stop_event=stop)  # fmt: skip
    assert result.status == "stopped" and 2 <= result.epochs_run <= 3
    assert isinstance(events[-1], Finished) and events[-1].status == "stopped"
    assert load_bundle(out).meta.status == "stopped"


def test_cli_trains_on_two_workers(ray_cluster, small_demo, tmp_path, capsys):
    import json

    root, _ = small_demo
    out = tmp_path / "cli"
    argv = tiny_train_argv(root, out, "--epochs", "1", "--batch-size", "8",
                           "--distribute", "multiworker", "--workers", "2", "--json")  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["bundle"] == str(out.resolve()) and found["epochs_run"] == 1
    assert load_bundle(out).meta.training["distribute"]["workers"] == 2
    assert list((tmp_path / "image_cache").glob("64x48-*/*/*.npy"))  # the workers kept theirs
    assert main([*argv[:-5], "--batch-size", "9", "--distribute", "multiworker"]) == 2
    assert "does not divide between 2 workers" in capsys.readouterr().err


def test_the_training_page_trains_on_the_cluster(
    ray_cluster, small_demo, tmp_path, monkeypatch, idle_jobs
):
    from tests.conftest import fill_tiny_training_form, open_app, watch_job

    root, _ = small_demo
    monkeypatch.setenv("BCP_BUNDLES_DIR", str(tmp_path / "bundles"))
    monkeypatch.setenv("BCP_RAY_ADDRESS", "auto")  # the cluster this process is connected to
    at = open_app(root, "pages/training.py")
    fill_tiny_training_form(at)
    at.number_input(key="tr_epochs").set_value(1)
    at.radio(key="tr_distribute").set_value("multiworker")
    at.button(key="tr_start").click().run()
    assert not at.error, [e.value for e in at.error]
    job = idle_jobs.current
    assert job is not None and job.distribute == "multiworker"
    watch_job(job)
    assert job.status == "completed", job.message
    assert job.epochs, "the chief's epochs reached the page"
    assert load_bundle(job.out_dir).meta.training["distribute"]["workers"] == 2


def test_cli_refuses_cluster_options_without_multiworker(small_demo, tmp_path, capsys):
    root, _ = small_demo
    argv = ["train", "--data-root", str(root), "--out", str(tmp_path / "b"), "--workers", "2"]
    assert main(argv) == 2
    assert "--workers works with --distribute multiworker only" in capsys.readouterr().err
