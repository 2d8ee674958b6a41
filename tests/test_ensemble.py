"""Averaging runs of one model on one split (bcp_core.model.ensemble): real runs of a tiny
CNN, the combined bundle read back, predicted, explained and exported as any other."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from bcp_core.config import TrainConfig
from bcp_core.errors import UserError
from bcp_core.evaluation.thresholds import choose_threshold
from bcp_core.imaging.preparation import preprocess_image
from bcp_core.inference.explain import gradcam_heatmap
from bcp_core.inference.predict import predict_files, predict_one
from bcp_core.model.bundle import load_bundle, read_bundle_meta
from bcp_core.model.ensemble import combine_bundles
from bcp_core.model.files import HISTORY_FILE, META_FILE
from bcp_core.model.layers import member_models
from bcp_core.model.meta import BundleMeta, MemberInfo
from bcp_core.model.provenance import SPLIT_FILES
from bcp_core.model.training import train_model
from tests.conftest import cli_command

TINY = dict(model="default_cnn", image_size=(64, 48), batch_size=8, val_fraction=0.3, epochs=2)


@pytest.fixture(scope="module")
def runs(tiny_manifest, tmp_path_factory):
    """Two starts of one recipe on one split (seeds 1 and 2, split seed 1) and one on
    another split."""
    root = tmp_path_factory.mktemp("runs")
    for name, seed, split_seed in (("a", 1, 1), ("b", 2, 1), ("other", 2, 2)):
        cfg = TrainConfig(**TINY, seed=seed, split_seed=split_seed)
        train_model(tiny_manifest, cfg, root / name)
    return root


@pytest.fixture(scope="module")
def mean_bundle(runs):
    result = combine_bundles([runs / "a", runs / "b"], runs / "mean")
    return result, load_bundle(runs / "mean")


def val_inputs(bundle) -> np.ndarray:
    return np.stack([preprocess_image(p, bundle.spec) for p in bundle.val_predictions["file"]])


def test_the_combined_model_predicts_the_mean_of_the_runs(runs, mean_bundle, tiny_manifest):
    _, mean = mean_bundle
    a, b = load_bundle(runs / "a"), load_bundle(runs / "b")
    paths = tiny_manifest["path"].tolist()
    batch = np.stack([preprocess_image(p, mean.spec) for p in paths]).astype(np.float32)
    got = np.asarray(mean.model(batch, training=False))[:, 0]
    own = [np.asarray(x.model(batch, training=False))[:, 0] for x in (a, b)]
    assert not np.allclose(own[0], own[1], atol=1e-3), "two seeds gave one model"
    np.testing.assert_allclose(got, np.mean(own, axis=0), atol=1e-6)
    assert [m.name for m in member_models(mean.model)] == ["member_1", "member_2"]
    # the product's prediction path reads the mean as well
    scored = predict_files(mean, paths[:5], passes=1)
    np.testing.assert_allclose([p.probability for p in scored], got[:5], atol=1e-5)


def test_its_validation_scores_and_threshold_are_the_means(runs, mean_bundle):
    result, mean = mean_bundle
    a, b = (load_bundle(runs / n, with_model=False) for n in ("a", "b"))
    v = mean.val_predictions
    assert len(v) == len(a.val_predictions) == a.meta.split.val_images
    by_file = {
        name: x.val_predictions.set_index("file")["probability"] for name, x in (("a", a), ("b", b))
    }
    expected = (by_file["a"][v["file"]].to_numpy() + by_file["b"][v["file"]].to_numpy()) / 2
    np.testing.assert_allclose(v["probability"], expected, atol=1e-9)
    assert mean.threshold == pytest.approx(choose_threshold(v["label"], v["probability"], "youden"))
    assert result.threshold == mean.threshold and mean.meta.threshold.method == "youden"
    # the combined model scores its validation images as recorded
    got = np.asarray(mean.model(val_inputs(mean), training=False))[:, 0]
    np.testing.assert_allclose(got, v["probability"], atol=1e-5)
    assert mean.meta.metrics.best_epoch is None and mean.meta.status == "completed"
    assert mean.meta.split == a.meta.split


def test_the_bundle_names_its_runs_and_keeps_their_epochs(runs, mean_bundle):
    _, mean = mean_bundle
    a, b = (read_bundle_meta(runs / n) for n in ("a", "b"))
    members = mean.meta.members
    assert [(m.bundle, m.seed, m.best_epoch) for m in members] == [
        ("a", 1, a.metrics.best_epoch),
        ("b", 2, b.metrics.best_epoch),
    ]
    assert members[1].val_roc_auc == pytest.approx(b.metrics.roc_auc)
    assert mean.meta.label.name == "Mean of 2 runs" and "a, b" in mean.meta.label.note
    history = pd.read_csv(runs / "mean" / HISTORY_FILE)
    assert history.columns[0] == "member"
    assert history.groupby("member")["epoch"].apply(list).to_dict() == {1: [1, 2], 2: [1, 2]}
    assert (runs / "mean" / SPLIT_FILES).read_bytes() == (runs / "a" / SPLIT_FILES).read_bytes()
    card = (runs / "mean" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Averages 2 runs" in card and "- a: seed 1, epoch" in card and "- b: seed 2" in card


def test_members_round_trip_and_a_damaged_list_is_kept_as_it_was(mean_bundle):
    _, mean = mean_bundle
    data = json.loads((mean.path / META_FILE).read_text(encoding="utf-8"))
    assert BundleMeta.from_json(data).members == mean.meta.members
    data["members"] = [{"bundle": 3}]
    damaged = BundleMeta.from_json(data)
    assert damaged.members == () and damaged.to_json()["members"] == [{"bundle": 3}]
    read = MemberInfo.from_json({"bundle": "x", "seed": None, "best_epoch": 2, "val_roc_auc": None})
    assert read is not None and (read.bundle, read.seed, read.best_epoch) == ("x", None, 2)
    assert np.isnan(read.val_roc_auc)


def test_the_heatmap_is_the_mean_of_the_runs_maps(mean_bundle):
    _, mean = mean_bundle
    image = val_inputs(mean)[0]
    maps = [gradcam_heatmap(m, image) for m in member_models(mean.model)]
    heat = gradcam_heatmap(mean.model, image)
    mixed = np.mean(maps, axis=0)
    assert heat.shape == image.shape[:2] and heat.max() == pytest.approx(1.0)
    np.testing.assert_allclose(heat, mixed / mixed.max(), atol=1e-5)
    explained = predict_one(mean, mean.val_predictions["file"][0], passes=1)
    assert explained.heatmap is not None and np.isfinite(explained.heatmap).all()


def test_test_time_passes_work_on_the_mean(mean_bundle):
    _, mean = mean_bundle
    files = mean.val_predictions["file"][:3].tolist()
    four = predict_files(mean, files, passes=4)
    assert all(p.passes == 4 and p.probability_low <= p.probability <= p.probability_high
               for p in four)  # fmt: skip


def test_the_combined_bundle_exports_as_any_other(mean_bundle, tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    pytest.importorskip("tf2onnx", reason="the export extra is not installed")
    from bcp_core.model.export import TOLERANCE, export_bundle, run_litert

    _, mean = mean_bundle
    result = export_bundle(mean.path, "onnx", tmp_path / "onnx")
    assert result.checked_max_abs_difference is not None
    assert result.checked_max_abs_difference <= TOLERANCE
    litert = export_bundle(mean.path, "litert", tmp_path / "litert")
    batch = val_inputs(mean)[:4].astype(np.float32)
    expected = np.asarray(mean.model(batch, training=False))
    np.testing.assert_allclose(run_litert(litert.model_file, batch), expected, atol=1e-4)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["a"], "Choose 2 to 5 runs"),
        (["a", "a"], "chosen twice"),
        (["a", "other"], "differ in validation patients"),
        (["a", "mean"], "already averages"),
    ],
)
def test_runs_that_cannot_be_averaged_are_refused_and_nothing_is_written(
    runs, mean_bundle, names, message, tmp_path
):
    with pytest.raises(UserError, match=message):
        combine_bundles([runs / n for n in names], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_other_preprocessing_or_data_is_refused(runs, tmp_path):
    for field, value, message in (
        ("data_fingerprint", "0000", "training data"),
        ("model_name", "seed_cnn", "differ in model"),
    ):
        copy = tmp_path / field
        shutil.copytree(runs / "b", copy)
        data = json.loads((copy / META_FILE).read_text(encoding="utf-8"))
        data[field] = value
        (copy / META_FILE).write_text(json.dumps(data), encoding="utf-8")
        with pytest.raises(UserError, match=message):
            combine_bundles([runs / "a", copy], tmp_path / "out")
    equalised = tmp_path / "equalised"  # the same run, read with the contrast step
    shutil.copytree(runs / "b", equalised)
    data = json.loads((equalised / META_FILE).read_text(encoding="utf-8"))
    data["preprocessing"]["contrast"] = "clahe"
    (equalised / META_FILE).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(UserError, match=r"differ in preprocessing \(.*contrast step\)"):
        combine_bundles([runs / "a", equalised], tmp_path / "out")
    running = tmp_path / "running"
    shutil.copytree(runs / "b", running)
    data = json.loads((running / META_FILE).read_text(encoding="utf-8"))
    (running / META_FILE).write_text(json.dumps({**data, "status": "running"}), encoding="utf-8")
    with pytest.raises(UserError, match="has not finished"):
        combine_bundles([runs / "a", running], tmp_path / "out")
    copy = tmp_path / "no-model"
    shutil.copytree(runs / "b", copy)
    (copy / "model.keras").unlink()
    with pytest.raises(UserError, match="is not a model bundle"):
        combine_bundles([runs / "a", copy], tmp_path / "out")
    with pytest.raises(UserError, match="one of the runs"):
        combine_bundles([runs / "a", runs / "b"], runs / "a")
    assert not (tmp_path / "out").exists()


def test_cli_ensemble(runs, tmp_path):
    import subprocess

    out = tmp_path / "cli-mean"
    done = subprocess.run(
        cli_command("ensemble", str(runs / "a"), str(runs / "b"), "--out", str(out), "--json"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert [m["bundle"] for m in printed["members"]] == ["a", "b"]
    assert printed["threshold"] == read_bundle_meta(out).threshold.value
    refused = subprocess.run(
        cli_command("ensemble", str(runs / "a"), str(runs / "other"), "--out", str(tmp_path / "x")),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode == 2 and "validation patients" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_compare_shows_each_runs_curves_of_the_mean(runs, mean_bundle):
    from bcp_core.inference.bundles_compared import training_curves

    curves = training_curves([runs / "a", runs / "mean"])
    assert [c.name for c in curves] == ["a", "Mean of 2 runs: a", "Mean of 2 runs: b"]
    own = pd.read_csv(runs / "b" / HISTORY_FILE)
    pd.testing.assert_frame_equal(curves[2].history.reset_index(drop=True), own)
    assert curves[2].best_epoch == read_bundle_meta(runs / "b").metrics.best_epoch


def test_a_full_bundles_folder_is_refused_before_anything_is_written(runs, tmp_path):
    from bcp_core.model.resources import TrainingLimits

    folder = tmp_path / "bundles"
    for name in ("a", "b"):
        shutil.copytree(runs / name, folder / name)
    model_bytes = sum((folder / n / "model.keras").stat().st_size for n in ("a", "b"))
    held = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    tight = TrainingLimits(max_bundles=10, max_bundles_bytes=held + model_bytes // 2)
    with pytest.raises(UserError, match="would take about"):
        combine_bundles([folder / "a", folder / "b"], folder / "mean", limits=tight)
    with pytest.raises(UserError, match="already holds 2 bundles"):
        combine_bundles([folder / "a", folder / "b"], folder / "mean",
                        limits=TrainingLimits(max_bundles=2))  # fmt: skip
    assert sorted(p.name for p in folder.iterdir()) == ["a", "b"]
    roomy = TrainingLimits(max_bundles=3, max_bundles_bytes=held + 2 * model_bytes)
    combine_bundles([folder / "a", folder / "b"], folder / "mean", limits=roomy)
    assert (folder / "mean" / META_FILE).is_file()


def test_the_training_page_averages_runs(small_demo, runs, tmp_path, monkeypatch):
    from tests.conftest import open_app

    folder = tmp_path / "bundles"
    for name in ("a", "b"):
        shutil.copytree(runs / name, folder / name)
    monkeypatch.setenv("BCP_BUNDLES_DIR", str(folder))
    at = open_app(small_demo[0], "pages/training.py")
    assert at.button(key="avg_go").disabled, "one run or none cannot be averaged"
    at.multiselect(key="avg_pick").set_value(["a", "b"]).run()
    at.button(key="avg_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (written,) = [p for p in folder.iterdir() if p.name.endswith("-mean-of-2-runs")]
    assert [m.bundle for m in read_bundle_meta(written).members] == ["a", "b"]
    assert any("validation ROC-AUC" in s.value for s in at.success), [s.value for s in at.success]


def test_the_training_page_passes_the_split_seed(small_demo, idle_jobs, tmp_path, monkeypatch):
    from tests.conftest import fill_tiny_training_form, open_app

    monkeypatch.setenv("BCP_BUNDLES_DIR", str(tmp_path / "bundles"))
    at = open_app(small_demo[0], "pages/training.py")
    fill_tiny_training_form(at)
    at.number_input(key="tr_seed").set_value(43)
    at.number_input(key="tr_split_seed").set_value(42)
    at.button(key="tr_start").click().run()
    assert not at.error, [e.value for e in at.error]
    job = idle_jobs.current
    assert job is not None and (job.cfg.seed, job.cfg.split_seed) == (43, 42)
