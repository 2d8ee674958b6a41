"""``predict --engine ray`` on a real one-node Ray cluster: the same results as local prediction,
shards that a re-run resumes from, and the summary's counts.

Ray is the optional scale extra (requirements-scale.txt, installed by ``make test``); without it
these tests skip, except the one that checks the message a user without Ray gets.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bcp_core.cli import main
from bcp_core.errors import UserError

pytestmark = pytest.mark.slow

N_IMAGES = 12


@pytest.fixture
def images(small_demo, tmp_path) -> Path:
    """A folder of a few demo images and one file that is not an image."""
    root, _ = small_demo
    folder = tmp_path / "images"
    folder.mkdir()
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".png", ".dcm"))
    for path in found[:N_IMAGES]:
        shutil.copy(path, folder / path.name)
    (folder / "broken.jpg").write_bytes(b"this is not a JPEG")
    return folder


def _json_of(capsys, argv: list[str]) -> object:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _assert_same(ray_rows: list[dict], local_rows: list[dict]) -> None:
    assert [r["file"] for r in ray_rows] == [r["file"] for r in local_rows]
    for mine, theirs in zip(ray_rows, local_rows, strict=True):
        assert mine.keys() == theirs.keys(), mine["file"]
        if "error" in theirs:
            assert mine["error"] == theirs["error"]
            continue
        scores = ("probability", "probability_low", "probability_high")
        for key in scores:
            if key in theirs:
                assert mine[key] == pytest.approx(theirs[key], abs=1e-6)
        assert {k: v for k, v in mine.items() if k not in scores} == {
            k: v for k, v in theirs.items() if k not in scores
        }


def test_ray_engine_gives_the_local_results(ray_cluster, images, demo_bundle, capsys):
    base = ["predict", "--bundle", str(demo_bundle), str(images), "--json"]
    local = _json_of(capsys, base)
    on_ray = _json_of(capsys, [*base, "--engine", "ray", "--workers", "2", "--batch-size", "5"])
    assert len(local) == N_IMAGES + 1
    assert sum("error" in r for r in local) == 1
    _assert_same(on_ray, local)


def test_ray_engine_with_test_time_passes_gives_the_local_results(
    ray_cluster, images, demo_bundle, capsys
):
    base = ["predict", "--bundle", str(demo_bundle), str(images), "--json", "--tta", "4"]
    local = _json_of(capsys, base)
    on_ray = _json_of(capsys, [*base, "--engine", "ray", "--workers", "2", "--batch-size", "5"])
    scored = [r for r in local if "error" not in r]
    assert scored and all(r["passes"] == 4 for r in scored)
    assert all(r["probability_low"] <= r["probability"] <= r["probability_high"] for r in scored)
    _assert_same(on_ray, local)


def test_out_folder_holds_shards_a_rerun_resumes_from(
    ray_cluster, images, demo_bundle, tmp_path, capsys
):
    from bcp_core.inference.ray_predict import SUMMARY_FILE, read_results

    out = tmp_path / "results"
    base = ["predict", "--bundle", str(demo_bundle), str(images), "--json", "--engine", "ray"]
    argv = [*base, "--out", str(out), "--workers", "1"]
    first = _json_of(capsys, argv)
    assert first["files"] == N_IMAGES + 1
    assert (first["skipped"], first["predicted"]) == (0, N_IMAGES + 1)
    assert (first["ok"], first["errors"]) == (N_IMAGES, 1)
    assert first["rows_in_out"] == N_IMAGES + 1 and first["shards"] >= 1
    assert json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8")) == first

    # The shards hold the local results, row for row.
    local = _json_of(capsys, ["predict", "--bundle", str(demo_bundle), str(images), "--json"])
    table = read_results(out)
    from bcp_core.inference.ray_predict import predictions_of

    rows = {p.file: p.to_json() for p in predictions_of(table)}
    _assert_same([rows[r["file"]] for r in local], local)

    # A new image and a re-run: only the new one is predicted.
    extra = next(p for p in sorted(images.iterdir()) if p.suffix == ".jpg" and p.stem != "broken")
    shutil.copy(extra, images / f"new_{extra.name}")
    second = _json_of(capsys, argv)
    assert (second["files"], second["skipped"]) == (N_IMAGES + 2, N_IMAGES + 1)
    assert (second["predicted"], second["ok"], second["errors"]) == (1, 1, 0)
    assert second["rows_in_out"] == N_IMAGES + 2
    assert len(read_results(out)) == N_IMAGES + 2

    # Nothing left: no cluster work at all, and the folder is unchanged.
    third = _json_of(capsys, argv)
    assert (third["predicted"], third["shards"], third["rows_in_out"]) == (0, 0, N_IMAGES + 2)


def test_csv_shards_and_a_file_list(ray_cluster, images, demo_bundle, tmp_path, capsys):
    from bcp_core.inference.ray_predict import predictions_of, read_results

    listing = tmp_path / "files.txt"
    paths = [str(p) for p in sorted(images.iterdir()) if p.name != "broken.jpg"][:3]
    paths.append(str(images / "broken.jpg"))
    paths.sort()
    listing.write_text("# four files\n" + "\n".join(paths) + "\n\n", encoding="utf-8")
    out = tmp_path / "csv-results"
    argv = ["predict", "--bundle", str(demo_bundle), "--file-list", str(listing), "--json"]
    summary = _json_of(capsys, [*argv, "--engine", "ray", "--out", str(out), "--format", "csv"])
    assert summary["files"] == 4 and summary["predicted"] == 4
    assert sorted(read_results(out)["file"]) == paths
    local = _json_of(capsys, argv)
    rows = {p.file: p.to_json() for p in predictions_of(read_results(out))}
    _assert_same([rows[r["file"]] for r in local], local)
    # Another bundle or format in the same folder is refused in one sentence.
    assert main([*argv, "--engine", "ray", "--out", str(out)]) == 2
    assert "give a new --out folder" in capsys.readouterr().err


def test_local_engine_refuses_ray_options(demo_bundle, images, tmp_path, capsys):
    argv = ["predict", "--bundle", str(demo_bundle), str(images), "--workers", "3"]
    assert main(argv) == 2
    assert "--workers works with --engine ray only." in capsys.readouterr().err
    # --out is a results folder for Ray, and a CSV file here
    assert main([*argv[:-2], "--out", str(tmp_path / "o")]) == 2
    assert "--out names the CSV file of the results here" in capsys.readouterr().err


def test_without_ray_the_user_is_told_what_to_install(monkeypatch):
    from bcp_core.inference.ray_predict import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(UserError, match="pip install -r requirements-scale.txt"):
        import_ray()


def test_the_base_install_never_imports_ray():
    code = (
        "import sys, bcp_core.cli, bcp_core.inference.predict, bcp_core.inference.ray_predict;"
        "assert 'ray' not in sys.modules, 'ray was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


@pytest.fixture(scope="module")
def mean_of_runs(small_demo, demo_bundle, tmp_path_factory) -> Path:
    """The tiny demo bundle averaged with a second start of its recipe on its split."""
    from bcp_core.config import TrainConfig
    from bcp_core.data.datasource import read_data_root
    from bcp_core.model.ensemble import combine_bundles
    from bcp_core.model.training import train_model

    folder = tmp_path_factory.mktemp("mean")
    cfg = TrainConfig(
        model="seed_cnn", image_size=(64, 48), epochs=2, batch_size=16, seed=4, split_seed=3
    )
    train_model(read_data_root(small_demo[0]).manifest, cfg, folder / "second")
    return combine_bundles([demo_bundle, folder / "second"], folder / "mean").bundle


def test_ray_engine_predicts_a_mean_of_runs_as_locally(ray_cluster, images, mean_of_runs, capsys):
    base = ["predict", "--bundle", str(mean_of_runs), str(images), "--json", "--tta", "2"]
    local = _json_of(capsys, base)
    on_ray = _json_of(capsys, [*base, "--engine", "ray", "--workers", "2", "--batch-size", "5"])
    assert sum("error" not in r for r in local) == N_IMAGES
    _assert_same(on_ray, local)
