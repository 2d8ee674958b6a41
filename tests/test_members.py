"""One run that trains several seeds on one split and keeps their mean (``TrainConfig.members``,
``train --members``, page 3's "Runs to average"): real runs of a tiny CNN."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest

from bcp_core.config import TrainConfig, recipe_of
from bcp_core.errors import UserError
from bcp_core.model.bundle import list_bundles_df, load_bundle, read_bundle_meta
from bcp_core.model.events import EpochEnded, Finished, MemberStarted, Started
from bcp_core.model.files import HISTORY_FILE
from bcp_core.model.layers import member_models
from bcp_core.model.resources import estimate_bundle_bytes
from bcp_core.runs import TrainRequest, member_dir, run_training

TINY = dict(model="default_cnn", image_size=(64, 48), batch_size=8, val_fraction=0.3, epochs=2)


def request(tmp_path, out_name="run", **cfg) -> TrainRequest:
    return TrainRequest(TrainConfig(**{**TINY, **cfg}), tmp_path, tmp_path / "bundles" / out_name)


def hidden(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_the_runs_of_an_averaging_run_share_a_split_and_take_the_next_seeds():
    cfg = TrainConfig(**TINY, seed=7, members=3)
    runs = cfg.member_configs()
    assert [(c.seed, c.split_seed, c.members) for c in runs] == [(7, 7, 1), (8, 7, 1), (9, 7, 1)]
    given = TrainConfig(**TINY, seed=7, split_seed=3, members=2).member_configs()
    assert [(c.seed, c.split_seed) for c in given] == [(7, 3), (8, 3)]
    assert {c.patient_split_seed for c in given} == {3}
    single = TrainConfig(**TINY)
    assert single.member_configs() == [single]
    assert "members" not in single.to_dict() and cfg.to_dict()["members"] == 3


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(members=0), "Runs to average must be"),
        (dict(members=6), "Runs to average must be"),
        (dict(members=2, seed=2**31 - 1), "Seed must be"),
        (dict(members=2, metadata_columns=("age",)), "Only image-only runs can be averaged"),
    ],
)
def test_impossible_averaging_runs_are_refused_in_one_sentence(settings, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(**{**TINY, **settings}).validate()


def test_a_recipes_averaging_gives_way_to_workbook_columns(monkeypatch):
    from dataclasses import replace

    from bcp_core import config

    spec = config.MODEL_SPECS["default_cnn"]
    averaging = replace(spec, recipe=replace(spec.recipe, members=3))
    monkeypatch.setitem(config.MODEL_SPECS, "default_cnn", averaging)
    assert TrainConfig(model="default_cnn").members == 3
    with_columns = TrainConfig(model="default_cnn", metadata_columns=("age",))
    assert with_columns.members == 1 and with_columns.validate() is with_columns
    with pytest.raises(UserError, match="Only image-only runs can be averaged"):
        TrainConfig(model="default_cnn", metadata_columns=("age",), members=2).validate()


def test_an_averaging_run_is_refused_on_the_ray_cluster(tmp_path):
    request = TrainRequest(
        TrainConfig(**TINY, members=2), tmp_path, tmp_path / "b", distribute="multiworker"
    )
    with pytest.raises(UserError, match="cannot train on the Ray cluster yet"):
        request.check()


def test_an_averaging_run_reserves_room_for_its_runs_and_their_mean():
    one = estimate_bundle_bytes(TrainConfig(**TINY))
    assert estimate_bundle_bytes(TrainConfig(**TINY, members=3)) == pytest.approx(6 * one)
    assert "the mean of 2 runs" not in recipe_of("default_cnn").describe()


@pytest.fixture(scope="module")
def averaged(tiny_manifest, tmp_path_factory):
    """A run of two seeds (3 and 4), with every event it sent."""
    tmp = tmp_path_factory.mktemp("members")
    events: list = []
    result = run_training(request(tmp, seed=3, members=2), tiny_manifest, on_event=events.append)
    return tmp, result, events


def test_an_averaging_run_writes_one_bundle_of_its_runs_mean(averaged):
    tmp, result, events = averaged
    out = tmp / "bundles" / "run"
    assert result.bundle == out and result.status == "completed"
    assert hidden(out.parent) == [], "the runs' folders are removed"
    assert list_bundles_df(out.parent)["bundle"].tolist() == ["run"]
    bundle = load_bundle(out)
    members = bundle.meta.members
    assert [(m.bundle, m.seed) for m in members] == [("run 1 of 2", 3), ("run 2 of 2", 4)]
    assert result.members == members and result.best_epoch == 0
    nets = member_models(bundle.model)
    assert len(nets) == 2
    assert not all(
        np.allclose(a, b) for a, b in zip(nets[0].get_weights(), nets[1].get_weights())
    ), "both runs started from one seed"
    training = bundle.meta.training
    assert training["members"] == 2 and training["seed"] == 3 and "split_seed" not in training
    assert bundle.meta.split.seed == 3
    history = pd.read_csv(out / HISTORY_FILE)
    assert sorted(history["member"].unique().tolist()) == [1, 2]
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Averages 2 runs" in card and "run 2 of 2: seed 4" in card
    as_json = result.to_json()
    assert [m["seed"] for m in as_json["members"]] == [3, 4] and as_json["best_epoch"] is None
    assert as_json["val_roc_auc"] == pytest.approx(bundle.meta.metrics.roc_auc)


def test_its_events_mark_each_run_and_number_its_epochs_from_one(averaged):
    _, _, events = averaged
    kinds = [type(e).__name__ for e in events if not type(e).__name__ == "BatchEnded"]
    firsts = [i for i, e in enumerate(events) if isinstance(e, MemberStarted)]
    assert [(events[i].member, events[i].members, events[i].seed) for i in firsts] == [
        (1, 2, 3),
        (2, 2, 4),
    ]
    for start, end in zip(firsts, [*firsts[1:], len(events)]):
        own = events[start:end]
        assert sum(isinstance(e, Started) for e in own) == 1
        assert [e.epoch for e in own if isinstance(e, EpochEnded)] == [1, 2]
        assert sum(isinstance(e, Finished) for e in own) == 1
    assert kinds.index("MemberStarted") == 0


def test_a_stop_during_the_second_run_keeps_the_first_alone(tiny_manifest, tmp_path):
    stop = threading.Event()

    def on_event(event):
        if isinstance(event, MemberStarted) and event.member == 2:
            stop.set()

    result = run_training(
        request(tmp_path, members=2), tiny_manifest, on_event=on_event, stop_event=stop
    )
    out = tmp_path / "bundles" / "run"
    assert result.status == "stopped" and result.bundle == out and not result.members
    meta = read_bundle_meta(out)
    assert meta.members == () and meta.training["seed"] == TINY.get("seed", 42)
    assert hidden(out.parent) == []


def test_a_failure_in_a_later_run_leaves_the_first_runs_bundle(tiny_manifest, tmp_path):
    def on_event(event):
        if isinstance(event, Started) and event.config["seed"] == 43:
            (member_dir(tmp_path / "bundles" / "run", 2)).mkdir(parents=True, exist_ok=True)
            raise RuntimeError("a watcher failed")

    with pytest.raises(RuntimeError, match="a watcher failed"):
        run_training(request(tmp_path, members=2), tiny_manifest, on_event=on_event)
    out = tmp_path / "bundles" / "run"
    assert read_bundle_meta(out).status == "completed"
    assert hidden(out.parent) == [], "the second run's folder is removed"


def test_the_cli_trains_and_reports_an_averaging_run(small_demo, tmp_path, capsys):
    from bcp_core.cli import main

    root, _ = small_demo
    out = tmp_path / "avg"
    argv = ["train", "--data-root", str(root), "--out", str(out), "--model", "seed_cnn"]
    argv += ["--image-size", "64", "48", "--epochs", "1", "--members", "2", "--seed", "5"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "Run 1 of 2 (seed 5):" in captured.err and "Run 2 of 2 (seed 6):" in captured.err
    assert "the mean of these runs" in captured.out and "run 2 of 2: seed 6" in captured.out
    meta = json.loads((out / "bundle.json").read_text(encoding="utf-8"))
    assert [m["seed"] for m in meta["members"]] == [5, 6]
    assert meta["training"]["members"] == 2


def test_the_jobs_progress_names_the_run_and_counts_every_runs_epochs(tmp_path):
    from bcp_core.model.events import BatchEnded
    from dashboard.jobs import TrainingJob

    job = TrainingJob(TrainConfig(**TINY, members=2), tmp_path / "run", owner="test")
    job.status = "running"
    job.on_event(MemberStarted(1, 2, 42))
    for epoch in (1, 2):
        job.on_event(EpochEnded(epoch, 2, {"val_roc_auc": 0.5 + epoch / 10, "val_pr_auc": 0.3}))
    job.on_event(Finished("completed", 2, 2, str(tmp_path / "run")))
    job.on_event(MemberStarted(2, 2, 43))
    assert job.progress_text() == "run 2 of 2 (seed 43): preparing the data and the model"
    job.on_event(BatchEnded(1, 2, 3, 4, 0.5, 60.0))
    assert job.progress_text() == (
        "run 2 of 2 (seed 43): epoch 1/2: training, batch 3/4 · about 1 min left in this run"
    )
    assert job.epochs_done() == pytest.approx(2.75) and job.total_epochs == 4
    assert job.history_df(2).empty and job.history_df(1)["epoch"].tolist() == [1, 2]
    assert job.kept == {1: 2}


@pytest.mark.slow
def test_the_training_page_runs_an_averaging_run_to_the_end(
    small_demo, idle_jobs, tmp_path, monkeypatch
):
    from tests.conftest import fill_tiny_training_form, open_app, watch_job

    monkeypatch.setenv("BCP_BUNDLES_DIR", str(tmp_path / "bundles"))
    at = open_app(small_demo[0], "pages/training.py")
    fill_tiny_training_form(at)
    at.number_input(key="tr_epochs").set_value(1)
    at.number_input(key="tr_seed").set_value(11)
    at.number_input(key="tr_members").set_value(2)
    at.button(key="tr_start").click().run()
    assert not at.error, [e.value for e in at.error]
    job = idle_jobs.current
    assert job is not None and job.cfg.members == 2
    watch_job(job, at)
    assert job.status == "completed", job.message
    assert any("the mean of 2 runs" in s.value for s in at.success), [s.value for s in at.success]
    captions = [c.value for c in at.caption]
    assert any(c.startswith("Run 1 of 2 (seed 11): kept epoch 1") for c in captions), captions
    assert any(c.startswith("Run 2 of 2 (seed 12): kept epoch 1") for c in captions), captions
    runs = next(d.value for d in at.dataframe if "bundle" in d.value.columns)
    assert runs["bundle"].tolist() == [job.out_dir.name] and runs["runs"].tolist() == [2]
    assert [m.seed for m in read_bundle_meta(job.out_dir).members] == [11, 12]
