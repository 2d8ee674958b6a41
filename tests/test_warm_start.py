"""Going on from a trained model (``train --start-from``, ``TrainConfig.start_from``, page 3's
"Start from"): real tiny runs of a CNN on real JPEGs, real bundles, the real CLI parser and the
real training page."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bcp_core.config import TrainConfig
from bcp_core.errors import UserError
from bcp_core.model.bundle import load_bundle, load_keras_model, read_bundle_meta
from bcp_core.model.files import META_FILE, MODEL_FILE
from bcp_core.model.provenance import SPLIT_FILES, file_sha256, split_of
from bcp_core.output_safety import plain_markdown
from bcp_core.runs import TrainRequest
from tests.conftest import blob_image, fill_tiny_training_form, open_app, watch_job

TINY = dict(model="default_cnn", image_size=(64, 48), batch_size=8, val_fraction=0.3, epochs=2)


@pytest.fixture(scope="module")
def other_films(tmp_path_factory) -> pd.DataFrame:
    """Films of other women than ``tiny_manifest``'s (another site's), as a manifest."""
    root = tmp_path_factory.mktemp("other_site")
    rng = np.random.default_rng(11)
    rows = []
    for p in range(16):
        label = int(p < 6)
        path = root / f"Q{p:02d}.jpg"
        Image.fromarray(blob_image(bool(label), rng)).save(path, format="JPEG", quality=90)
        rows.append({
            "path": str(path), "relpath": path.name, "label": label, "patient_id": f"Q{p:02d}",
            "view": "MLO", "laterality": "R", "key": path.stem, "sheet": "test", "row": 2 + p,
        })  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def elsewhere(other_films, tmp_path_factory):
    """A bundle trained on the other site's films: the model a hospital's run goes on from."""
    from bcp_core.model.training import train_model

    out = tmp_path_factory.mktemp("bundles") / "other-site"
    train_model(other_films, TrainConfig(**TINY, seed=5), out)
    return out


def start_cfg(source, **more) -> TrainConfig:
    return TrainConfig(**{**TINY, **more}, start_from=str(source))


def test_the_model_starts_with_every_weight_of_the_bundles_model(elsewhere):
    from bcp_core.model.training import compile_model
    from bcp_core.model.warm_start import apply_start

    theirs = [w.copy() for w in load_keras_model(elsewhere / MODEL_FILE).get_weights()]
    model = compile_model(start_cfg(elsewhere), 0.4)
    assert not all(np.array_equal(a, b) for a, b in zip(model.get_weights(), theirs, strict=True))
    source = apply_start(model, start_cfg(elsewhere))
    mine = model.get_weights()
    assert len(mine) == len(theirs) > 4
    assert all(np.array_equal(a, b) for a, b in zip(mine, theirs, strict=True))
    assert source.bundle == "other-site"
    assert source.model_sha256 == file_sha256(elsewhere / MODEL_FILE)
    assert source.data_fingerprint == read_bundle_meta(elsewhere).data_fingerprint


def test_its_bundle_names_the_start_and_counts_the_start_films_as_seen(
    elsewhere, other_films, tiny_manifest, tmp_path
):
    from bcp_core.model.training import train_model

    out = tmp_path / "hospital"
    result = train_model(tiny_manifest, start_cfg(elsewhere), out)
    assert result.status in ("completed", "early_stopped")
    bundle = load_bundle(out)
    start = bundle.meta.started_from
    assert start is not None and start.bundle == "other-site" and start.val_seen == 0
    assert bundle.meta.training["start_from"] == "other-site"  # its name, not the server's path
    # the films that shaped the start model count as seen, as it recorded them
    for path in other_films["path"]:
        digest = file_sha256(path)
        assert split_of(out, digest) == split_of(elsewhere, digest) != ""
    table = pd.read_csv(out / SPLIT_FILES)
    assert len(table) == len(tiny_manifest) + len(other_films)
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"Went on from the model of the bundle {plain_markdown('other-site')}" in card
    assert "**Warning**" not in card
    # bundle.json keeps the record through a read and a write
    again = type(bundle.meta).from_json(bundle.meta.to_json())
    assert again.started_from == start


def test_validation_films_the_start_model_saw_are_counted_and_flagged(tiny_manifest, tmp_path):
    from bcp_core.model.training import plan_split, train_model

    first = tmp_path / "first"
    train_model(tiny_manifest, TrainConfig(**TINY, seed=1), first)
    cfg = start_cfg(first, seed=2)  # another split of the same films
    train_model(tiny_manifest, cfg, tmp_path / "second")
    meta = read_bundle_meta(tmp_path / "second")
    split, _ = plan_split(tiny_manifest, cfg)
    assert meta.started_from is not None
    assert meta.started_from.val_seen == int((split == "val").sum()) > 0
    card = (tmp_path / "second" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"**Warning**: {meta.started_from.val_seen} of this run's validation images" in card


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(image_size=(96, 64)), "for the input size 64 x 48, and this run asks for 96 x 64"),
        (dict(model="seed_cnn"), "holds a default_cnn model, and this run asks for seed_cnn"),
        (dict(head="attention"), "with the pool head, and this run asks for attention"),
    ],
)
def test_a_run_that_does_not_fit_the_bundle_is_refused_before_any_data_is_read(
    elsewhere, tmp_path, settings, message
):
    cfg = start_cfg(elsewhere, **settings)
    request = TrainRequest(cfg, tmp_path / "no-data-here", tmp_path / "out")
    with pytest.raises(UserError, match=message):
        request.check()
    assert not (tmp_path / "out").exists()


def edited_copy(bundle, dest, **changes):
    shutil.copytree(bundle, dest)
    data = json.loads((dest / META_FILE).read_text())
    data.update(changes)
    (dest / META_FILE).write_text(json.dumps(data))
    return dest


def test_bundles_that_cannot_be_gone_on_from_are_refused_in_one_sentence(elsewhere, tmp_path):
    members = [
        {"bundle": f"run-{k}", "seed": k, "best_epoch": 1, "val_roc_auc": 0.5} for k in (1, 2)
    ]
    cases = {
        "averaged": (dict(members=members), "averages 2 runs, so it has no one network"),
        "running": (dict(status="running"), "is still training"),
        "columns": (dict(metadata={"columns": []}, format_version=2), "takes workbook values"),
    }
    for name, (changes, message) in cases.items():
        folder = edited_copy(elsewhere, tmp_path / name, **changes)
        with pytest.raises(UserError, match=message):
            TrainRequest(start_cfg(folder), tmp_path, tmp_path / "out").check()
    with pytest.raises(UserError, match="is not a model bundle"):
        TrainRequest(start_cfg(tmp_path), tmp_path, tmp_path / "out").check()
    with pytest.raises(UserError, match="takes images alone"):
        start_cfg(elsewhere, metadata_columns=("Age",)).validate()


def test_a_model_file_of_another_build_is_refused_not_half_loaded(elsewhere, tmp_path):
    from bcp_core.model.training import compile_model
    from bcp_core.model.warm_start import apply_start

    # bundle.json says seed_cnn, the file holds the compact CNN: the weights cannot fit
    folder = edited_copy(elsewhere, tmp_path / "relabelled", model_name="seed_cnn")
    cfg = start_cfg(folder, model="seed_cnn")
    model = compile_model(cfg, 0.4)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(UserError, match="does not fit a seed_cnn built for this run"):
        apply_start(model, cfg)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before, strict=True))


def test_train_takes_the_model_size_and_head_from_the_bundle_unless_given(elsewhere):
    from bcp_core.cli import _train_config, build_parser

    def cfg(*extra: str) -> TrainConfig:
        argv = ["train", "--data-root", ".", "--out", "b", *extra]
        return _train_config(build_parser().parse_args(argv))

    started = cfg("--start-from", str(elsewhere))
    assert (started.model, tuple(started.image_size), started.head) == (
        "default_cnn", (64, 48), "pool"
    )  # fmt: skip
    assert started.start_from == str(elsewhere)
    assert started.to_dict()["start_from"] == elsewhere.name
    plain = cfg()
    assert plain.model == "efficientnet_lite0" and "start_from" not in plain.to_dict()
    # given and different: the runner's check refuses it, naming the bundle's value
    given = cfg("--start-from", str(elsewhere), "--image-size", "96", "64")
    with pytest.raises(UserError, match="choose 64 x 48"):
        TrainRequest(given, elsewhere, elsewhere / "x").check()


@pytest.mark.slow
def test_page_3_goes_on_from_a_bundle_of_its_folder(small_demo, bundles_dir, idle_jobs):
    root, _ = small_demo
    at = open_app(root, "pages/training.py")
    fill_tiny_training_form(at)
    offered = at.selectbox(key="tr_start_from").options
    assert len(offered) == 2 and offered[1].startswith("demo")
    at.selectbox(key="tr_start_from").set_value("demo")
    at.number_input(key="tr_h").set_value(96)  # the bundle's size wins: it was built at 64 x 48
    at.button(key="tr_start").click().run()
    assert not at.error, [e.value for e in at.error]
    job = idle_jobs.current
    assert job is not None and job.cfg.start_from == str(bundles_dir / "demo")
    assert tuple(job.cfg.image_size) == (64, 48)
    watch_job(job, at)
    assert job.status == "completed", job.message
    start = read_bundle_meta(job.out_dir).started_from
    assert start is not None and start.bundle == "demo"
    assert start.model_sha256 == file_sha256(bundles_dir / "demo" / MODEL_FILE)


def test_an_averaging_run_gone_on_from_a_bundle_keeps_the_start_and_its_films(
    elsewhere, other_films, tiny_manifest, tmp_path
):
    from bcp_core.runs import run_training

    request = TrainRequest(start_cfg(elsewhere, members=2, seed=3), tmp_path, tmp_path / "mean")
    result = run_training(request.check(), tiny_manifest)
    meta = read_bundle_meta(tmp_path / "mean")
    assert len(meta.members) == 2
    assert meta.started_from is not None and meta.started_from.bundle == "other-site"
    assert result.started_from == meta.started_from
    digest = file_sha256(other_films["path"][0])
    assert split_of(tmp_path / "mean", digest) == split_of(elsewhere, digest) != ""


def test_averaging_runs_from_other_starts_names_none_and_keeps_every_runs_films(
    elsewhere, other_films, tiny_manifest, tmp_path
):
    from bcp_core.model.ensemble import combine_bundles
    from bcp_core.model.training import train_model

    train_model(tiny_manifest, TrainConfig(**TINY, seed=1, split_seed=9), tmp_path / "a")
    train_model(tiny_manifest, start_cfg(elsewhere, seed=2, split_seed=9), tmp_path / "b")
    combine_bundles([tmp_path / "a", tmp_path / "b"], tmp_path / "mean")
    assert read_bundle_meta(tmp_path / "mean").started_from is None  # each run's bundle says
    digest = file_sha256(other_films["path"][0])
    assert split_of(tmp_path / "mean", digest) == split_of(elsewhere, digest) != ""


def test_the_cli_names_the_start_and_warns_when_validation_films_were_seen(
    small_demo, tmp_path, capsys
):
    from bcp_core.cli import main

    root, _ = small_demo
    first, second = tmp_path / "first", tmp_path / "second"
    base = ["train", "--data-root", str(root), "--model", "seed_cnn", "--image-size", "64", "48"]
    assert main([*base, "--out", str(first), "--epochs", "1", "--seed", "4"]) == 0
    capsys.readouterr()
    argv = ["train", "--data-root", str(root), "--out", str(second), "--start-from", str(first)]
    assert main([*argv, "--epochs", "1", "--seed", "5"]) == 0
    err = capsys.readouterr().err
    assert "Going on from the model of first." in err
    seen = read_bundle_meta(second).started_from.val_seen
    assert seen > 0 and f"Warning: {seen} validation images were among those" in err
    argv[argv.index(str(second))] = str(tmp_path / "third")
    assert main([*argv, "--epochs", "1", "--seed", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["started_from"]["bundle"] == "first" and out["started_from"]["val_seen"] == seen


def test_a_run_takes_the_bundles_contrast_step_and_refuses_another(elsewhere, tmp_path):
    from bcp_core.cli import _train_config, build_parser

    folder = tmp_path / "equalised"
    shutil.copytree(elsewhere, folder)
    data = json.loads((folder / META_FILE).read_text())
    data["preprocessing"]["contrast"] = "clahe"
    (folder / META_FILE).write_text(json.dumps(data))

    def cfg(*extra: str) -> TrainConfig:
        argv = ["train", "--data-root", ".", "--out", "b", *extra]
        return _train_config(build_parser().parse_args(argv))

    assert cfg("--start-from", str(folder)).contrast == "clahe"
    assert cfg().contrast == "none" and cfg("--contrast", "clahe").contrast == "clahe"
    assert cfg("--start-from", str(elsewhere)).contrast == "none"
    given = cfg("--start-from", str(folder), "--contrast", "none")
    with pytest.raises(UserError, match="prepared with the contrast step clahe, and this run"):
        TrainRequest(given, folder, folder / "x").check()
