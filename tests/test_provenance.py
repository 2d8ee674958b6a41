"""Which films a bundle learned from: the hashes it keeps, and prediction saying so."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
from PIL import Image

from bcp_core.data.attributes import known_views
from bcp_core.data.datasource import read_data_root
from bcp_core.inference.predict import predict_files
from bcp_core.inference.results import results_df
from bcp_core.model.bundle import VAL_FILE, load_bundle
from bcp_core.model.provenance import SPLIT_FILES, file_sha256, split_of
from tests.conftest import blob_image


def expected_splits(root, bundle_dir) -> dict[str, str]:
    """Each manifest file's hash -> the split the model saw it in, from the bundle's own
    validation predictions (every other manifest file was trained on); a film present in both
    splits under two names counts as trained on."""
    val = set(pd.read_csv(bundle_dir / VAL_FILE)["file"].astype(str))
    out: dict[str, str] = {}
    for path in read_data_root(root).manifest["path"].astype(str):
        split = "val" if path in val else "train"
        digest = file_sha256(path)
        out[digest] = "train" if "train" in (split, out.get(digest)) else "val"
    return out


def test_the_bundle_keeps_the_hash_of_every_file_it_trained_and_validated_on(
    small_demo, demo_bundle
):
    expected = expected_splits(small_demo[0], demo_bundle)
    table = pd.read_csv(demo_bundle / SPLIT_FILES)
    assert dict(zip(table["sha256"], table["split"], strict=True)) == expected
    assert set(table["split"]) == {"train", "val"}
    assert not {"file", "path", "patient_id"} & set(table.columns)  # hashes only


def test_a_bundle_without_the_table_or_with_a_broken_one_knows_nothing(demo_bundle, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(demo_bundle, copy)
    some = pd.read_csv(copy / SPLIT_FILES)["sha256"].iat[0]
    assert split_of(copy, some) in ("train", "val")
    (copy / SPLIT_FILES).write_text("not,a\ntable")
    assert split_of(copy, some) == ""
    (copy / SPLIT_FILES).unlink()
    assert split_of(copy, some) == ""


def test_prediction_says_which_split_a_file_was_in_whatever_its_name(
    small_demo, demo_bundle, tmp_path
):
    root = small_demo[0]
    expected = expected_splits(root, demo_bundle)
    paths = read_data_root(root).manifest["path"].astype(str)
    trained = next(p for p in paths if expected[file_sha256(p)] == "train")
    validated = next(p for p in paths if expected[file_sha256(p)] == "val")
    new = tmp_path / "new.png"
    Image.fromarray(blob_image(True, np.random.default_rng(9), (96, 72))).save(new)
    with open(validated, "rb") as fh:
        renamed = ("renamed.jpg", fh.read())  # an upload: only its bytes say which film it is
    results = predict_files(load_bundle(demo_bundle), [trained, renamed, new])
    assert [r.seen_in for r in results] == ["train", "val", ""]
    assert results[0].to_json()["seen_in"] == "train" and "seen_in" not in results[2].to_json()
    assert list(results_df(results)["seen_in"]) == ["train", "val", ""]


def test_the_workbook_names_the_view_only_of_the_very_same_file(small_demo, tmp_path):
    manifest = read_data_root(small_demo[0]).manifest
    names = manifest["path"].map(lambda p: p.rsplit("/", 1)[-1])
    shared = names[names.duplicated(keep=False)].iat[0]  # one name, films of two folders
    rows = manifest[names == shared]
    assert len(rows) >= 2
    uploads = [(shared, open(path, "rb").read()) for path in rows["path"]]
    found = known_views([*uploads, (shared, b"other bytes"), ("absent.jpg", b"")], manifest)
    expected = [{"view": v, "laterality": s} for v, s in zip(rows["view"], rows["laterality"])]
    assert found == [*expected, {}, {}]
